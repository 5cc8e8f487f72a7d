//! File locks the guest takes (GETLK, SETLK, SETLKW): POSIX record locks (`fcntl`) and
//! `flock` locks, held on the host file, so that they bind processes in other containers
//! and on the host as they do under runc, not only the guest's own processes.
//!
//! The guest names a lock's owner: for a POSIX lock the process's file table, for a flock
//! lock its open file. Each owner of each inode gets an open file description of its own on
//! the host ([`LockFile`], the inode reopened), and its locks are *open file description*
//! locks (`F_OFD_SETLK`) or `flock` on it: two guest owners conflict with each other exactly
//! as two host processes would, and one owner's locks through two descriptors are one
//! owner's. The guest kernel releases nothing itself: the owner's description closes (and
//! every lock on it goes) at the FLUSH of a close by that owner (POSIX) or at the RELEASE
//! of the file (flock).
//!
//! Waiting for a lock (SETLKW) must not stop the device: [`ShareFs::try_lock`] takes the
//! lock now or returns a [`BlockedLock`] that the device waits on in a thread of its own.
//!
//! An owner's description is opened with the access mode of the guest's handle (a write open
//! of an image file would copy it up), and closes, releasing its locks, at the FLUSH of a
//! close by that owner (POSIX), at the RELEASE of its file (flock), and when the inode's last
//! guest handle is released (which covers `F_OFD_SETLK` locks, owned by a guest file the
//! FLUSH does not name). A question (GETLK) keeps nothing open.
//!
//! Bounds: at most [`MAX_LOCK_FILES`] owners' descriptions at a time, counted against the
//! open handles' budget (beyond either, `ENOLCK`).
//! A conflicting lock's holder is reported with pid 0: the host cannot say which guest
//! process holds it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use fuse_backend_rs::api::filesystem::FileLock;

use super::ShareFs;
use super::sys::errno;

/// The most owners' open file descriptions held at a time.
pub(super) const MAX_LOCK_FILES: usize = 256;
/// `FUSE_LK_FLOCK`: the request is a `flock`, not a POSIX lock.
const LK_FLOCK: u32 = 1;
/// The end of a lock that runs to the end of the file (the kernel's `OFFSET_MAX`).
const OFFSET_MAX: u64 = i64::MAX as u64;

/// One owner's locks on one inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LockKey {
    inode: u64,
    owner: u64,
    flock: bool,
}

/// The open file description holding one owner's locks on one inode.
#[derive(Debug)]
pub(super) struct LockFile {
    file: File,
    /// Set when the owner is gone (its FLUSH or RELEASE came): a wait still under way
    /// gives up what it gets.
    dropped: AtomicBool,
    /// The handle table's count of these, given back on drop.
    counted: Arc<AtomicUsize>,
}

