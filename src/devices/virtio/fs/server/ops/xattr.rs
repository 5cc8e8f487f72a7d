//! Extended attributes: GETXATTR, LISTXATTR, SETXATTR and REMOVEXATTR on regular files and
//! directories, for the names a container under runc could use on its files:
//! - `user.*`;
//! - `system.posix_acl_access` and `system.posix_acl_default`: POSIX ACLs, whose format the
//!   host kernel checks (the guest stores and reads them; it checks permissions by the mode
//!   bits alone, see README);
//! - `security.capability`: file capabilities, which the guest kernel reads at every exec.
//!
//! Every other name is invisible: `trusted.*` (overlayfs keeps its own metadata there, and
//! only the host's root may write it), `user.overlay.*` (where overlayfs keeps it when
//! mounted `userxattr`, as rootless engines do: a volume's files must not carry metadata a
//! later overlay would obey), other `security.*` labels, and whatever else the host
//! holds. Reading one gives `ENODATA`, writing it `EOPNOTSUPP`, listings omit it. Symlinks,
//! devices, FIFOs and sockets have none (`ENODATA`; `EPERM` to write, as for `user.*` on
//! them locally). The host calls go through the path `/proc/self/fd/<n>` of the inode's
//! `O_PATH` descriptor (the kernel has no `*at` form of them before Linux 6.13): no file is
//! opened for them, and the VMM's `/proc` must be its own (it is: the sandbox keeps the
//! host's `/proc` in its private mount namespace).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use fuse_backend_rs::api::filesystem::{GetxattrReply, ListxattrReply};

use super::super::ShareFs;
use super::super::sys::errno;

/// The longest name and value (the kernel's `XATTR_NAME_MAX`, `XATTR_SIZE_MAX`) and list
/// (`XATTR_LIST_MAX`).
const NAME_MAX: usize = 255;
const VALUE_MAX: usize = 65536;
const LIST_MAX: usize = 65536;

/// Whether the guest may see and change the attribute `name` (see the module docs).
pub(in super::super) fn allowed(name: &[u8]) -> bool {
    name.len() > b"user.".len() && name.starts_with(b"user.") && !name.starts_with(b"user.overlay.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || name == b"security.capability"
}

/// The allowed names of a host list (`name\0name\0...`), in the same form.
fn filter_list(list: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len());
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if allowed(name) {
            out.extend_from_slice(name);
            out.push(0);
        }
    }
    out
}

/// `/proc/self/fd/<n>` of `fd`: the inode itself to the path-based calls.
fn proc_path(fd: &impl AsRawFd) -> io::Result<CString> {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| errno(libc::EINVAL))
}

/// The byte count a size-returning call gave, or its errno.
fn size_of(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

impl ShareFs {
    /// `ENOSYS` when the share serves no extended attributes (the guest then stops asking).
    fn xattrs_served(&self) -> io::Result<()> {
        if self.config.xattrs {
            Ok(())
        } else {
            Err(errno(libc::ENOSYS))
        }
    }

    /// The `/proc/self/fd` path of inode `id` if it is a regular file or directory; None for
    /// the other kinds, which have no extended attributes here.
    fn xattr_target(&self, id: u64) -> io::Result<Option<(CString, std::sync::Arc<OwnedFd>)>> {
        let (fd, identity) = self.inode(id)?;
        if !matches!(identity.kind, libc::S_IFREG | libc::S_IFDIR) {
            return Ok(None);
        }
        Ok(Some((proc_path(&*fd)?, fd)))
    }

    pub(in super::super) fn do_getxattr(
        &self,
        id: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.xattrs_served()?;
        if !allowed(name.to_bytes()) {
            return Err(errno(libc::ENODATA));
        }
        let Some((path, _fd)) = self.xattr_target(id)? else {
            return Err(errno(libc::ENODATA));
        };
        let mut buf = vec![0u8; (size as usize).min(VALUE_MAX)];
        // SAFETY: both strings are NUL-terminated; the kernel writes at most `buf.len()`
        // bytes into `buf` (none when it is empty: a size query).
        let ret = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let len = size_of(ret)?;
        if size == 0 {
            return Ok(GetxattrReply::Count(len as u32));
        }
        buf.truncate(len);
        Ok(GetxattrReply::Value(buf))
    }

    pub(in super::super) fn do_listxattr(&self, id: u64, size: u32) -> io::Result<ListxattrReply> {
        self.xattrs_served()?;
        let list = match self.xattr_target(id)? {
            Some((path, _fd)) => {
                let mut buf = vec![0u8; LIST_MAX];
                // SAFETY: `path` is NUL-terminated; the kernel writes at most `buf.len()`
                // bytes into `buf`.
                let ret =
                    unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
                let len = size_of(ret)?;
                buf.truncate(len);
                filter_list(&buf)
            }
            None => Vec::new(),
        };
        if size == 0 {
            return Ok(ListxattrReply::Count(list.len() as u32));
        }
        if list.len() > size as usize {
            return Err(errno(libc::ERANGE));
        }
        Ok(ListxattrReply::Names(list))
    }

    pub(in super::super) fn do_setxattr(
        &self,
        id: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.xattrs_served()?;
        if !allowed(name.to_bytes()) || name.to_bytes().len() > NAME_MAX {
            return Err(errno(libc::EOPNOTSUPP));
        }
        if value.len() > VALUE_MAX {
            return Err(errno(libc::E2BIG));
        }
        let flags = flags as libc::c_int & (libc::XATTR_CREATE | libc::XATTR_REPLACE);
        let Some((path, _fd)) = self.xattr_target(id)? else {
            return Err(errno(libc::EPERM));
        };
        // SAFETY: both strings are NUL-terminated and `value` is `value.len()` readable bytes.
        let ret = unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        };
        size_of(ret as libc::ssize_t).map(drop)
    }

    pub(in super::super) fn do_removexattr(&self, id: u64, name: &CStr) -> io::Result<()> {
        self.xattrs_served()?;
        if !allowed(name.to_bytes()) {
            return Err(errno(libc::ENODATA));
        }
        let Some((path, _fd)) = self.xattr_target(id)? else {
            return Err(errno(libc::ENODATA));
        };
        // SAFETY: both strings are NUL-terminated.
        let ret = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
        size_of(ret as libc::ssize_t).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_acl_and_capability_names_pass() {
        for name in [
            &b"user.x"[..],
            b"system.posix_acl_access",
            b"system.posix_acl_default",
            b"security.capability",
        ] {
            assert!(allowed(name), "{name:?}");
        }
        for name in [
            &b"user."[..],
            b"trusted.overlay.opaque",
            b"trusted.x",
            b"user.overlay.redirect",
            b"user.overlay.opaque",
            b"security.selinux",
            b"security.capability2",
            b"system.posix_acl_accessx",
            b"system.nfs4_acl",
            b"",
        ] {
            assert!(!allowed(name), "{name:?}");
        }
    }

    #[test]
    fn listings_keep_only_the_allowed_names() {
        let host = b"trusted.overlay.origin\0user.a\0security.selinux\0user.b\0\0";
        assert_eq!(filter_list(host), b"user.a\0user.b\0");
        assert!(filter_list(b"").is_empty());
    }
}
