//! Open files and directories (OPEN, CREATE, OPENDIR until RELEASE/RELEASEDIR): a real
//! descriptor each, at most a fixed number at a time (beyond it the guest gets `EMFILE`),
//! lock owners' descriptions (`locks.rs`) included.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::super::lock;
use super::super::state::dir_stream::DirStream;
use super::super::sys::errno;

/// One open file or directory of the guest.
#[derive(Debug)]
pub(in super::super) struct OpenHandle {
    /// The inode it was opened from: requests naming another inode are refused.
    pub(in super::super) inode: u64,
    /// The file; locked while its offset matters (READDIR, LSEEK) and for zero-copy I/O.
    file: Mutex<File>,
    /// Its status flags as the guest last gave them.
    flags: AtomicU32,
    /// Whether the guest changed the file's data through it (WRITE, FALLOCATE, a SETATTR
    /// of the size): what the guest caches of the file then includes its own changes.
    wrote: AtomicBool,
    /// Where the guest's listing stands, for a directory (locked after `file`).
    dir: Mutex<DirStream>,
}

/// The status flags a guest's `fcntl(F_SETFL)` may change on the host file (the kernel
/// ignores the rest, but `O_ASYNC` it would take: signals to the VMM; never that).
const STATUS_FLAGS: u32 =
    (libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME) as u32;

impl OpenHandle {
    /// The open file, locked.
    pub(in super::super) fn file(&self) -> MutexGuard<'_, File> {
        lock(&self.file)
    }

    /// The file, its status flags first set to `flags` if the guest changed them since (an
    /// `fcntl(F_SETFL)` in the guest shows in the next READ or WRITE).
    pub(in super::super) fn file_with_flags(&self, flags: u32) -> io::Result<MutexGuard<'_, File>> {
        let flags = flags & STATUS_FLAGS;
        let file = self.file();
        if self.flags.load(Ordering::Relaxed) != flags {
            super::super::sys::set_status_flags(&*file, flags)?;
            self.flags.store(flags, Ordering::Relaxed);
        }
        Ok(file)
    }

    /// The file, locked, and where the guest's listing of it stands.
    pub(in super::super) fn dir_stream(&self) -> (MutexGuard<'_, File>, MutexGuard<'_, DirStream>) {
        let file = self.file();
        (file, lock(&self.dir))
    }

    /// Notes that the guest changed the file's data through this handle.
    pub(in super::super) fn mark_written(&self) {
        self.wrote.store(true, Ordering::Relaxed);
    }

    /// Whether [`OpenHandle::mark_written`] was called.
    pub(in super::super) fn written(&self) -> bool {
        self.wrote.load(Ordering::Relaxed)
    }
}

/// The open handles, by the number the guest uses (`fh`).
#[derive(Debug)]
pub(in super::super) struct HandleTable {
    handles: HashMap<u64, Arc<OpenHandle>>,
    next: u64,
    capacity: usize,
    /// The lock owners' descriptions open (`locks.rs`): they count against `capacity`.
    lock_files: Arc<AtomicUsize>,
    /// Places taken by opens under way ([`HandleSlot`]): they count against `capacity`.
    reserved: usize,
}

/// A place in the table taken before a file is opened: requests are served on several
/// threads, and an open that found room must not find it gone once it has created or
/// truncated the file. Given back when dropped unfilled.
#[derive(Debug)]
pub(in super::super) struct HandleSlot<'a> {
    table: &'a Mutex<HandleTable>,
    filled: bool,
}

impl HandleSlot<'_> {
    /// A place in `table`, or `Err(EMFILE)` if there is none now.
    pub(in super::super) fn take(table: &Mutex<HandleTable>) -> io::Result<HandleSlot<'_>> {
        let mut handles = lock(table);
        handles.check_room()?;
        handles.reserved += 1;
        Ok(HandleSlot {
            table,
            filled: false,
        })
    }

    /// Keeps `file`, opened from `inode` with `flags`, in the place; returns its handle
    /// number.
    pub(in super::super) fn fill(mut self, inode: u64, file: File, flags: u32) -> u64 {
        self.filled = true;
        let mut handles = lock(self.table);
        handles.reserved = handles.reserved.saturating_sub(1);
        handles.insert(inode, file, flags)
    }
}

impl Drop for HandleSlot<'_> {
    fn drop(&mut self) {
        if !self.filled {
            let mut handles = lock(self.table);
            handles.reserved = handles.reserved.saturating_sub(1);
        }
    }
}

