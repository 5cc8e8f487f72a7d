//! Directory listings: READDIR and READDIRPLUS on an OPENDIR handle. `.` and `..` are not
//! listed (the guest's kernel makes its own); READDIRPLUS looks every entry up, and takes the
//! lookup back for an entry that did not fit in the reply.

use std::ffi::CString;
use std::io;

use fuse_backend_rs::api::filesystem::{DirEntry, Entry};

use super::ShareFs;
use super::sys;

/// The most bytes of directory entries read from the host per request.
const MAX_READDIR: usize = 128 * 1024;

/// Whether `name` is `.` or `..`.
fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

impl ShareFs {
    /// Up to `size` bytes of host directory entries of handle `fh` from `offset`, and the
    /// directory's device.
    fn dir_chunk(&self, id: u64, fh: u64, size: u32, offset: u64) -> io::Result<(Vec<u8>, u64)> {
        let handle = self.handles().get(fh, id)?;
        let file = handle.file();
        let dev = sys::fstat(&*file)?.st_dev;
        let mut buf = vec![0u8; (size as usize).min(MAX_READDIR)];
        let len = sys::getdents(&file, offset, &mut buf)?;
        buf.truncate(len);
        Ok((buf, dev))
    }

    pub(super) fn do_readdir(
        &self,
        id: u64,
        fh: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        if size == 0 {
            return Ok(());
        }
        let (buf, dev) = self.dir_chunk(id, fh, size, offset)?;
        for raw in sys::parse_dirents(&buf) {
            if is_dot(raw.name) {
                continue;
            }
            let entry = DirEntry {
                ino: self.state().inos.guest_ino(dev, raw.ino),
                offset: raw.next_offset,
                type_: u32::from(raw.kind),
                name: raw.name,
            };
            if add_entry(entry)? == 0 {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn do_readdirplus(
        &self,
        id: u64,
        fh: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        if size == 0 {
            return Ok(());
        }
        let (buf, _) = self.dir_chunk(id, fh, size, offset)?;
        let mut added = 0usize;
        for raw in sys::parse_dirents(&buf) {
            if is_dot(raw.name) {
                continue;
            }
            let Ok(name) = CString::new(raw.name) else {
                continue;
            };
            let entry = match self.lookup_entry(id, &name) {
                Ok(entry) => entry,
                // Gone since the listing.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
                // Entries already added must reach the guest: their lookups are counted.
                Err(_) if added > 0 => break,
                Err(err) => return Err(err),
            };
            let dir_entry = DirEntry {
                ino: entry.attr.st_ino,
                offset: raw.next_offset,
                type_: u32::from(raw.kind),
                name: raw.name,
            };
            match add_entry(dir_entry, entry) {
                Ok(0) => {
                    self.do_forget(&[(entry.inode, 1)]);
                    break;
                }
                Ok(_) => added += 1,
                Err(err) => {
                    self.do_forget(&[(entry.inode, 1)]);
                    if added > 0 {
                        break;
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }
}
