//! `HANDLE_KILLPRIV_V2`: the server clears the set-user-ID and set-group-ID bits where a
//! local file system would, so the guest kernel need not fetch the attributes first (it sends
//! a GETATTR before every `chown` otherwise).
//!
//! The guest flags the requests that must clear them: a WRITE (`WRITE_KILL_PRIV`) and a
//! SETATTR of the size (`FATTR_KILL_SUIDGID`) by a process without `CAP_FSETID`, an OPEN or
//! CREATE with `O_TRUNC` likewise (`FOPEN_IN_KILL_SUIDGID`), and every `chown` of a
//! non-directory. The host kernel would not do it for the server, which has `CAP_FSETID`
//! (except for `chown`, where it always does): the server clears them itself. The other half
//! of killpriv, removing `security.capability` on write, truncate and chown, the host kernel
//! does on the server's own calls whatever its capabilities.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use super::sys;

/// `mode` with set-user-ID cleared, and set-group-ID cleared when the group may execute
/// (without group execute it marks mandatory locking, which a write keeps); None if neither
/// is set.
pub(super) fn killed_mode(mode: u32) -> Option<u32> {
    let mut killed = mode & !libc::S_ISUID;
    if mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        killed &= !libc::S_ISGID;
    }
    (killed != mode).then_some(killed & 0o7777)
}

/// Clears the bits (see [`killed_mode`]) of the open `file`.
pub(super) fn kill_open(file: &File) -> io::Result<()> {
    match killed_mode(sys::fstat(file)?.st_mode) {
        Some(mode) => sys::fchmod(file, mode),
        None => Ok(()),
    }
}

/// Clears the bits of the regular file behind the `O_PATH` descriptor `fd`.
pub(super) fn kill_path(proc_self_fd: &OwnedFd, fd: &OwnedFd) -> io::Result<()> {
    let st = sys::fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(());
    }
    match killed_mode(st.st_mode) {
        Some(mode) => sys::chmod_fd(proc_self_fd, fd, mode),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setuid_goes_and_setgid_only_with_group_execute() {
        assert_eq!(killed_mode(libc::S_IFREG | 0o4755), Some(0o755));
        assert_eq!(killed_mode(libc::S_IFREG | 0o2755), Some(0o755));
        assert_eq!(killed_mode(libc::S_IFREG | 0o6755), Some(0o755));
        // Set-group-ID without group execute (mandatory locking) stays.
        assert_eq!(killed_mode(libc::S_IFREG | 0o2745), None);
        assert_eq!(killed_mode(libc::S_IFREG | 0o6745), Some(0o2745));
        assert_eq!(killed_mode(libc::S_IFREG | 0o1777), None);
        assert_eq!(killed_mode(libc::S_IFREG | 0o644), None);
    }
}