impl HandleTable {
    /// No handles; at most `capacity` at a time.
    pub(in super::super) fn new(capacity: usize) -> Self {
        HandleTable {
            handles: HashMap::new(),
            next: 1,
            capacity,
            lock_files: Arc::default(),
            reserved: 0,
        }
    }

    /// The number open.
    pub(in super::super) fn len(&self) -> usize {
        self.handles.len()
    }

    /// `Err(EMFILE)` if no other handle can be opened now (opens under way included).
    pub(in super::super) fn check_room(&self) -> io::Result<()> {
        let taken = self.handles.len() + self.lock_files.load(Ordering::SeqCst) + self.reserved;
        if taken >= self.capacity {
            Err(errno(libc::EMFILE))
        } else {
            Ok(())
        }
    }

    /// Keeps `file`, opened from `inode` with `flags`, in a place taken for it; returns its
    /// handle number.
    fn insert(&mut self, inode: u64, file: File, flags: u32) -> u64 {
        let fh = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        let handle = OpenHandle {
            inode,
            file: Mutex::new(file),
            flags: AtomicU32::new(flags & STATUS_FLAGS),
            wrote: AtomicBool::new(false),
            dir: Mutex::new(DirStream::default()),
        };
        self.handles.insert(fh, Arc::new(handle));
        fh
    }

    /// Handle `fh` if it was opened from `inode`, else `EBADF`.
    pub(in super::super) fn get(&self, fh: u64, inode: u64) -> io::Result<Arc<OpenHandle>> {
        self.handles
            .get(&fh)
            .filter(|handle| handle.inode == inode)
            .cloned()
            .ok_or_else(|| errno(libc::EBADF))
    }

    /// Takes handle `fh` of `inode` out of the table: the file closes when the requests
    /// still using it are done (and the caller drops it).
    pub(in super::super) fn remove(&mut self, fh: u64, inode: u64) -> io::Result<Arc<OpenHandle>> {
        let handle = self.get(fh, inode)?;
        self.handles.remove(&fh);
        Ok(handle)
    }

    /// The count of lock owners' descriptions, which share the handles' capacity.
    pub(in super::super) fn lock_files(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.lock_files)
    }

    /// Some open handle of `inode`, if any.
    pub(in super::super) fn any_of(&self, inode: u64) -> Option<Arc<OpenHandle>> {
        self.handles.values().find(|h| h.inode == inode).cloned()
    }

    /// Whether some handle of `inode` is open.
    pub(in super::super) fn has_inode(&self, inode: u64) -> bool {
        self.handles.values().any(|h| h.inode == inode)
    }

    /// Closes every handle.
    pub(in super::super) fn clear(&mut self) {
        self.handles.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> File {
        File::open("/").unwrap()
    }

    #[test]
    fn handles_are_bounded_and_tied_to_their_inode() {
        let table = Mutex::new(HandleTable::new(2));
        let a = HandleSlot::take(&table).unwrap().fill(5, file(), 0);
        let b = HandleSlot::take(&table).unwrap().fill(6, file(), 0);
        assert_ne!(a, b);
        assert_eq!(
            HandleSlot::take(&table).unwrap_err().raw_os_error(),
            Some(libc::EMFILE)
        );
        let mut table = table.into_inner().unwrap();
        assert!(table.get(a, 5).is_ok());
        assert_eq!(
            table.get(a, 6).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        assert!(table.remove(a, 6).is_err());
        let removed = table.remove(a, 5).unwrap();
        assert!(!removed.written());
        removed.mark_written();
        assert!(removed.written());
        assert_eq!(table.len(), 1);
        assert!(table.check_room().is_ok());
        table.clear();
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_place_taken_for_an_open_counts_until_filled_or_given_back() {
        let table = Mutex::new(HandleTable::new(2));
        let first = HandleSlot::take(&table).unwrap();
        let second = HandleSlot::take(&table).unwrap();
        // Two opens under way hold both places: a third finds none before opening anything.
        assert_eq!(
            HandleSlot::take(&table).unwrap_err().raw_os_error(),
            Some(libc::EMFILE)
        );
        let fh = first.fill(5, file(), 0);
        drop(second);
        assert_eq!(lock(&table).len(), 1);
        // The place the failed open took is free again.
        let third = HandleSlot::take(&table).unwrap().fill(6, file(), 0);
        assert_ne!(fh, third);
        assert!(HandleSlot::take(&table).is_err());
    }
}
