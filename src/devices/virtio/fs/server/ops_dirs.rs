//! Directory listings: READDIR and READDIRPLUS on an OPENDIR handle, read through the handle's
//! [`DirStream`](super::dir_stream::DirStream). `.` and `..` are not listed (the guest's kernel
//! makes its own); READDIRPLUS looks every entry up, and takes the lookup back for an entry
//! that did not fit in the reply.

use std::ffi::CString;
use std::io;

use fuse_backend_rs::api::filesystem::{DirEntry, Entry};

use super::ShareFs;
use super::sys;

/// Whether `name` is `.` or `..`.
fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

impl ShareFs {
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
        let handle = self.handles().get(fh, id)?;
        let (file, mut stream) = handle.dir_stream();
        let dev = sys::fstat(&*file)?.st_dev;
        stream.seek(&file, offset)?;
        while let Some(raw) = stream.peek(&file, size as usize)? {
            if !is_dot(raw.name) {
                let entry = DirEntry {
                    ino: self.state().inos.guest_ino(dev, raw.ino),
                    offset: raw.next_offset,
                    type_: u32::from(raw.kind),
                    name: raw.name,
                };
                if add_entry(entry)? == 0 {
                    break;
                }
                stream.advance(true);
                continue;
            }
            stream.advance(false);
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
        let handle = self.handles().get(fh, id)?;
        let (file, mut stream) = handle.dir_stream();
        stream.seek(&file, offset)?;
        let mut added = 0usize;
        while let Some(raw) = stream.peek(&file, size as usize)? {
            let name = match CString::new(raw.name) {
                Ok(name) if !is_dot(raw.name) => name,
                _ => {
                    stream.advance(false);
                    continue;
                }
            };
            let entry = match self.lookup_entry(id, &name) {
                Ok(entry) => entry,
                // Gone since the listing.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                    stream.advance(false);
                    continue;
                }
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
            stream.advance(true);
        }
        Ok(())
    }
}
