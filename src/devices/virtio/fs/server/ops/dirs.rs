//! Directory listings: READDIR and READDIRPLUS on an OPENDIR handle, read through the handle's
//! [`DirStream`](super::super::state::dir_stream::DirStream). READDIRPLUS looks every entry up, and
//! takes the lookup back for an entry that did not fit in the reply. `.` and `..` are listed as a
//! local file system lists them (the guest's FUSE does not add them: `ls -a` would show neither,
//! and code that takes "two entries" for empty would be fooled), with the guest's numbers of the
//! directory and of its parent (the share's root is its own parent, as a file system's root is; the
//! host's `..` there is outside the share). READDIRPLUS gives them without a node (id 0): the
//! guest's kernel neither links nor counts them, so no lookup is taken for them.

use std::ffi::CString;
use std::io;

use fuse_backend_rs::api::filesystem::{DirEntry, Entry};

use super::super::ShareFs;
use super::super::state::inodes::ROOT_ID;
use super::super::sys;

/// Whether `name` is `.` or `..`.
fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// The READDIRPLUS entry of `.` or `..`: no node (the guest's kernel skips linking it) and
/// nothing cached.
fn dot_entry(ino: u64) -> Entry {
    // SAFETY: stat64 is plain integers; all zeroes is a valid value.
    let mut attr: libc::stat64 = unsafe { std::mem::zeroed() };
    attr.st_ino = ino;
    attr.st_mode = libc::S_IFDIR;
    Entry {
        inode: 0,
        generation: 0,
        attr,
        attr_flags: 0,
        attr_timeout: std::time::Duration::ZERO,
        entry_timeout: std::time::Duration::ZERO,
    }
}

/// `DT_DIR`, the kind of `.` and `..`.
const DT_DIR: u32 = libc::DT_DIR as u32;

impl ShareFs {
    /// The guest's inode number for `name` if it is `.` or `..` in directory `id`.
    fn dot_ino(&self, id: u64, name: &[u8]) -> Option<u64> {
        if !is_dot(name) {
            return None;
        }
        let mut state = self.state();
        let target = match (name, id) {
            (b"..", ROOT_ID) | (b".", _) => id,
            _ => state.inodes.names(id).first().map_or(id, |n| n.parent),
        };
        let identity = state.inodes.identity(target)?;
        Some(state.inos.guest_ino(identity.dev, identity.ino))
    }

    pub(in super::super) fn do_readdir(
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
            let dot = self.dot_ino(id, raw.name);
            if is_dot(raw.name) && dot.is_none() {
                stream.advance(false);
                continue;
            }
            let entry = DirEntry {
                ino: match dot {
                    Some(ino) => ino,
                    None => self.state().inos.guest_ino(dev, raw.ino),
                },
                offset: raw.next_offset,
                type_: dot.map_or(u32::from(raw.kind), |_| DT_DIR),
                name: raw.name,
            };
            if add_entry(entry)? == 0 {
                break;
            }
            stream.advance(true);
        }
        Ok(())
    }

    pub(in super::super) fn do_readdirplus(
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
            if is_dot(raw.name) {
                let Some(ino) = self.dot_ino(id, raw.name) else {
                    stream.advance(false);
                    continue;
                };
                let dir_entry = DirEntry {
                    ino,
                    offset: raw.next_offset,
                    type_: DT_DIR,
                    name: raw.name,
                };
                if add_entry(dir_entry, dot_entry(ino))? == 0 {
                    break;
                }
                stream.advance(true);
                continue;
            }
            let name = match CString::new(raw.name) {
                Ok(name) => name,
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
