//! virtio-fs (virtio v1.2 §5.11): a host directory shared with the guest over FUSE.
//!
//! The guest's FUSE requests arrive as descriptor chains and are answered by fuse-backend-rs:
//! its [`Server`](fuse_backend_rs::api::server::Server) decodes each request and calls our
//! [`ShareFs`] (`server/`), rooted at the shared directory, which does the host I/O.
//!
//! The device is shaped like the other virtio devices:
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice) impl and the queue processing;
//! - `event_handler.rs`: the event-loop side (the hiprio queue's event, the lock waits' event);
//! - `lanes.rs`: one queue, and the serving of its chains by whichever thread serves it;
//! - `workers.rs`: the request queues' worker threads;
//! - `lock_wait.rs`: SETLKW, a lock the guest waits for, waited for on a thread of its own
//!   while its chain stays unanswered;
//! - `request.rs`: one descriptor chain through the FUSE server, with a screen in front of it
//!   for the names a request carries, and an error reply for requests the server rejects;
//! - `server/`: the file system: inode table, descriptor cache, open handles (see its docs);
//! - `stats.rs`: requests, bytes and time by opcode (`runvm --debug` logs them).
//!
//! **Security.** The guest is hostile and must reach nothing outside the shared directory.
//! [`ShareConfig`] documents what the guest is offered; on top of it the device refuses names
//! that are empty, contain `/` or NUL, or are `.` or `..`, and device nodes (request.rs), and
//! the server checks names again. Every name is resolved one component at a time relative to
//! its parent's descriptor with `O_NOFOLLOW`, never as a path string from the guest. The
//! server keeps no descriptor per inode: it records each inode's identity (device, inode
//! number, type) and its names (parent + name), caches a bounded number of `O_PATH`
//! descriptors, and reopens an evicted inode by walking down from the nearest ancestor it holds
//! (the root always), checking every step against the recorded identity: a name that no
//! longer leads to that inode gives `ESTALE`, never another file, and the walk only ever goes
//! down from the root through verified directories. A symlink in the share is an inode like
//! any other: it is never followed on the host, its target is only ever returned by READLINK,
//! and it cannot be opened (only regular files and directories can). File handles
//! (`open_by_handle_at`) are never used: they resolve on the whole file system, ignoring the
//! share's boundary, and overlayfs cannot decode them.
//!
//! **Threads.** The device offers several request queues (the guest kernel uses one per vCPU
//! at most) and serves each on worker threads of its own (`workers.rs`), several requests of
//! a queue at once, answered out of order; a request's host I/O blocks only its worker. The
//! hiprio queue (FORGET) and the lock waits' ends are served on the event loop the device is
//! on (the VM gives the shared directory a loop of its own, `vmm-files`, apart from the
//! network's and the agent's); a device configured without workers serves its request
//! queues there too, one request at a time. A lock the guest waits for is waited for on a
//! thread of its own (`lock_wait.rs`). The server is shared by all of them: its state is
//! behind mutexes (`server/`).
//!
//! **Process-wide effects.** The server sets the process umask to 0 when it is created (the
//! guest's modes must reach the host unchanged), and it switches the calling thread's effective
//! uid/gid to the request's for the duration of each create (raw setresuid/setresgid, on the
//! thread only). It needs `/proc/self/fd` to reopen inodes. It holds at most
//! [`FsLimits::total`] descriptors (cache + open handles + pinned unlinked files) besides its
//! root and `/proc/self/fd`, and sets the soft `RLIMIT_NOFILE` to the sum of the live shares'
//! budgets plus [`VMM_MARGIN`] (never below the soft limit the process started with, never
//! above the hard one; a budget the hard limit cannot hold is shrunk quietly: the
//! sandbox's stderr belongs to the container's one-line errors).

mod device;
mod event_handler;
mod host_watch;
mod lanes;
mod lock_wait;
mod request;
mod server;
mod stats;
#[cfg(test)]
mod tests;
mod workers;

use std::io;
use std::path::PathBuf;

pub use device::VirtioFs;
pub use host_watch::HostWatch;
pub use lock_wait::LockCanceller;
pub use server::{
    DataCache, FsLimits, HostDir, HostEdit, NodeKind, Nudge, OWN_EDIT_WINDOW, ServerError,
    ShareConfig, ShareFs, VMM_MARGIN,
};
pub use stats::{FsStats, OpcodeStats};
pub use workers::MAX_WORKERS_PER_QUEUE;

/// Index of the high-priority queue (FORGET, INTERRUPT).
pub const HIPRIO_QUEUE: usize = 0;
/// Index of the first request queue (the others follow it).
pub const REQUEST_QUEUE: usize = 1;
/// The most request queues a device offers.
pub const MAX_REQUEST_QUEUES: usize = 8;
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
    /// The server could not open the shared directory or its own resources.
    #[error("cannot serve the shared directory: {0}")]
    Backend(#[source] ServerError),
    /// A queue event could not be created.
    #[error("cannot create a queue event: {0}")]
    QueueEvent(#[source] io::Error),
}
