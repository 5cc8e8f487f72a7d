//! fuse-backend-rs's `FileSystem` trait for [`ShareFs`]: each request dispatched to its
//! `ops/` (or `locks.rs`) implementation. Requests not implemented here keep
//! the trait's answer: `ENOSYS` for BMAP, POLL and DAX mappings; `ENOTTY` for IOCTL.

use std::ffi::CStr;
use std::io;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::CreateIn;
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileLock, FileSystem, FsOptions, GetxattrReply, ListxattrReply,
    OpenOptions, SetattrValid, ZeroCopyReader, ZeroCopyWriter,
};

use super::ShareFs;
use super::nudge::Part;

impl FileSystem for ShareFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // A new session: nothing of an earlier one survives.
        self.do_destroy();
        self.do_init(capable)
    }

    fn destroy(&self) {
        self.do_destroy();
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        if let Some(entry) = self.nudged_lookup(ctx.pid, parent, name) {
            return Ok(entry);
        }
        self.do_lookup(parent, name)
    }

    fn forget(&self, _ctx: &Context, inode: u64, count: u64) {
        self.do_forget(&[(inode, count)]);
    }

    fn batch_forget(&self, _ctx: &Context, requests: Vec<(u64, u64)>) {
        self.do_forget(&requests);
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(libc::stat64, Duration)> {
        self.do_getattr(inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: libc::stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(libc::stat64, Duration)> {
        if valid.contains(SetattrValid::SIZE) {
            match self.nudged_modify(ctx.pid, inode) {
                Part::Current(_) => return self.do_getattr(inode, None),
                Part::Late => return Err(io::Error::from_raw_os_error(libc::EPERM)),
                Part::No => {}
            }
        }
        self.refuse_stray(ctx.pid)?;
        self.note_file(inode);
        self.do_setattr(inode, &attr, handle, valid)
    }

    fn readlink(&self, _ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.do_readlink(inode)
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        if let Some(made) = self.nudged_make(ctx.pid, parent, name) {
            return made;
        }
        self.refuse_stray(ctx.pid)?;
        self.note_entry(parent, name);
        self.do_symlink(ctx, linkname, parent, name)
    }

    fn mknod(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        if let Some(made) = self.nudged_make(ctx.pid, inode, name) {
            return made;
        }
        self.refuse_stray(ctx.pid)?;
        self.note_entry(inode, name);
        self.do_mknod(ctx, inode, name, mode, rdev, umask)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        if let Some(made) = self.nudged_make(ctx.pid, parent, name) {
            return made;
        }
        self.refuse_stray(ctx.pid)?;
        self.note_entry(parent, name);
        self.do_mkdir(ctx, parent, name, mode, umask)
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        if let Some(done) = self.nudged_remove(ctx.pid, parent, name) {
            return done;
        }
        self.refuse_stray(ctx.pid)?;
        self.note_entry(parent, name);
        self.do_remove(parent, name, 0)
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        if let Some(done) = self.nudged_remove(ctx.pid, parent, name) {
            return done;
        }
        self.refuse_stray(ctx.pid)?;
        self.note_entry(parent, name);
        self.do_remove(parent, name, libc::AT_REMOVEDIR)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        if flags == 0
            && let Some(done) = self.nudged_rename(ctx.pid, (olddir, oldname), (newdir, newname))
        {
            return done;
        }
        self.refuse_stray(ctx.pid)?;
        self.note_entry(olddir, oldname);
        self.note_entry(newdir, newname);
        self.do_rename(olddir, oldname, newdir, newname, flags)
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.refuse_stray(ctx.pid)?;
        self.note_entry(newparent, newname);
        self.do_link(inode, newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        let flags = match self.nudged_modify(ctx.pid, inode) {
            // The guest's write-open of a nudged modification: nothing is written.
            Part::Current(_) => flags & !(libc::O_ACCMODE as u32 | libc::O_TRUNC as u32),
            Part::Late => return Err(io::Error::from_raw_os_error(libc::EACCES)),
            Part::No => {
                let writes = flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32;
                if writes || flags & libc::O_TRUNC as u32 != 0 {
                    self.refuse_stray(ctx.pid)?;
                    self.note_file(inode);
                }
                flags
            }
        };
        let (fh, options) = self.do_open(inode, flags, fuse_flags, false)?;
        Ok((Some(fh), options, None))
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.refuse_stray(ctx.pid)?;
        self.note_entry(parent, name);
        let (entry, fh) = self.do_create(ctx, parent, name, &args)?;
        Ok((entry, Some(fh), OpenOptions::empty(), None))
    }

    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        self.do_read(inode, handle, w, size, offset, flags)
    }

    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.refuse_stray(ctx.pid)?;
        self.note_file(inode);
        self.do_write(inode, handle, r, size, offset, flags, fuse_flags)
    }

    fn flush(&self, _ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
        self.do_flush(inode, handle, lock_owner)
    }

    fn fsync(&self, _ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.do_fsync(inode, handle, datasync)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.refuse_stray(ctx.pid)?;
        self.note_file(inode);
        self.do_fallocate(inode, handle, mode, offset, length)
    }

    fn release(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
        handle: u64,
        _flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        if flock_release && let Some(owner) = lock_owner {
            self.drop_flock_owner(inode, owner);
        }
        self.do_release(inode, handle)
    }

    fn statfs(&self, _ctx: &Context, inode: u64) -> io::Result<libc::statvfs64> {
        self.do_statfs(inode)
    }

    fn opendir(
        &self,
        _ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        let (fh, options) = self.do_open(inode, flags, 0, true)?;
        Ok((Some(fh), options))
    }

    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.do_readdir(inode, handle, size, offset, add_entry)
    }

    fn readdirplus(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.do_readdirplus(inode, handle, size, offset, add_entry)
    }

    fn fsyncdir(&self, _ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.do_fsync(inode, handle, datasync)
    }

    fn releasedir(&self, _ctx: &Context, inode: u64, _flags: u32, handle: u64) -> io::Result<()> {
        self.do_release(inode, handle)
    }

    fn getlk(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<FileLock> {
        self.do_getlk(inode, handle, owner, lock, flags)
    }

    fn setlk(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        self.do_setlk(inode, handle, owner, lock, flags)
    }

    /// Never waits here: the device takes SETLKW before the server does (`fs/lock_wait.rs`).
    fn setlkw(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        self.do_setlk(inode, handle, owner, lock, flags)
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        self.do_access(ctx, inode, mask)
    }

    fn lseek(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.do_lseek(inode, handle, offset, whence)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.refuse_stray(ctx.pid)?;
        self.do_setxattr(inode, name, value, flags)
    }

    fn getxattr(
        &self,
        _ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.do_getxattr(inode, name, size)
    }

    fn listxattr(&self, _ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        self.do_listxattr(inode, size)
    }

    fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        self.refuse_stray(ctx.pid)?;
        self.do_removexattr(inode, name)
    }
}
