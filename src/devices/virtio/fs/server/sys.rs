//! Thin, safe wrappers over the system calls the server makes, each relative to a descriptor
//! (never a path string from the guest): `openat`, `fstatat`, `readlinkat`, the
//! `/proc/self/fd` reopen, `getdents64` parsing, and the others with an errno result.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Flags of every inode descriptor: a reference to the file, never following a symlink.
pub(super) const PATH_FLAGS: libc::c_int = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// The empty path, for the `*at(fd, "", AT_EMPTY_PATH)` calls.
pub(super) const EMPTY: &CStr = c"";

/// An error carrying `errno`.
pub(super) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// `Ok(())` when a call returned 0 or more, else the thread's errno.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `openat(dir, name, flags, mode)`.
pub(super) fn openat(
    dir: &impl AsRawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)`: an inode descriptor of `name`.
pub(super) fn open_path(dir: &impl AsRawFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(dir, name, PATH_FLAGS, 0)
}

/// Reopens the inode behind the `O_PATH` descriptor `fd` with `flags`, through the magic link
/// `/proc/self/fd/<fd>` (`proc_self_fd` is that directory). The link leads to the inode
/// itself, never to a symlink's target; `O_CREAT`, `O_EXCL` and `O_NOFOLLOW` are dropped.
pub(super) fn reopen(
    proc_self_fd: &OwnedFd,
    fd: &impl AsRawFd,
    flags: libc::c_int,
) -> io::Result<File> {
    let name = fd_name(fd)?;
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW)) | libc::O_CLOEXEC;
    openat(proc_self_fd, &name, flags, 0).map(File::from)
}

/// The name of `fd` in `/proc/self/fd`.
pub(super) fn fd_name(fd: &impl AsRawFd) -> io::Result<CString> {
    CString::new(fd.as_raw_fd().to_string()).map_err(|_| errno(libc::EINVAL))
}

/// `fstatat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`: the attributes of `fd` itself.
pub(super) fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat64> {
    let mut st = MaybeUninit::<libc::stat64>::zeroed();
    // SAFETY: the kernel writes at most one stat64 into `st`; the path is a valid C string.
    let ret = unsafe {
        libc::fstatat64(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret)?;
    // SAFETY: the call succeeded, so the kernel filled `st` (it was zeroed anyway).
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the attributes of the entry `name` in `dir`.
pub(super) fn stat_at(dir: &impl AsRawFd, name: &CStr) -> io::Result<libc::stat64> {
    let mut st = MaybeUninit::<libc::stat64>::zeroed();
    // SAFETY: the kernel writes at most one stat64 into `st`; `name` is a valid C string.
    let ret = unsafe {
        libc::fstatat64(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret)?;
    // SAFETY: the call succeeded, so the kernel filled `st` (it was zeroed anyway).
    Ok(unsafe { st.assume_init() })
}

/// `fstatvfs(fd)` (allowed on `O_PATH` descriptors).
pub(super) fn fstatvfs(fd: &impl AsRawFd) -> io::Result<libc::statvfs64> {
    let mut st = MaybeUninit::<libc::statvfs64>::zeroed();
    // SAFETY: the kernel writes at most one statvfs64 into `st`.
    check(unsafe { libc::fstatvfs64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: the call succeeded, so the kernel filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `readlinkat(fd, "")`: the target of the symlink `fd` refers to.
pub(super) fn readlink(fd: &impl AsRawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let len = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(len);
    Ok(buf)
}

/// `mkdirat(dir, name, mode)`.
pub(super) fn mkdirat(dir: &impl AsRawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is a valid C string; no memory is written.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// `mknodat(dir, name, mode, rdev)`.
pub(super) fn mknodat(dir: &impl AsRawFd, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: `name` is a valid C string; no memory is written.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })
}

/// `symlinkat(target, dir, name)`.
pub(super) fn symlinkat(target: &CStr, dir: &impl AsRawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are valid C strings; no memory is written.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// `unlinkat(dir, name, flags)`.
pub(super) fn unlinkat(dir: &impl AsRawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is a valid C string; no memory is written.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// `renameat2(old_dir, old_name, new_dir, new_name, flags)`.
pub(super) fn renameat2(
    old_dir: &impl AsRawFd,
    old_name: &CStr,
    new_dir: &impl AsRawFd,
    new_name: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: both names are valid C strings; no memory is written.
    let ret = unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            flags,
        )
    };
    check(ret)
}

/// A new link `new_name` in `new_dir` to the inode behind the `O_PATH` descriptor `fd`, made
/// through `/proc/self/fd/<fd>` (needs no CAP_DAC_READ_SEARCH, unlike `AT_EMPTY_PATH`).
pub(super) fn link_fd(
    proc_self_fd: &OwnedFd,
    fd: &OwnedFd,
    new_dir: &impl AsRawFd,
    new_name: &CStr,
) -> io::Result<()> {
    let name = fd_name(fd)?;
    // SAFETY: both names are valid C strings; no memory is written.
    let ret = unsafe {
        libc::linkat(
            proc_self_fd.as_raw_fd(),
            name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    check(ret)
}

/// `fchmodat(/proc/self/fd, "<fd>", mode)`: chmod of the inode behind an `O_PATH` descriptor.
pub(super) fn chmod_fd(proc_self_fd: &OwnedFd, fd: &OwnedFd, mode: u32) -> io::Result<()> {
    let name = fd_name(fd)?;
    // SAFETY: `name` is a valid C string; no memory is written.
    check(unsafe { libc::fchmodat(proc_self_fd.as_raw_fd(), name.as_ptr(), mode, 0) })
}

/// `fchmod(fd, mode)` on an open file.
pub(super) fn fchmod(fd: &impl AsRawFd, mode: u32) -> io::Result<()> {
    // SAFETY: no memory is involved.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`; `u32::MAX` keeps one.
