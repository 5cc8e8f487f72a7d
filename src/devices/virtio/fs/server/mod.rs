//! The file system the virtio-fs device serves: a host directory, through fuse-backend-rs's
//! [`FileSystem`](fuse_backend_rs::api::filesystem::FileSystem) trait and its `Server`.
//!
//! Unlike fuse-backend-rs's `PassthroughFs`, it does not hold a descriptor for every inode the
//! guest knows (a guest walking a large tree would run the process out of descriptors, and
//! file handles do not work on overlayfs). Instead:
//! - `state/`: what the server keeps between requests. `inodes.rs`, the inode table
//!   (identity, lookup count and the names, parent + name, each inode is reached by);
//!   `fd_cache.rs`, a bounded LRU of `O_PATH` descriptors; `resolve.rs`, which reopens a
//!   missing one by a walk from the nearest ancestor at hand, checking every step's identity
//!   (`ESTALE` on a mismatch, never another file); `handles.rs`, open files and directories,
//!   a descriptor each, bounded; `dir_stream.rs`, where a directory's listing stands, so that
//!   READDIR continues without seeking; `ino_map.rs`, stable inode numbers for the guest;
//! - `ops/`: the requests, by concern (`entry.rs`, `names.rs`, `files.rs`, `dirs.rs`,
//!   `xattr.rs`: extended attributes, for the names a container may use); `filesystem.rs`:
//!   the trait impl that dispatches to them;
//! - `creds.rs`: files created with the request's uid/gid;
//! - `data_cache.rs`: which files' data the guest keeps cached between opens;
//! - `killpriv.rs`: set-user-ID and set-group-ID bits cleared where the guest kernel asks;
//! - `locks.rs`: POSIX and flock locks, held on the host file per guest owner;
//! - `nudge.rs`: host edits repeated by guest-init, and notes of the guest's own changes;
//! - `limits.rs`: the descriptor budget and the process's `RLIMIT_NOFILE`;
//! - `sys.rs`: the system calls, always relative to a descriptor.

mod creds;
mod data_cache;
mod filesystem;
mod killpriv;
mod limits;
mod locks;
mod nudge;
mod ops;
mod state;
mod sys;

use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fuse_backend_rs::api::filesystem::Entry;

pub use data_cache::DataCache;
pub use limits::{FsLimits, VMM_MARGIN};
use locks::LockTable;
pub use locks::{BlockedLock, LockAttempt};
use nudge::Nudges;
pub use nudge::{HostDir, HostEdit, NodeKind, Nudge, OWN_EDIT_WINDOW};
use state::handles::HandleTable;
use state::inodes::Identity;
use state::resolve::State;
use sys::errno;

/// Why the shared directory cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The shared directory cannot be opened.
    #[error("cannot open the shared directory {path}: {source}")]
    OpenRoot {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// `/proc/self/fd`, through which inodes are reopened, cannot be opened.
    #[error("cannot open /proc/self/fd: {0}")]
    ProcSelfFd(#[source] io::Error),
}

/// How a share is served. Each option that bears on what the guest can do:
/// - `entry_timeout`, `attr_timeout` (1 s): close-to-open consistency. The share is mostly the
///   guest's alone (the container rootfs), but bind-mount sources may change on the host.
/// - `limits`: the descriptors the server may hold (see [`FsLimits`]).
/// - `data_cache`: which files' data the guest keeps cached from one open to the next
///   ([`DataCache`]; by default none: close-to-open).
/// - `xattrs` (on): extended attributes as `ops/xattr.rs` says; off, every xattr request is
///   `ENOSYS`, after which the guest sends none (not even its `security.capability` probe
///   before a file's first write).
/// - `host_locks` (on): POSIX and flock locks held on the host file (`locks.rs`), FLUSH
///   answered (a close releases the owner's POSIX locks); off, the guest kernel keeps its
///   locks and FLUSH is `ENOSYS` (one round trip less per `close`).
///
/// Fixed, not options: no writeback cache (the guest's view of sizes never diverges from the
/// host's, files opened write-only are never read), no DAX (no shared memory window),
/// extended attributes (when on) for `user.*`, ACLs and file capabilities only, every OPEN and OPENDIR answered with a handle, inode numbers as `state/ino_map.rs`
/// says.
#[derive(Clone, Copy, Debug)]
pub struct ShareConfig {
    /// How long the guest may cache a name.
    pub entry_timeout: Duration,
    /// How long the guest may cache attributes.
    pub attr_timeout: Duration,
    /// The descriptor budget.
    pub limits: FsLimits,
    /// Which files' data the guest keeps cached between opens.
    pub data_cache: DataCache,
    /// Whether extended attributes are served.
    pub xattrs: bool,
    /// Whether the guest's locks are taken on the host file (`locks.rs`; FLUSH then
    /// answered); otherwise the guest kernel keeps them itself (and FLUSH is `ENOSYS`).
    pub host_locks: bool,
    /// Whether host edits are told to the guest (`nudge.rs`): the server then notes what the
    /// guest's own requests change.
    pub watch_edits: bool,
}

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            entry_timeout: Duration::from_secs(1),
            attr_timeout: Duration::from_secs(1),
            limits: FsLimits::default(),
            data_cache: DataCache::PerOpen,
            xattrs: true,
            host_locks: true,
            watch_edits: false,
        }
    }
}

