//! Reading and writing guest files for the host's diagnostic requests, bounded in size; and
//! repeating host edits through the guest's file system calls ([`touch`]).

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use guest_init::beneath::{open_beneath, parent_beneath};
use guest_init::protocol::{GuestMessage, MAX_FILE_TEXT, Touch, TouchKind};

/// The first [`MAX_FILE_TEXT`] bytes of `path`, as (lossy) text.
pub fn read_text(path: &str) -> io::Result<GuestMessage> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?
        .take(MAX_FILE_TEXT as u64)
        .read_to_end(&mut buf)?;
    Ok(GuestMessage::File {
        text: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// Writes `text` to `path`, replacing it.
pub fn write_text(path: &str, text: &str) -> io::Result<()> {
    std::fs::write(path, text).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Repeats a host edit so that the guest kernel raises the events a local edit raises
/// (IN_MODIFY and IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_MOVED_FROM/TO). Paths resolve
/// beneath `root` (the share's mount point) without following symlinks: a container that
/// swapped a directory for a symlink cannot lead guest-init elsewhere. Runs on guest-init's
/// main thread: the host's server knows these calls by pid 1 and answers them without doing
/// the edit again.
pub fn touch(root: &str, touch: &Touch) -> io::Result<()> {
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(root)?;
    match touch {
        Touch::Modify { path } => {
            let (dir, name) = parent_beneath(&root, path)?;
            let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
            let file = std::fs::File::from(open_beneath(&dir, &name, flags)?);
            let size = file.metadata()?.len();
            file.set_len(size)
        }
        Touch::Create { path, kind } => {
            let (dir, name) = parent_beneath(&root, path)?;
            let (d, n) = (dir.as_raw_fd(), name.as_ptr());
            // SAFETY: d is an open directory and n a valid C string for the call.
            check(unsafe {
                match kind {
                    TouchKind::File => libc::mknodat(d, n, libc::S_IFREG | 0o600, 0),
                    TouchKind::Fifo => libc::mknodat(d, n, libc::S_IFIFO | 0o600, 0),
                    TouchKind::Socket => libc::mknodat(d, n, libc::S_IFSOCK | 0o600, 0),
                    TouchKind::Dir => libc::mkdirat(d, n, 0o700),
                    TouchKind::Symlink => libc::symlinkat(c".".as_ptr(), d, n),
                }
            })
        }
        Touch::Delete { path, dir: is_dir } => {
            let (dir, name) = parent_beneath(&root, path)?;
            let flags = if *is_dir { libc::AT_REMOVEDIR } else { 0 };
            // SAFETY: an open directory and a valid C string.
            check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
        }
        Touch::Move { from, to } => {
            let (from_dir, from_name) = parent_beneath(&root, from)?;
            let (to_dir, to_name) = parent_beneath(&root, to)?;
            // SAFETY: open directories and valid C strings.
            check(unsafe {
                libc::renameat(
                    from_dir.as_raw_fd(),
                    from_name.as_ptr(),
                    to_dir.as_raw_fd(),
                    to_name.as_ptr(),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;

    use super::*;

    fn bytes(p: &str) -> Vec<u8> {
        p.as_bytes().to_vec()
    }

    /// On a local file system the repeats are the edits themselves; a modification keeps the
    /// file's contents.
    #[test]
    fn touches_make_remove_rename_and_keep_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        let root = tmp.path().to_str().unwrap();
        let touch = |t: &Touch| touch(root, t);
        for (name, kind) in [
            ("f", TouchKind::File),
            ("d", TouchKind::Dir),
            ("l", TouchKind::Symlink),
            ("p", TouchKind::Fifo),
            ("s", TouchKind::Socket),
        ] {
            touch(&Touch::Create {
                path: bytes(name),
                kind,
            })
            .unwrap();
        }
        let meta = |n: &str| std::fs::symlink_metadata(p(n)).unwrap().file_type();
        assert!(meta("f").is_file() && meta("d").is_dir() && meta("l").is_symlink());
        assert!(meta("p").is_fifo() && meta("s").is_socket());
        std::fs::write(p("f"), b"kept").unwrap();
        touch(&Touch::Modify { path: bytes("f") }).unwrap();
        assert_eq!(std::fs::read(p("f")).unwrap(), b"kept");
        touch(&Touch::Move {
            from: bytes("f"),
            to: bytes("g"),
        })
        .unwrap();
        assert_eq!(std::fs::read(p("g")).unwrap(), b"kept");
        touch(&Touch::Delete {
            path: bytes("g"),
            dir: false,
        })
        .unwrap();
        touch(&Touch::Delete {
            path: bytes("d"),
            dir: true,
        })
        .unwrap();
        assert!(!p("g").exists() && !p("d").exists());
        // A symlink is not followed by a modification.
        let err = touch(&Touch::Modify { path: bytes("l") }).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }
}