pub(super) fn chown_fd(fd: &impl AsRawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: the path is a valid C string; no memory is written.
    let ret = unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret)
}

/// `ftruncate(fd, size)`.
pub(super) fn ftruncate(fd: &impl AsRawFd, size: i64) -> io::Result<()> {
    // SAFETY: no memory is involved.
    check(unsafe { libc::ftruncate64(fd.as_raw_fd(), size) })
}

/// `futimens(fd, times)` on an open file.
pub(super) fn futimens(fd: &impl AsRawFd, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `times` points to two timespecs, only read.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

/// `utimensat(/proc/self/fd, "<fd>", times)`: the times of the inode behind `fd`.
pub(super) fn utimens_fd(
    proc_self_fd: &OwnedFd,
    fd: &OwnedFd,
    times: &[libc::timespec; 2],
) -> io::Result<()> {
    let name = fd_name(fd)?;
    // SAFETY: `name` is a valid C string and `times` two timespecs, both only read.
    check(unsafe { libc::utimensat(proc_self_fd.as_raw_fd(), name.as_ptr(), times.as_ptr(), 0) })
}

/// `fsync` or `fdatasync` of `fd`.
pub(super) fn sync(fd: &impl AsRawFd, datasync: bool) -> io::Result<()> {
    // SAFETY: no memory is involved.
    let ret = unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    };
    check(ret)
}

/// `fallocate(fd, mode, offset, length)`.
pub(super) fn fallocate(fd: &impl AsRawFd, mode: u32, offset: u64, length: u64) -> io::Result<()> {
    let mode = libc::c_int::try_from(mode).map_err(|_| errno(libc::EINVAL))?;
    let offset = i64::try_from(offset).map_err(|_| errno(libc::EINVAL))?;
    let length = i64::try_from(length).map_err(|_| errno(libc::EINVAL))?;
    // SAFETY: no memory is involved.
    check(unsafe { libc::fallocate64(fd.as_raw_fd(), mode, offset, length) })
}

/// `lseek(fd, offset, whence)`; returns the new offset.
pub(super) fn lseek(fd: &impl AsRawFd, offset: u64, whence: u32) -> io::Result<u64> {
    let offset = i64::try_from(offset).map_err(|_| errno(libc::EINVAL))?;
    let whence = libc::c_int::try_from(whence).map_err(|_| errno(libc::EINVAL))?;
    // SAFETY: no memory is involved.
    let ret = unsafe { libc::lseek64(fd.as_raw_fd(), offset, whence) };
    u64::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Sets the status flags (`O_APPEND`, `O_NONBLOCK`, `O_DIRECT`, ...) of an open file.
pub(super) fn set_status_flags(fd: &impl AsRawFd, flags: u32) -> io::Result<()> {
    // SAFETY: no memory is involved.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags as libc::c_int) })
}

/// Sets this process's file mode creation mask; returns the old one.
pub(super) fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(mask) }
}

