//! Requests on inodes themselves: INIT and DESTROY, LOOKUP and FORGET, GETATTR and SETATTR,
//! READLINK, STATFS and ACCESS.

use std::ffi::CStr;
use std::io;
use std::time::Duration;

use fuse_backend_rs::api::filesystem::{Context, Entry, FsOptions, SetattrValid};

use super::super::killpriv;
use super::super::sys::{self, errno};
use super::super::{ShareFs, purge_dropped};

/// What INIT asks for:
/// - READDIRPLUS, always: every listing carries its entries' attributes. The guest kernel's
///   adaptive mode (READDIRPLUS_AUTO) sends READDIRPLUS only for a listing's first page (a
///   reader drains the directory before it stats anything, so no lookup advises it for the
///   rest), and each entry then stat-ed costs a LOOKUP: a `stat` walk of 100 directories of
///   100 files made 7,948 LOOKUPs in 8,766 requests (12.4 s in L1); always, 1,339 requests
///   (3.5 s). A plain listing (`ls -R`, `find`) pays for it: a page holds 25 entries with
///   attributes instead of 128 names, and the server stats each (976 requests and 1.7 s
///   there, 1,251 and 3.1 s always);
/// - BIG_WRITES and MAX_PAGES: requests of up to 256 pages, so a WRITE or READ moves up to
///   1 MiB (fuse-backend-rs's largest buffer) instead of 4 KiB; one round trip per MiB is
///   what sequential I/O costs;
/// - ASYNC_READ: the guest may have several reads of one file in flight (readahead);
/// - PARALLEL_DIROPS: lookups and listings of one directory need not wait for each other in
///   the guest (the server keeps its own state consistent under its locks);
/// - HANDLE_KILLPRIV_V2: the server clears set-user-ID and set-group-ID bits where the guest
///   flags it (`killpriv.rs`), so a `chown` is one round trip, not a GETATTR and a SETATTR;
/// - ATOMIC_O_TRUNC: `O_TRUNC` travels with OPEN, not as a SETATTR after it;
/// - POSIX_LOCKS and FLOCK_LOCKS (unless the share's `host_locks` is off): the guest's locks
///   are taken on the host file (`locks.rs`), so they bind other containers and host
///   processes.
///
/// Not (yet): a writeback cache, zero-message open, DAX.
pub(in super::super) const INIT_OPTIONS: FsOptions = FsOptions::DO_READDIRPLUS
    .union(FsOptions::BIG_WRITES)
    .union(FsOptions::MAX_PAGES)
    .union(FsOptions::ASYNC_READ)
    .union(FsOptions::PARALLEL_DIROPS)
    .union(FsOptions::HANDLE_KILLPRIV_V2)
    .union(FsOptions::ATOMIC_O_TRUNC)
    .union(FsOptions::POSIX_LOCKS)
    .union(FsOptions::FLOCK_LOCKS);

impl ShareFs {
    /// INIT: what the server answers with the guest kernel's offer (fuse-backend-rs keeps
    /// only what both sides have).
    pub(in super::super) fn do_init(&self, _capable: FsOptions) -> io::Result<FsOptions> {
        if self.config.host_locks {
            Ok(INIT_OPTIONS)
        } else {
            Ok(INIT_OPTIONS - FsOptions::POSIX_LOCKS - FsOptions::FLOCK_LOCKS)
        }
    }

    /// DESTROY (or a new INIT): every handle closed, every inode but the root forgotten.
    pub(in super::super) fn do_destroy(&self) {
        self.locks().clear();
        self.handles().clear();
        let mut state = self.state();
        state.inodes.clear();
        purge_dropped(&mut state);
    }

    /// LOOKUP. A name that does not exist is answered as a negative entry (node 0) the guest
    /// may cache for the entry timeout, as it caches names that exist: a program probing
    /// for files (git, python's imports, a shell's PATH) asks once per name, not per probe.
    pub(in super::super) fn do_lookup(&self, parent: u64, name: &CStr) -> io::Result<Entry> {
        match self.lookup_entry(parent, name) {
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(Entry {
                inode: 0,
                generation: 0,
                // SAFETY: `stat64` is plain data; all zeroes is a valid value.
                attr: unsafe { std::mem::zeroed() },
                attr_flags: 0,
                attr_timeout: Duration::ZERO,
                entry_timeout: self.config.entry_timeout,
            }),
            other => other,
        }
    }

    pub(in super::super) fn do_forget(&self, requests: &[(u64, u64)]) {
        let mut state = self.state();
        for &(id, count) in requests {
            state.inodes.forget(id, count);
        }
        purge_dropped(&mut state);
    }

