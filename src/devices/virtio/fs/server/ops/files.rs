//! Requests on open files: OPEN and CREATE (a handle each, bounded), READ and WRITE
//! (zero-copy between the guest's buffers and the host file), FLUSH (refused: see
//! [`ShareFs::do_flush`]), RELEASE, FSYNC,
//! FALLOCATE and LSEEK.

use std::ffi::CStr;
use std::fs::File;
use std::io;

use fuse_backend_rs::abi::fuse_abi::{CreateIn, FOPEN_IN_KILL_SUIDGID, WRITE_KILL_PRIV};
use fuse_backend_rs::api::filesystem::{
    Context, Entry, OpenOptions, ZeroCopyReader, ZeroCopyWriter,
};

use super::super::creds::ScopedCreds;
use super::super::killpriv;
use super::super::state::handles::HandleSlot;
use super::super::state::inodes::Identity;
use super::super::sys::{self, errno};
use super::super::{ShareFs, check_name};

/// The guest's open flags the host open may see: an allow-list, so no `O_PATH` (which
/// would drop `O_CREAT|O_EXCL` and open whatever is there), `O_TMPFILE`, `O_DIRECTORY` or
/// `O_NOCTTY` from the guest; never creating, never following.
const ALLOWED_OPEN_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DIRECT
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_NOATIME
    | libc::O_LARGEFILE
    | libc::O_TRUNC;

/// The guest's open flags as the host open takes them (see [`ALLOWED_OPEN_FLAGS`]).
fn host_open_flags(flags: u32) -> i32 {
    (flags as i32 & ALLOWED_OPEN_FLAGS) | libc::O_CLOEXEC
}

/// Whether an OPEN or CREATE with `flags` and `fuse_flags` must clear set-user-ID and
/// set-group-ID: a truncating open the guest flagged (`killpriv.rs`).
fn kills_on_open(flags: u32, fuse_flags: u32) -> bool {
    flags & libc::O_TRUNC as u32 != 0 && fuse_flags & FOPEN_IN_KILL_SUIDGID != 0
}

impl ShareFs {
    /// OPEN (`dir` false) and OPENDIR (`dir` true) of inode `id`: a new handle, and whether
    /// the guest keeps what it cached of the file (`data_cache.rs`). Only regular files and
    /// directories can be opened. `fuse_flags` may ask to clear set-user-ID and set-group-ID
    /// on a truncating open (`killpriv.rs`).
    pub(in super::super) fn do_open(
        &self,
        id: u64,
        flags: u32,
        fuse_flags: u32,
        dir: bool,
    ) -> io::Result<(u64, OpenOptions)> {
        let slot = HandleSlot::take(&self.handles)?;
        let mut host_flags = host_open_flags(flags);
        if dir {
            host_flags |= libc::O_DIRECTORY;
        }
        let (file, mut st) = self.open_inode_stat(id, host_flags)?;
        if kills_on_open(flags, fuse_flags) {
            killpriv::kill_open(&file)?;
            st = sys::fstat(&file)?;
        }
        let fh = slot.fill(id, file, flags);
        // Only once the OPEN is sure to succeed: the stamp says what the guest's cache holds
        // after this answer, which a failed OPEN never gives.
        Ok((fh, self.open_cache_options(id, &st)))
    }