/// One entry of a `getdents64` buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RawDirent<'a> {
    pub(super) ino: u64,
    /// The offset of the next entry.
    pub(super) next_offset: u64,
    pub(super) kind: u8,
    pub(super) name: &'a [u8],
}

/// Size of `struct linux_dirent64` before its name.
const DIRENT_HEADER: usize = 19;

/// Reads directory entries of the open directory `dir` from where its offset is into `buf`
/// (its length is the most read); returns the number of bytes filled.
pub(super) fn getdents(dir: &File, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// The first entry of a `getdents64` buffer and its record's length; `None` when `buf` is
/// empty or starts with anything malformed.
pub(super) fn parse_dirent(buf: &[u8]) -> Option<(RawDirent<'_>, usize)> {
    let header = buf.get(..DIRENT_HEADER)?;
    let field = |range: std::ops::Range<usize>| header.get(range).unwrap_or_default();
    let ino = u64::from_ne_bytes(field(0..8).try_into().ok()?);
    let next_offset = u64::from_ne_bytes(field(8..16).try_into().ok()?);
    let reclen = usize::from(u16::from_ne_bytes(field(16..18).try_into().ok()?));
    let kind = field(18..19).first().copied().unwrap_or_default();
    let record = buf.get(DIRENT_HEADER..reclen)?;
    let name_len = record.iter().position(|&b| b == 0).unwrap_or(record.len());
    let entry = RawDirent {
        ino,
        next_offset,
        kind,
        name: record.get(..name_len).unwrap_or_default(),
    };
    Some((entry, reclen))
}

/// The entries in the first `len` bytes `getdents64` filled; stops at anything malformed.
#[cfg(test)]
pub(super) fn parse_dirents(buf: &[u8]) -> Vec<RawDirent<'_>> {
    let mut entries = Vec::new();
    let mut rest = buf;
    while let Some((entry, reclen)) = parse_dirent(rest) {
        entries.push(entry);
        rest = rest.get(reclen..).unwrap_or_default();
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirent(ino: u64, off: u64, kind: u8, name: &[u8]) -> Vec<u8> {
        let reclen = (DIRENT_HEADER + name.len() + 1).next_multiple_of(8);
        let mut out = Vec::new();
        out.extend_from_slice(&ino.to_ne_bytes());
        out.extend_from_slice(&off.to_ne_bytes());
        out.extend_from_slice(&u16::try_from(reclen).unwrap().to_ne_bytes());
        out.push(kind);
        out.extend_from_slice(name);
        out.resize(reclen, 0);
        out
    }

    #[test]
    fn dirents_parse_and_stop_at_garbage() {
        let mut buf = dirent(7, 1, libc::DT_REG, b"a");
        buf.extend(dirent(8, 2, libc::DT_DIR, b"longer-name"));
        let entries = parse_dirents(&buf);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].name, b"longer-name");
        assert_eq!(entries[1].ino, 8);
        assert_eq!(entries[1].next_offset, 2);
        // A record claiming more than the buffer holds, or less than its header.
        let mut bad = dirent(9, 3, libc::DT_REG, b"x");
        bad[16..18].copy_from_slice(&4096u16.to_ne_bytes());
        assert!(parse_dirents(&bad).is_empty());
        bad[16..18].copy_from_slice(&3u16.to_ne_bytes());
        assert!(parse_dirents(&bad).is_empty());
        assert!(parse_dirents(&buf[..10]).is_empty());
    }

    #[test]
    fn reading_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let file = File::open(dir.path()).unwrap();
        let mut buf = vec![0u8; 4096];
        let len = getdents(&file, &mut buf).unwrap();
        let names: Vec<&[u8]> = parse_dirents(&buf[..len]).iter().map(|e| e.name).collect();
        assert!(names.contains(&&b"f"[..]));
        assert!(names.contains(&&b".."[..]));
    }

    #[test]
    fn open_path_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("l")).unwrap();
        let root = File::open(dir.path()).unwrap();
        let fd = open_path(&root, c"l").unwrap();
        assert_eq!(fstat(&fd).unwrap().st_mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(readlink(&fd).unwrap(), b"/etc");
    }
}
