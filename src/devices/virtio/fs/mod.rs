//! virtio-fs (virtio v1.2 §5.11): a host directory shared with the guest over FUSE.
//!
//! The guest's FUSE requests arrive as descriptor chains and are answered by fuse-backend-rs:
//! its [`Server`](fuse_backend_rs::api::server::Server) decodes each request and calls a
//! [`PassthroughFs`] rooted at the shared directory, which does the host I/O.
//!
//! The device is shaped like the other virtio devices:
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice) impl and the queue processing;
//! - `event_handler.rs`: the event-loop side (the two queue events);
//! - `request.rs`: one descriptor chain through the FUSE server, with a screen in front of it
//!   for the names a request carries, and an error reply for requests the server rejects.
//!
//! **Security.** The guest is hostile and must reach nothing outside the shared directory.
//! [`passthrough_config`] documents each option that matters for that; on top of it the device
//! refuses names that are empty, contain `/` or NUL, or are `.` or `..`, and device nodes
//! (request.rs).
//! PassthroughFs keeps an `O_PATH`, `O_NOFOLLOW` descriptor per inode and resolves every name
//! one component at a time relative to a parent inode, so a symlink in the share is an inode
//! like any other: it is never followed on the host, its target is only ever returned by
//! READLINK, and it cannot be opened (only regular files and directories can).
//!
//! **Blocking.** Requests are served on the event-loop thread, and their host I/O blocks it
//! for as long as the host file system takes. Acceptable for now: a slow share slows the
//! other devices of the same VM, nothing more. A worker thread per queue would remove that.
//!
//! **Process-wide effects.** PassthroughFs sets the process umask to 0 when it is created (the
//! guest's modes must reach the host unchanged), and it switches the calling thread's effective
//! uid/gid to the request's for the duration of each create (setresuid on the thread only). It
//! needs `/proc/self/fd` to reopen inodes. The device lifts the soft limit on open files to
//! the hard one, as PassthroughFs holds a descriptor per inode the guest knows.

mod device;
mod event_handler;
mod request;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

use fuse_backend_rs::passthrough::{CachePolicy, Config};

pub use device::VirtioFs;

/// Number of queues: hiprio and one request queue.
pub const NUM_QUEUES: usize = 2;
/// Index of the high-priority queue (FORGET, INTERRUPT).
pub const HIPRIO_QUEUE: usize = 0;
/// Index of the (only) request queue.
pub const REQUEST_QUEUE: usize = 1;
/// The largest size of each queue.
pub const QUEUE_SIZE: u16 = 1024;
/// The longest mount tag, in bytes (`virtio_fs_config.tag`).
pub const TAG_MAX_LEN: usize = 36;
/// Size of the configuration space: the tag, then `num_request_queues` (u32 LE).
pub const CONFIG_SIZE: usize = TAG_MAX_LEN + 4;

/// Why a virtio-fs device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The mount tag is empty, too long, or holds a NUL byte.
    #[error("invalid virtio-fs tag {tag:?}: it must be 1 to {TAG_MAX_LEN} bytes without NUL")]
    InvalidTag {
        /// The rejected tag.
        tag: String,
    },
    /// The shared directory cannot be resolved.
    #[error("cannot resolve the shared directory {path}: {source}")]
    SharedDir {
        /// The directory as given.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The shared directory is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The shared directory's path is not valid UTF-8 (fuse-backend-rs takes a `String`).
    #[error("the shared directory {0} is not a UTF-8 path")]
    NonUtf8Path(PathBuf),
    /// fuse-backend-rs could not open the shared directory or its own resources.
    #[error("cannot set up the passthrough file system: {0}")]
    Backend(#[source] io::Error),
    /// A queue event could not be created.
    #[error("cannot create a queue event: {0}")]
    QueueEvent(#[source] io::Error),
}

/// The PassthroughFs options for a share rooted at `root_dir` (an absolute, resolved path).
///
/// Each option that bears on what the guest can reach:
/// - `root_dir`: the share; inode 1 is an `O_PATH` descriptor of it, and PassthroughFs answers
///   a LOOKUP of `..` in it with itself (the device refuses `..` before that anyway).
/// - `do_import: true`: opens the root now, and is also what makes PassthroughFs check the name
///   of every creating/renaming/linking/removing request (`/`, `.` and `..` are refused).
/// - `inode_file_handles: false`: inodes are held as `O_PATH` descriptors, never as file
///   handles, so nothing is ever opened with `open_by_handle_at` (which resolves a handle on
///   the whole file system, ignoring the share's boundary, and needs CAP_DAC_READ_SEARCH).
/// - `dax_file_size: None`: no DAX; the device has no shared memory window anyway.
/// - `writeback: false`: the guest does not cache writes. Writeback would make the server read
///   files opened write-only, and lets the guest's view of sizes diverge from the host's.
/// - `xattr: false`: no extended attributes; no security labels or ACLs set by the guest on
///   host files, and `security.capability` cannot be planted on a host binary.
/// - `cache_policy: Auto`, 1 s timeouts: close-to-open consistency. The share is mostly the
///   guest's alone (the container rootfs), but bind-mount sources may change on the host.
/// - `no_open`/`no_opendir: false`, `killpriv_v2: false`, `seal_size: false`, `use_host_ino:
///   false` (the guest sees inode numbers allocated by the server), `enable_mntid: false`.
pub fn passthrough_config(root_dir: String) -> Config {
    let timeout = std::time::Duration::from_secs(1);
    Config {
        root_dir,
        do_import: true,
        inode_file_handles: false,
        dax_file_size: None,
        writeback: false,
        xattr: false,
        cache_policy: CachePolicy::Auto,
        entry_timeout: timeout,
        attr_timeout: timeout,
        dir_entry_timeout: None,
        dir_attr_timeout: None,
        no_open: false,
        no_opendir: false,
        killpriv_v2: false,
        no_readdir: false,
        seal_size: false,
        enable_mntid: false,
        use_host_ino: false,
        allow_direct_io: true,
    }
}