    /// CREATE: a new regular file owned by the request's uid/gid, opened; with `O_EXCL`
    /// an existing name fails, without it an existing regular file is opened (never a FIFO or
    /// device, never through a symlink).
    pub(in super::super) fn do_create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: &CreateIn,
    ) -> io::Result<(Entry, u64)> {
        check_name(name)?;
        let slot = HandleSlot::take(&self.handles)?;
        let dir = self.inode_fd(parent)?;
        let flags = host_open_flags(args.flags);
        let mode = args.mode & !(args.umask & 0o777);
        let created = {
            let _creds = ScopedCreds::switch(ctx.uid, ctx.gid)?;
            let create = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            match sys::openat(&*dir, name, create, mode) {
                Ok(fd) => Some(File::from(fd)),
                Err(err)
                    if err.raw_os_error() == Some(libc::EEXIST)
                        && args.flags & libc::O_EXCL as u32 == 0 =>
                {
                    None
                }
                Err(err) => return Err(err),
            }
        };
        let entry = self.lookup_entry(parent, name)?;
        let opened = match created {
            Some(file) => {
                let expected = self.state().inodes.identity(entry.inode);
                if Some(Identity::of(&sys::fstat(&file)?)) == expected {
                    Ok(file)
                } else {
                    // Replaced on the host between the create and the lookup.
                    Err(errno(libc::ESTALE))
                }
            }
            None => ScopedCreds::switch(ctx.uid, ctx.gid)
                .and_then(|_creds| self.open_inode(entry.inode, flags))
                .and_then(|file| {
                    if kills_on_open(args.flags, args.fuse_flags) {
                        killpriv::kill_open(&file)?;
                    }
                    Ok(file)
                }),
        };
        let fh = opened.map(|file| slot.fill(entry.inode, file, args.flags));
        match fh {
            Ok(fh) => Ok((entry, fh)),
            Err(err) => {
                // The guest never sees this entry: take its lookup back.
                self.do_forget(&[(entry.inode, 1)]);
                Err(err)
            }
        }
    }

    /// READ: up to `size` bytes at `offset` straight into the guest's buffers.
    pub(in super::super) fn do_read(
        &self,
        id: u64,
        fh: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        flags: u32,
    ) -> io::Result<usize> {
        let handle = self.handles().get(fh, id)?;
        let mut file = handle.file_with_flags(flags)?;
        w.write_from(&mut *file, size as usize, offset)
    }

    /// WRITE: `size` bytes at `offset` straight from the guest's buffers; set-user-ID and
    /// set-group-ID cleared first if `fuse_flags` asks (`killpriv.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(in super::super) fn do_write(
        &self,
        id: u64,
        fh: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        let handle = self.handles().get(fh, id)?;
        handle.mark_written();
        let mut file = handle.file_with_flags(flags)?;
        if fuse_flags & WRITE_KILL_PRIV != 0 {
            killpriv::kill_open(&file)?;
        }
        r.read_to(&mut *file, size as usize, offset)
    }

    /// FLUSH, a `close` in the guest: with locks on the host, the POSIX locks of the closing
    /// owner go (as a host `close` releases them). Otherwise `ENOSYS`, after which the guest
    /// kernel sends no more: writes are not cached (each WRITE reached the file before the
    /// guest's `write` returned), locks are the guest's own, and the host file closes at
    /// RELEASE; one round trip less per `close`.
    pub(in super::super) fn do_flush(&self, id: u64, fh: u64, lock_owner: u64) -> io::Result<()> {
        // An unknown handle is still an error, as for every request on a handle.
        drop(self.handles().get(fh, id)?);
        if !self.config.host_locks {
            return Err(errno(libc::ENOSYS));
        }
        self.drop_posix_owner(id, lock_owner);
        Ok(())
    }

    /// RELEASE and RELEASEDIR.
    pub(in super::super) fn do_release(&self, id: u64, fh: u64) -> io::Result<()> {
        let handle = self.handles().remove(fh, id)?;
        self.note_release(id, &handle);
        // No guest process can hold a lock on a file it has no handle of: the inode's last
        // release ends its owners' descriptions (locks.rs).
        // Under the handles' lock (then the locks', their order): an OPEN of the inode on
        // another thread, whose lock would be taken with the handle in the table, waits.
        let handles = self.handles();
        let mut locks = self.locks();
        if locks.has_inode(id) && !handles.has_inode(id) {
            locks.remove_inode(id);
        }
        Ok(())
    }

    /// FSYNC and FSYNCDIR.
    pub(in super::super) fn do_fsync(&self, id: u64, fh: u64, datasync: bool) -> io::Result<()> {
        let handle = self.handles().get(fh, id)?;
        sys::sync(&*handle.file(), datasync)
    }

    pub(in super::super) fn do_fallocate(
        &self,
        id: u64,
        fh: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        let handle = self.handles().get(fh, id)?;
        handle.mark_written();
        sys::fallocate(&*handle.file(), mode, offset, length)
    }

    /// LSEEK (`SEEK_DATA`, `SEEK_HOLE` among others).
    pub(in super::super) fn do_lseek(
        &self,
        id: u64,
        fh: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let handle = self.handles().get(fh, id)?;
        sys::lseek(&*handle.file(), offset, whence)
    }
}