impl Drop for LockFile {
    fn drop(&mut self) {
        self.counted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LockFile {
    /// Gives back every lock on the description: its owner is gone. A wait still holding
    /// the description must not keep them until it ends.
    fn release_all(&self) {
        self.dropped.store(true, Ordering::SeqCst);
        let _ = Wanted::Posix {
            kind: libc::F_UNLCK as i16,
            start: 0,
            len: 0,
        }
        .apply(&self.file, false);
        let _ = Wanted::Flock(libc::LOCK_UN).apply(&self.file, false);
    }
}

/// The owners' descriptions, by owner and inode.
#[derive(Debug, Default)]
pub(super) struct LockTable {
    files: HashMap<LockKey, Arc<LockFile>>,
}

impl Drop for LockTable {
    fn drop(&mut self) {
        self.clear();
    }
}

impl LockTable {
    /// Forgets every owner, releasing their locks (a new session).
    pub(super) fn clear(&mut self) {
        for (_, file) in self.files.drain() {
            file.release_all();
        }
    }

    fn remove(&mut self, key: LockKey) {
        if let Some(file) = self.files.remove(&key) {
            file.release_all();
        }
    }

    /// Whether some owner has a description of `inode`.
    pub(super) fn has_inode(&self, inode: u64) -> bool {
        self.files.keys().any(|k| k.inode == inode)
    }

    /// Forgets every owner of `inode`, releasing their locks.
    pub(super) fn remove_inode(&mut self, inode: u64) {
        let keys: Vec<LockKey> = self
            .files
            .keys()
            .filter(|k| k.inode == inode)
            .copied()
            .collect();
        for key in keys {
            self.remove(key);
        }
    }

    /// The number of owners' descriptions held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.files.len()
    }
}

/// A lock the guest asked for, in host terms.
#[derive(Clone, Copy, Debug)]
enum Wanted {
    /// A POSIX lock: `F_RDLCK`, `F_WRLCK` or `F_UNLCK` on bytes `start..=end`.
    Posix { kind: i16, start: i64, len: i64 },
    /// A flock: `LOCK_SH`, `LOCK_EX` or `LOCK_UN`.
    Flock(libc::c_int),
}

impl Wanted {
    /// Checks the guest's lock: a known type, a range inside what `off_t` holds.
    fn from_guest(lock: &FileLock, flags: u32) -> io::Result<Wanted> {
        let kind = match i32::try_from(lock.lock_type).map_err(|_| errno(libc::EINVAL))? {
            libc::F_RDLCK => libc::F_RDLCK,
            libc::F_WRLCK => libc::F_WRLCK,
            libc::F_UNLCK => libc::F_UNLCK,
            _ => return Err(errno(libc::EINVAL)),
        };
        if flags & LK_FLOCK != 0 {
            return Ok(Wanted::Flock(match kind {
                libc::F_RDLCK => libc::LOCK_SH,
                libc::F_WRLCK => libc::LOCK_EX,
                _ => libc::LOCK_UN,
            }));
        }
        if lock.start > lock.end || lock.end > OFFSET_MAX {
            return Err(errno(libc::EINVAL));
        }
        let start = i64::try_from(lock.start).map_err(|_| errno(libc::EINVAL))?;
        // To the end of the file is length 0; otherwise the inclusive end's distance + 1.
        let len = if lock.end == OFFSET_MAX {
            0
        } else {
            i64::try_from(lock.end - lock.start + 1).map_err(|_| errno(libc::EINVAL))?
        };
        Ok(Wanted::Posix {
            kind: kind as i16,
            start,
            len,
        })
    }

    /// The same range, released.
    fn unlocking(self) -> Wanted {
        match self {
            Wanted::Posix { start, len, .. } => Wanted::Posix {
                kind: libc::F_UNLCK as i16,
                start,
                len,
            },
            Wanted::Flock(_) => Wanted::Flock(libc::LOCK_UN),
        }
    }

    fn is_unlock(self) -> bool {
        matches!(self, Wanted::Posix { kind, .. } if i32::from(kind) == libc::F_UNLCK)
            || matches!(self, Wanted::Flock(libc::LOCK_UN))
    }

