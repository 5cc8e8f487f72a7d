//! Opening a path strictly beneath a directory (`openat2` with `RESOLVE_BENEATH` and no
//! symlinks at all), for both sides: runvm walks a share's bind sources with it on the host,
//! guest-init repeats host edits with it on the share. A path a container could have turned
//! into a symlink (to `/etc`, to a stalled mount) fails instead of leading out.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Opens `path` (relative; empty for `dir` itself) beneath `dir` with `flags` (`O_CLOEXEC`
/// added), following no symlink, `..` never above `dir`.
pub fn open_beneath(dir: &impl AsRawFd, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = if path.is_empty() { c"." } else { path };
    // SAFETY: open_how is plain integers; all zeroes is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` (its size given) and the NUL-terminated path; the result is
    // checked before it is owned.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Splits `path` (relative) into its directory, opened `O_PATH` beneath `dir`, and its last
/// component, which must be a name (not empty, `.` or `..`).
pub fn parent_beneath(dir: &impl AsRawFd, path: &[u8]) -> io::Result<(OwnedFd, CString)> {
    let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
        Some(at) => (&path[..at], &path[at + 1..]),
        None => (&b""[..], path),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let c = |b: &[u8]| CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let parent = open_beneath(dir, &c(parent)?, libc::O_PATH | libc::O_DIRECTORY)?;
    Ok((parent, c(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_dot_dot_do_not_lead_out() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("a/link")).unwrap();
        let root = std::fs::File::open(tmp.path()).unwrap();
        assert!(open_beneath(&root, c"a/b", libc::O_PATH).is_ok());
        assert!(open_beneath(&root, c"", libc::O_PATH).is_ok());
        let refused = |p: &CStr| open_beneath(&root, p, libc::O_PATH).unwrap_err();
        assert_eq!(refused(c"a/link/passwd").raw_os_error(), Some(libc::ELOOP));
        assert_eq!(refused(c"../x").raw_os_error(), Some(libc::EXDEV));
        assert_eq!(refused(c"/etc").raw_os_error(), Some(libc::EXDEV));
        let (_, name) = parent_beneath(&root, b"a/b/new").unwrap();
        assert_eq!(name.as_c_str(), c"new");
        assert!(parent_beneath(&root, b"a/link/passwd").is_err());
        assert!(parent_beneath(&root, b"a/..").is_err());
    }
}
