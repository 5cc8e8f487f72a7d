//! Where a guest's directory listing stands on the host: the entries read from the host
//! directory but not yet given to the guest, so that the next READDIR continues without
//! seeking.
//!
//! A guest lists a directory in several requests, each naming the offset the previous one
//! stopped at, and a reply holds fewer entries than one `getdents64` returns. Seeking the
//! host directory back to that offset is not safe while the guest deletes what it listed
//! (`rm -rf`): on tmpfs before Linux 6.6 an offset counts entries, so after deletions the
//! same offset lands further on and entries are never listed (the guest then fails with
//! "Directory not empty"). The stream seeks only when the guest asks for
//! another offset than where it stopped (a `rewinddir`, a `seekdir`).

use std::fs::File;
use std::io;

use super::super::sys::{self, RawDirent};

/// The most bytes of host directory entries read at once (and kept per open directory).
pub(in super::super) const MAX_READ: usize = 32 * 1024;

/// One open directory's read position.
#[derive(Debug, Default)]
pub(in super::super) struct DirStream {
    /// Entries read from the host; `buf[pos..]` not yet given to the guest.
    buf: Vec<u8>,
    pos: usize,
    /// The offset after the last entry read past (given or skipped): the host directory's
    /// own offset is at the end of `buf`.
    offset: u64,
    /// The offset after the last entry given to the guest, where its next request starts
    /// (entries skipped since, `.`, `..` or gone, are never given: continuing past them is
    /// right).
    given: u64,
}

impl DirStream {
    /// Makes `offset` the next entry: nothing to do when the guest continues where the last
    /// request stopped; otherwise the host directory `dir` seeks there.
    pub(in super::super) fn seek(&mut self, dir: &File, offset: u64) -> io::Result<()> {
        if offset != self.offset && offset != self.given {
            sys::lseek(dir, offset, libc::SEEK_SET as u32)?;
            self.buf = Vec::new();
            self.pos = 0;
            self.offset = offset;
            self.given = offset;
        }
        Ok(())
    }

    /// The next entry, reading up to `chunk` bytes more from `dir` when what was read is
    /// used up; `None` at the end of the directory.
    pub(in super::super) fn peek(
        &mut self,
        dir: &File,
        chunk: usize,
    ) -> io::Result<Option<RawDirent<'_>>> {
        if self.rest().is_empty() {
            let mut buf = vec![0u8; chunk.clamp(1024, MAX_READ)];
            let len = sys::getdents(dir, &mut buf)?;
            buf.truncate(len);
            buf.shrink_to_fit();
            self.buf = buf;
            self.pos = 0;
        }
        Ok(sys::parse_dirent(self.rest()).map(|(entry, _)| entry))
    }

    /// Moves past the entry [`DirStream::peek`] returned, which the guest was `given` or
    /// which was skipped: the next request continues after it.
    pub(in super::super) fn advance(&mut self, given: bool) {
        let parsed = sys::parse_dirent(self.rest()).map(|(entry, len)| (entry.next_offset, len));
        if let Some((next_offset, len)) = parsed {
            self.offset = next_offset;
            if given {
                self.given = next_offset;
            }
            self.pos += len;
            if self.rest().is_empty() {
                self.buf = Vec::new();
                self.pos = 0;
            }
        }
    }

    fn rest(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names `stream` gives from `offset`, at most `max`, each consumed.
    fn take(stream: &mut DirStream, dir: &File, offset: u64, max: usize) -> Vec<String> {
        stream.seek(dir, offset).unwrap();
        let mut names = Vec::new();
        while names.len() < max {
            let Some(entry) = stream.peek(dir, 4096).unwrap() else {
                break;
            };
            let name = String::from_utf8_lossy(entry.name).into_owned();
            let given = name != "." && name != "..";
            stream.advance(given);
            if given {
                names.push(name);
            }
        }
        names
    }

    /// Deleting what was listed between requests loses nothing, on tmpfs (`/dev/shm`; before
    /// Linux 6.6 an offset there counts entries) as on the ordinary file system of the tests.
    #[test]
    fn deleting_listed_entries_between_requests_skips_none() {
        for base in [std::path::Path::new("/dev/shm"), &std::env::temp_dir()] {
            let tmp = tempfile::tempdir_in(base).unwrap();
            for i in 0..300 {
                std::fs::write(tmp.path().join(format!("f{i}")), b"").unwrap();
            }
            let dir = File::open(tmp.path()).unwrap();
            let mut stream = DirStream::default();
            let mut seen = Vec::new();
            loop {
                let offset = stream.given;
                let names = take(&mut stream, &dir, offset, 7);
                if names.is_empty() {
                    break;
                }
                for name in &names {
                    std::fs::remove_file(tmp.path().join(name)).unwrap();
                }
                seen.extend(names);
            }
            assert_eq!(seen.len(), 300, "{}", base.display());
            assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn another_offset_seeks_and_zero_rewinds() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(tmp.path().join(format!("f{i}")), b"").unwrap();
        }
        let dir = File::open(tmp.path()).unwrap();
        let mut stream = DirStream::default();
        let mut first = take(&mut stream, &dir, 0, 100);
        assert_eq!(first.len(), 5);
        let end = stream.given;
        assert!(take(&mut stream, &dir, end, 100).is_empty());
        let mut again = take(&mut stream, &dir, 0, 100);
        first.sort();
        again.sort();
        assert_eq!(first, again);
    }
}