    /// Takes (or releases) the lock on `file`; waits for it when `wait`.
    fn apply(self, file: &File, wait: bool) -> io::Result<()> {
        let ret = match self {
            Wanted::Posix { kind, start, len } => {
                let mut lock = posix_lock(kind, start, len);
                let cmd = if wait {
                    libc::F_OFD_SETLKW
                } else {
                    libc::F_OFD_SETLK
                };
                // SAFETY: `lock` is a valid `struct flock` the call only reads.
                unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock) }
            }
            Wanted::Flock(op) => {
                let op = if wait { op } else { op | libc::LOCK_NB };
                // SAFETY: flock on a descriptor we own; no memory is passed.
                unsafe { libc::flock(file.as_raw_fd(), op) }
            }
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// The file of `open` opened again, with its access mode: a write lock needs a writable
/// description, and the guest only takes one through a writable handle. Never more than
/// the guest's mode: a write open of a file of the image's layers would copy it up.
fn reopen_like(proc_self_fd: &std::os::fd::OwnedFd, open: &File) -> io::Result<File> {
    // SAFETY: F_GETFL on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(open.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    super::sys::reopen(
        proc_self_fd,
        open,
        (flags & libc::O_ACCMODE) | libc::O_NOCTTY,
    )
}

/// A `struct flock` for an open file description lock (pid 0, from the file's start).
fn posix_lock(kind: i16, start: i64, len: i64) -> libc::flock {
    // SAFETY: `flock` is plain data; all zeroes is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as i16;
    lock.l_start = start;
    lock.l_len = len;
    lock
}

/// A lock another owner holds, which the guest waits for (SETLKW) away from the device's
/// event loop.
#[derive(Debug)]
pub struct BlockedLock {
    file: Arc<LockFile>,
    wanted: Wanted,
    /// Set when the guest was answered before the wait ended ([`BlockedLock::abandon`]).
    abandoned: Arc<AtomicBool>,
}

impl BlockedLock {
    /// Waits until the lock is granted (or the wait fails). Should the owner have gone in
    /// the meantime (FLUSH, RELEASE, a new session), the wait ends in `EINTR` and what was
    /// granted is given back at once.
    pub fn wait(self) -> io::Result<()> {
        if self.file.dropped.load(Ordering::SeqCst) {
            return Err(errno(libc::EINTR));
        }
        self.wanted.apply(&self.file.file, true)?;
        // The owner went while waiting: what was granted goes back at once, and the guest
        // is not told it holds a lock it does not.
        if self.file.dropped.load(Ordering::SeqCst) {
            self.file.release_all();
            return Err(errno(libc::EINTR));
        }
        // The guest was told EINTR meanwhile: the range asked for goes back.
        if self.abandoned.load(Ordering::SeqCst) {
            let _ = self.wanted.unlocking().apply(&self.file.file, false);
            return Err(errno(libc::EINTR));
        }
        Ok(())
    }

    /// A flag that, once set, makes a wait that is granted give the range back (the guest
    /// was answered `EINTR` before it ended).
    pub fn abandon_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.abandoned)
    }
}

/// What [`ShareFs::try_lock`] did.
#[derive(Debug)]
pub enum LockAttempt {
    /// Taken, released, or refused for good.
    Done(io::Result<()>),
    /// Held by another owner: wait with [`BlockedLock::wait`].
    Blocked(BlockedLock),
}

impl ShareFs {
    /// The description of `key`'s owner, opened from handle `fh` when it has none yet.
    /// The handle must be the guest's, of that inode, even when the owner has a description.
    fn lock_file(&self, key: LockKey, fh: u64) -> io::Result<Arc<LockFile>> {
        let (handle, counted) = {
            let handles = self.handles();
            let handle = handles.get(fh, key.inode)?;
            if let Some(file) = self.locks().files.get(&key) {
                return Ok(Arc::clone(file));
            }
            let counted = handles.lock_files();
            if counted.load(Ordering::SeqCst) >= MAX_LOCK_FILES || handles.check_room().is_err() {
                return Err(errno(libc::ENOLCK));
            }
            // Counted before the handles' lock is let go: another thread's check sees it
            // (requests are served on several threads).
            counted.fetch_add(1, Ordering::SeqCst);
            (handle, counted)
        };
        let file = match reopen_like(&self.proc_self_fd, &handle.file()) {
            Ok(file) => file,
            Err(err) => {
                counted.fetch_sub(1, Ordering::SeqCst);
                return Err(err);
            }
        };
        let file = Arc::new(LockFile {
            file,
            dropped: AtomicBool::new(false),
            counted,
        });
        let mut locks = self.locks();
        let held = locks.files.entry(key).or_insert(file);
        Ok(Arc::clone(held))
    }