/// Locks `mutex`, even if a panicking thread held it (the data stays consistent: every
/// update is a single map operation).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A host directory served to the guest (see the module docs).
#[derive(Debug)]
pub struct ShareFs {
    config: ShareConfig,
    /// `/proc/self/fd`, to reopen `O_PATH` descriptors.
    proc_self_fd: OwnedFd,
    state: Mutex<State>,
    handles: Mutex<HandleTable>,
    locks: Mutex<LockTable>,
    /// The host edit being told to the guest, and the guest's own recent changes.
    nudges: Mutex<Nudges>,
    reservation: limits::Reservation,
}

impl ShareFs {
    /// Serves `root` (an absolute, resolved directory). Sets the process umask to 0 (the
    /// guest's modes reach the host unchanged) and the open-file limit (see `limits.rs`).
    pub fn new(root: &Path, config: ShareConfig) -> Result<ShareFs, ServerError> {
        let open_root = || -> io::Result<(OwnedFd, libc::stat64)> {
            let fd = OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(sys::PATH_FLAGS | libc::O_DIRECTORY)
                    .open(root)?,
            );
            let st = sys::fstat(&fd)?;
            Ok((fd, st))
        };
        let (root_fd, st) = open_root().map_err(|source| ServerError::OpenRoot {
            path: root.to_path_buf(),
            source,
        })?;
        let proc_self_fd = std::fs::File::open("/proc/self/fd")
            .map(OwnedFd::from)
            .map_err(ServerError::ProcSelfFd)?;
        sys::set_umask(0);
        let reservation = limits::Reservation::new(config.limits);
        let limits = reservation.limits();
        let config = ShareConfig { limits, ..config };
        Ok(ShareFs {
            config,
            proc_self_fd,
            state: Mutex::new(State::new(
                Arc::new(root_fd),
                Identity::of(&st),
                limits.fd_cache,
                limits.pinned,
            )),
            handles: Mutex::new(HandleTable::new(limits.open_handles)),
            locks: Mutex::new(LockTable::default()),
            nudges: Mutex::new(Nudges::default()),
            reservation,
        })
    }

    /// Whether host edits are to be told to the guest (`nudge.rs`).
    pub fn watches_edits(&self) -> bool {
        self.config.watch_edits
    }

    /// The budget granted (the one asked for, or less under a low hard limit).
    pub fn limits(&self) -> FsLimits {
        self.reservation.limits()
    }

    /// The number of inodes the server knows, the root included.
    pub fn inode_count(&self) -> usize {
        self.state().inodes.len()
    }

    /// The inode descriptors held now (cached and pinned; the root's not counted).
    pub fn inode_fds(&self) -> usize {
        let state = self.state();
        state.cache.len() + state.inodes.pinned_count()
    }

    /// The open handles.
    pub fn open_handles(&self) -> usize {
        lock(&self.handles).len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn handles(&self) -> MutexGuard<'_, HandleTable> {
        lock(&self.handles)
    }

    /// The lock owners' descriptions (locked after `handles` when both are).
    fn locks(&self) -> MutexGuard<'_, LockTable> {
        lock(&self.locks)
    }

    /// Inode `id`'s `O_PATH` descriptor (see `state/resolve.rs`).
    fn inode_fd(&self, id: u64) -> io::Result<Arc<OwnedFd>> {
        self.state().resolve(id)
    }

    /// Inode `id`'s descriptor and identity.
    fn inode(&self, id: u64) -> io::Result<(Arc<OwnedFd>, Identity)> {
        let mut state = self.state();
        let fd = state.resolve(id)?;
        let identity = state
            .inodes
            .identity(id)
            .ok_or_else(|| errno(libc::EBADF))?;
        Ok((fd, identity))
    }

    /// `st` as the guest sees it: its inode number mapped (see `state/ino_map.rs`).
    fn guest_stat(&self, mut st: libc::stat64) -> libc::stat64 {
        st.st_ino = self.state().inos.guest_ino(st.st_dev, st.st_ino);
        st
    }

    /// The reply to a request that made the guest know inode `id`, whose attributes are `st`.
    fn entry(&self, id: u64, st: libc::stat64) -> Entry {
        Entry {
            inode: id,
            generation: 0,
            attr: self.guest_stat(st),
            attr_flags: 0,
            attr_timeout: self.config.attr_timeout,
            entry_timeout: self.config.entry_timeout,
        }
    }

    /// Looks `name` up in `parent`: opens it (`O_PATH | O_NOFOLLOW`), records it in the table
    /// (one more lookup) and caches its descriptor.
    fn lookup_entry(&self, parent: u64, name: &CStr) -> io::Result<Entry> {
        check_name(name)?;
        let dir = self.inode_fd(parent)?;
        let fd = sys::open_path(&*dir, name)?;
        let st = sys::fstat(&fd)?;
        let id = {
            let mut state = self.state();
            let id = state
                .inodes
                .record_lookup(parent, name, Identity::of(&st))
                .ok_or_else(|| errno(libc::ENFILE))?;
            if state.inodes.pinned(id).is_none() && id != state::inodes::ROOT_ID {
                state.cache.insert(id, Arc::new(fd));
            }
            purge_dropped(&mut state);
            id
        };
        Ok(self.entry(id, st))
    }

    /// Opens inode `id` (a regular file or directory only, never a symlink, device, FIFO or
    /// socket) with `flags` through `/proc/self/fd`, and checks it is still that inode.
    fn open_inode(&self, id: u64, flags: i32) -> io::Result<std::fs::File> {
        self.open_inode_stat(id, flags).map(|(file, _)| file)
    }

    /// [`ShareFs::open_inode`], with the file's attributes once open.
    fn open_inode_stat(&self, id: u64, flags: i32) -> io::Result<(std::fs::File, libc::stat64)> {
        let (fd, identity) = self.inode(id)?;
        if !matches!(identity.kind, libc::S_IFREG | libc::S_IFDIR) {
            return Err(errno(libc::EBADF));
        }
        let file = sys::reopen(&self.proc_self_fd, &fd, flags)?;
        let st = sys::fstat(&file)?;
        if Identity::of(&st) != identity {
            return Err(errno(libc::ESTALE));
        }
        Ok((file, st))
    }
}

/// Closes the cached descriptors of the inodes the table dropped.
fn purge_dropped(state: &mut State) {
    for id in state.inodes.take_dropped() {
        state.cache.remove(id);
    }
}

/// Checks that `name` is one ordinary path component: not empty, `.` or `..`, no `/` (the
/// request screen refuses these first; this is the server's own guard).
fn check_name(name: &CStr) -> io::Result<()> {
    let bytes = name.to_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(errno(libc::EINVAL));
    }
    if bytes.len() > 255 {
        return Err(errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