    /// The attributes of inode `id`, from handle `fh` when given (it must be `id`'s).
    pub(in super::super) fn do_getattr(
        &self,
        id: u64,
        fh: Option<u64>,
    ) -> io::Result<(libc::stat64, Duration)> {
        let st = match fh {
            Some(fh) => {
                let handle = self.handles().get(fh, id)?;
                let file = handle.file();
                sys::fstat(&*file)?
            }
            None => sys::fstat(&*self.inode_fd(id)?)?,
        };
        Ok((self.guest_stat(st), self.config.attr_timeout))
    }

    /// SETATTR: mode, owner, size and times, through handle `fh` when given, else through the
    /// inode's descriptor (`/proc/self/fd` for mode and times, a fresh open for the size);
    /// then set-user-ID and set-group-ID cleared if the guest asks (`killpriv.rs`).
    pub(in super::super) fn do_setattr(
        &self,
        id: u64,
        attr: &libc::stat64,
        fh: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(libc::stat64, Duration)> {
        let fd = self.inode_fd(id)?;
        let handle = fh.map(|fh| self.handles().get(fh, id)).transpose()?;
        if valid.contains(SetattrValid::MODE) {
            match &handle {
                Some(handle) => sys::fchmod(&*handle.file(), attr.st_mode)?,
                None => sys::chmod_fd(&self.proc_self_fd, &fd, attr.st_mode)?,
            }
        }
        if valid.intersects(SetattrValid::UID | SetattrValid::GID) {
            let uid = if valid.contains(SetattrValid::UID) {
                attr.st_uid
            } else {
                u32::MAX
            };
            let gid = if valid.contains(SetattrValid::GID) {
                attr.st_gid
            } else {
                u32::MAX
            };
            sys::chown_fd(&*fd, uid, gid)?;
        }
        if valid.contains(SetattrValid::SIZE) {
            match &handle {
                Some(handle) => {
                    handle.mark_written();
                    sys::ftruncate(&*handle.file(), attr.st_size)?
                }
                None => {
                    let file = self.open_inode(id, libc::O_RDWR | libc::O_NONBLOCK)?;
                    sys::ftruncate(&file, attr.st_size)?;
                }
            }
        }
        if valid.intersects(SetattrValid::ATIME | SetattrValid::MTIME) {
            let time = |now: SetattrValid, set: SetattrValid, sec: i64, nsec: i64| {
                if valid.contains(now) {
                    libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_NOW,
                    }
                } else if valid.contains(set) {
                    libc::timespec {
                        tv_sec: sec,
                        tv_nsec: nsec,
                    }
                } else {
                    libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_OMIT,
                    }
                }
            };
            let times = [
                time(
                    SetattrValid::ATIME_NOW,
                    SetattrValid::ATIME,
                    attr.st_atime,
                    attr.st_atime_nsec,
                ),
                time(
                    SetattrValid::MTIME_NOW,
                    SetattrValid::MTIME,
                    attr.st_mtime,
                    attr.st_mtime_nsec,
                ),
            ];
            match &handle {
                Some(handle) => sys::futimens(&*handle.file(), &times)?,
                None => sys::utimens_fd(&self.proc_self_fd, &fd, &times)?,
            }
        }
        if valid.contains(SetattrValid::KILL_SUIDGID) {
            killpriv::kill_path(&self.proc_self_fd, &fd)?;
        }
        drop(handle);
        self.do_getattr(id, None)
    }

    pub(in super::super) fn do_readlink(&self, id: u64) -> io::Result<Vec<u8>> {
        sys::readlink(&*self.inode_fd(id)?)
    }

    pub(in super::super) fn do_statfs(&self, id: u64) -> io::Result<libc::statvfs64> {
        sys::fstatvfs(&*self.inode_fd(id)?)
    }

    /// ACCESS: the permission bits checked for the request's uid/gid (root may read and write
    /// anything, and execute what anyone may).
    pub(in super::super) fn do_access(&self, ctx: &Context, id: u64, mask: u32) -> io::Result<()> {
        let st = sys::fstat(&*self.inode_fd(id)?)?;
        let mode = st.st_mode;
        let mask = mask & (libc::R_OK | libc::W_OK | libc::X_OK) as u32;
        let allowed = |bit: u32| {
            // `bit` is the "other" bit (4, 2 or 1); the owner's and group's are shifted.
            (st.st_uid == ctx.uid && mode & (bit << 6) != 0)
                || (st.st_gid == ctx.gid && mode & (bit << 3) != 0)
                || mode & bit != 0
        };
        let root = ctx.uid == 0;
        let denied = (mask & libc::R_OK as u32 != 0 && !root && !allowed(4))
            || (mask & libc::W_OK as u32 != 0 && !root && !allowed(2))
            || (mask & libc::X_OK as u32 != 0 && !(allowed(1) || (root && mode & 0o111 != 0)));
        if denied {
            Err(errno(libc::EACCES))
        } else {
            Ok(())
        }
    }
}