    /// GETLK: the first lock of another owner that would conflict with `lock`, or `lock`
    /// with type `F_UNLCK` if none would.
    pub(super) fn do_getlk(
        &self,
        inode: u64,
        fh: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<FileLock> {
        if !self.config.host_locks {
            return Err(errno(libc::ENOSYS));
        }
        let Wanted::Posix { kind, start, len } = Wanted::from_guest(&lock, flags)? else {
            return Err(errno(libc::EINVAL));
        };
        let key = LockKey {
            inode,
            owner,
            flock: false,
        };
        // Through the owner's description if it has one (its own locks never conflict),
        // else a passing one: a question keeps nothing open.
        let handle = self.handles().get(fh, inode)?;
        let owned = self.locks().files.get(&key).cloned();
        let passing;
        let probe_file = match &owned {
            Some(file) => &file.file,
            None => {
                passing = reopen_like(&self.proc_self_fd, &handle.file())?;
                &passing
            }
        };
        let mut probe = posix_lock(kind, start, len);
        // SAFETY: `probe` is a valid `struct flock` the kernel fills in.
        if unsafe { libc::fcntl(probe_file.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if i32::from(probe.l_type) == libc::F_UNLCK {
            return Ok(FileLock {
                lock_type: libc::F_UNLCK as u32,
                ..lock
            });
        }
        let start = u64::try_from(probe.l_start).unwrap_or(0);
        let end = match u64::try_from(probe.l_len) {
            Ok(0) | Err(_) => OFFSET_MAX,
            Ok(len) => start.saturating_add(len - 1).min(OFFSET_MAX),
        };
        Ok(FileLock {
            start,
            end,
            lock_type: u32::try_from(probe.l_type).unwrap_or(libc::F_WRLCK as u32),
            pid: 0,
        })
    }

    /// SETLK, and SETLKW's first try: the lock taken or released now, or what to wait on.
    pub fn try_lock(
        &self,
        inode: u64,
        fh: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> LockAttempt {
        let attempt = || -> io::Result<Option<BlockedLock>> {
            if !self.config.host_locks {
                return Err(errno(libc::ENOSYS));
            }
            let wanted = Wanted::from_guest(&lock, flags)?;
            let key = LockKey {
                inode,
                owner,
                flock: matches!(wanted, Wanted::Flock(_)),
            };
            // Nothing to release for an owner without a description.
            if wanted.is_unlock() && !self.locks().files.contains_key(&key) {
                self.handles().get(fh, inode)?;
                return Ok(None);
            }
            let file = self.lock_file(key, fh)?;
            match wanted.apply(&file.file, false) {
                Ok(()) => Ok(None),
                Err(err)
                    if matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EACCES))
                        && !wanted.is_unlock() =>
                {
                    Ok(Some(BlockedLock {
                        file,
                        wanted,
                        abandoned: Arc::default(),
                    }))
                }
                Err(err) => Err(err),
            }
        };
        match attempt() {
            Ok(Some(blocked)) => LockAttempt::Blocked(blocked),
            Ok(None) => LockAttempt::Done(Ok(())),
            Err(err) => LockAttempt::Done(Err(err)),
        }
    }

    /// SETLK: [`ShareFs::try_lock`], a lock held by another owner being `EAGAIN`.
    pub(super) fn do_setlk(
        &self,
        inode: u64,
        fh: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        match self.try_lock(inode, fh, owner, lock, flags) {
            LockAttempt::Done(result) => result,
            LockAttempt::Blocked(_) => Err(errno(libc::EAGAIN)),
        }
    }

    /// The POSIX locks of `owner` on `inode` go (FLUSH: the owner closed a descriptor of it).
    pub(super) fn drop_posix_owner(&self, inode: u64, owner: u64) {
        self.locks().remove(LockKey {
            inode,
            owner,
            flock: false,
        });
    }

    /// The flock of `owner` (an open file) on `inode` goes (its RELEASE).
    pub(super) fn drop_flock_owner(&self, inode: u64, owner: u64) {
        self.locks().remove(LockKey {
            inode,
            owner,
            flock: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use fuse_backend_rs::api::filesystem::{Context, FileSystem};

    use super::super::{FsLimits, ShareConfig};
    use super::*;

    const A: u64 = 0xa;
    const B: u64 = 0xb;

    /// A share holding `file`, looked up and opened twice (read-write): its inode and handles.
    fn share(open_handles: usize) -> (tempfile::TempDir, ShareFs, u64, u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"0123456789").unwrap();
        let config = ShareConfig {
            limits: FsLimits {
                fd_cache: 4,
                open_handles,
                pinned: 4,
            },
            ..ShareConfig::default()
        };
        let fs = ShareFs::new(&dir.path().canonicalize().unwrap(), config).unwrap();
        let ctx = Context::new();
        let inode = fs.lookup(&ctx, 1, c"file").unwrap().inode;
        let open = || {
            fs.open(&ctx, inode, libc::O_RDWR as u32, 0)
                .unwrap()
                .0
                .unwrap()
        };
        let (fh1, fh2) = (open(), open());
        (dir, fs, inode, fh1, fh2)
    }

    fn posix(kind: i32, start: u64, end: u64) -> FileLock {
        FileLock {
            start,
            end,
            lock_type: kind as u32,
            pid: 1,
        }
    }

    fn errno_of(result: io::Result<()>) -> Option<i32> {
        result.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn posix_locks_conflict_between_owners_not_within_one() {
        let (_dir, fs, ino, fh1, fh2) = share(16);
        let write = posix(libc::F_WRLCK, 0, 9);
        fs.do_setlk(ino, fh1, A, write, 0).unwrap();
        // The same owner through its other descriptor: no conflict (POSIX semantics).
        fs.do_setlk(ino, fh2, A, posix(libc::F_RDLCK, 5, OFFSET_MAX), 0)
            .unwrap();
        // Another owner: refused, and told who holds what.
        assert_eq!(
            errno_of(fs.do_setlk(ino, fh2, B, posix(libc::F_RDLCK, 3, 3), 0)),
            Some(libc::EAGAIN)
        );
        let held = fs
            .do_getlk(ino, fh2, B, posix(libc::F_WRLCK, 0, OFFSET_MAX), 0)
            .unwrap();
        assert_eq!(held.lock_type, libc::F_WRLCK as u32);
        assert_eq!((held.start, held.pid), (0, 0));
        // Bytes past A's write lock are A's read lock: B may read-lock them.
        fs.do_setlk(ino, fh2, B, posix(libc::F_RDLCK, 20, 30), 0)
            .unwrap();
        let free = fs
            .do_getlk(ino, fh1, A, posix(libc::F_WRLCK, 0, 4), 0)
            .unwrap();
        assert_eq!(free.lock_type, libc::F_UNLCK as u32);
        // Nonsense is refused.
        assert_eq!(
            errno_of(fs.do_setlk(ino, fh1, A, posix(libc::F_WRLCK, 9, 3), 0)),
            Some(libc::EINVAL)
        );
        assert_eq!(
            errno_of(fs.do_setlk(ino, fh1, A, posix(99, 0, 3), 0)),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn locks_bind_host_processes_and_go_with_the_owners_close() {
        let (dir, fs, ino, fh1, _) = share(16);
        fs.do_setlk(ino, fh1, A, posix(libc::F_WRLCK, 0, OFFSET_MAX), 0)
            .unwrap();
        // Someone on the host (another container's VMM, a runc container) is refused.
        let host = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("file"))
            .unwrap();
        let try_host = || {
            let mut lock = posix_lock(libc::F_WRLCK as i16, 0, 0);
            // SAFETY: a valid `struct flock`, only read.
            unsafe { libc::fcntl(host.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) }
        };
        assert_eq!(try_host(), -1);
        // The owner closes a descriptor of the file (FLUSH): its locks go, as on the host.
        fs.flush(&Context::new(), ino, fh1, A).unwrap();
        assert_eq!(try_host(), 0);
    }

    #[test]
    fn a_waiter_gets_the_lock_when_its_holder_lets_go() {
        let (_dir, fs, ino, fh1, fh2) = share(16);
        let whole = posix(libc::F_WRLCK, 0, OFFSET_MAX);
        fs.do_setlk(ino, fh1, A, whole, 0).unwrap();
        let LockAttempt::Blocked(blocked) = fs.try_lock(ino, fh2, B, whole, 0) else {
            panic!("B should wait");
        };
        let waiter = std::thread::spawn(move || blocked.wait());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished());
        fs.do_setlk(ino, fh1, A, posix(libc::F_UNLCK, 0, OFFSET_MAX), 0)
            .unwrap();
        waiter.join().unwrap().unwrap();
        // B holds it now.
        assert_eq!(
            errno_of(fs.do_setlk(ino, fh1, A, whole, 0)),
            Some(libc::EAGAIN)
        );
        // A wait whose owner went away first ends at once, with nothing.
        let LockAttempt::Blocked(blocked) = fs.try_lock(ino, fh1, A, whole, 0) else {
            panic!("A should wait");
        };
        fs.drop_posix_owner(ino, A);
        assert_eq!(errno_of(blocked.wait()), Some(libc::EINTR));
    }

    #[test]
    fn an_owner_that_goes_releases_its_locks_even_while_one_of_its_waits_runs() {
        let (dir, fs, ino, fh1, fh2) = share(16);
        fs.do_setlk(ino, fh1, A, posix(libc::F_WRLCK, 0, 9), 0)
            .unwrap();
        fs.do_setlk(ino, fh2, B, posix(libc::F_WRLCK, 20, 29), 0)
            .unwrap();
        // A waits for B's range on a thread, holding its description.
        let LockAttempt::Blocked(blocked) =
            fs.try_lock(ino, fh1, A, posix(libc::F_WRLCK, 20, 29), 0)
        else {
            panic!("A should wait");
        };
        let waiter = std::thread::spawn(move || blocked.wait());
        std::thread::sleep(std::time::Duration::from_millis(50));
        // A closes (FLUSH): its bytes 0-9 are free for the host at once.
        fs.flush(&Context::new(), ino, fh1, A).unwrap();
        let host = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("file"))
            .unwrap();
        let host_lock = |start: i64| {
            let mut lock = posix_lock(libc::F_WRLCK as i16, start, 10);
            // SAFETY: a valid `struct flock`, only read.
            unsafe { libc::fcntl(host.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) }
        };
        assert_eq!(host_lock(0), 0);
        // B lets go: A's wait is granted, but A is gone: EINTR, and nothing kept.
        fs.do_setlk(ino, fh2, B, posix(libc::F_UNLCK, 20, 29), 0)
            .unwrap();
        assert_eq!(errno_of(waiter.join().unwrap()), Some(libc::EINTR));
        assert_eq!(host_lock(20), 0);
    }

    #[test]
    fn the_inodes_last_release_ends_every_owner_and_questions_keep_nothing() {
        let (_dir, fs, ino, fh1, fh2) = share(16);
        let held = fs
            .do_getlk(ino, fh1, A, posix(libc::F_WRLCK, 0, OFFSET_MAX), 0)
            .unwrap();
        assert_eq!(held.lock_type, libc::F_UNLCK as u32);
        assert_eq!(fs.locks().len(), 0);
        // An owner the FLUSH never names (a guest F_OFD_SETLK: owned by its file).
        fs.do_setlk(ino, fh1, A, posix(libc::F_WRLCK, 0, 0), 0)
            .unwrap();
        let ctx = Context::new();
        fs.release(&ctx, ino, 0, fh1, false, false, None).unwrap();
        assert_eq!(fs.locks().len(), 1, "another handle of the inode is open");
        fs.release(&ctx, ino, 0, fh2, false, false, None).unwrap();
        assert_eq!(fs.locks().len(), 0);
    }

    #[test]
    fn with_locks_in_the_guest_lock_requests_are_enosys() {
        let (_dir, fs) = super::super::tests::share_with_config(ShareConfig {
            host_locks: false,
            ..ShareConfig::default()
        });
        let ctx = Context::new();
        let ino = fs.lookup(&ctx, 1, c"file").unwrap().inode;
        let fh = fs
            .open(&ctx, ino, libc::O_RDWR as u32, 0)
            .unwrap()
            .0
            .unwrap();
        let lock = posix(libc::F_WRLCK, 0, 0);
        assert_eq!(
            errno_of(fs.do_setlk(ino, fh, A, lock, 0)),
            Some(libc::ENOSYS)
        );
        assert!(matches!(
            fs.try_lock(ino, fh, A, lock, 0),
            LockAttempt::Done(Err(e)) if e.raw_os_error() == Some(libc::ENOSYS)
        ));
        assert_eq!(
            fs.do_getlk(ino, fh, A, lock, 0)
                .err()
                .and_then(|e| e.raw_os_error()),
            Some(libc::ENOSYS)
        );
    }

    #[test]
    fn a_read_only_handle_takes_read_locks_through_a_read_only_description() {
        let (_dir, fs, ino, _, _) = share(16);
        let ctx = Context::new();
        let ro = fs
            .open(&ctx, ino, libc::O_RDONLY as u32, 0)
            .unwrap()
            .0
            .unwrap();
        fs.do_setlk(ino, ro, A, posix(libc::F_RDLCK, 0, 0), 0)
            .unwrap();
        let key = LockKey {
            inode: ino,
            owner: A,
            flock: false,
        };
        let file = fs.locks().files.get(&key).cloned().unwrap();
        // SAFETY: F_GETFL on a descriptor the test holds through `file`.
        let flags = unsafe { libc::fcntl(file.file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
    }

    #[test]
    fn flock_locks_are_per_open_file_and_go_at_its_release() {
        let (_dir, fs, ino, fh1, fh2) = share(16);
        let ex = posix(libc::F_WRLCK, 0, 0);
        fs.do_setlk(ino, fh1, A, ex, LK_FLOCK).unwrap();
        // A flock does not conflict with POSIX locks (Linux keeps them apart).
        fs.do_setlk(ino, fh2, B, posix(libc::F_WRLCK, 0, OFFSET_MAX), 0)
            .unwrap();
        assert!(matches!(
            fs.try_lock(ino, fh2, B, ex, LK_FLOCK),
            LockAttempt::Blocked(_)
        ));
        fs.release(&Context::new(), ino, 0, fh1, false, true, Some(A))
            .unwrap();
        fs.do_setlk(ino, fh2, B, ex, LK_FLOCK).unwrap();
    }

    #[test]
    fn owners_descriptions_count_against_the_handle_budget() {
        let (_dir, fs, ino, fh1, _) = share(16);
        // Two handles open; 14 owners more fit, the next does not.
        for owner in 0..14 {
            fs.do_setlk(ino, fh1, owner, posix(libc::F_RDLCK, owner, owner), 0)
                .unwrap();
        }
        assert_eq!(
            errno_of(fs.do_setlk(ino, fh1, 99, posix(libc::F_RDLCK, 0, 0), 0)),
            Some(libc::ENOLCK)
        );
        // An owner that goes gives its room back.
        fs.drop_posix_owner(ino, 0);
        fs.do_setlk(ino, fh1, 99, posix(libc::F_RDLCK, 0, 0), 0)
            .unwrap();
        assert_eq!(fs.locks().len(), 14);
        fs.destroy();
        assert_eq!(fs.locks().len(), 0);
    }
}
