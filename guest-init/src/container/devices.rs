//! The container's `/dev`: the default nodes every OCI runtime provides (null, zero, full,
//! random, urandom, tty), `ptmx` pointing into `/dev/pts`, the `/proc/self/fd` links, then
//! the spec's own devices. `/dev` is always guest memory (a tmpfs), never the shared root.

use std::path::Path;

use guest_init::spec::DeviceSpec;

use super::sys::{self, cstr};

/// The default character devices: name, major, minor.
const DEFAULT_DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The default links: target, link.
const DEFAULT_LINKS: [(&str, &str); 5] = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
];

fn mknod(path: &str, kind: char, major: u32, minor: u32, mode: u32) -> Result<(), String> {
    let kind_bits = match kind {
        'c' | 'u' => libc::S_IFCHR,
        'b' => libc::S_IFBLK,
        'p' => libc::S_IFIFO,
        other => return Err(format!("device {path}: unknown type {other:?}")),
    };
    if let Some(parent) = Path::new(path).parent() {
        sys::mkdir_all(&parent.to_string_lossy())?;
    }
    // A node the image or an earlier entry put there is replaced, as runc does.
    let _ = std::fs::remove_file(path);
    let c = cstr(path)?;
    // SAFETY: `c` is a NUL-terminated path; mknod takes no other pointers.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            kind_bits | (mode & 0o7777),
            libc::makedev(major, minor),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(sys::last_error("mknod", path))
    }
}

fn chown(path: &str, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| format!("chown {path}: {e}"))
}

/// Creates the default nodes and links, then `devices`. Paths of `devices` must lie under
/// `/dev`.
pub fn populate(devices: &[DeviceSpec]) -> Result<(), String> {
    for (name, major, minor) in DEFAULT_DEVICES {
        mknod(&format!("/dev/{name}"), 'c', major, minor, 0o666)?;
    }
    for (target, link) in DEFAULT_LINKS {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(target, link).map_err(|e| format!("symlink {link}: {e}"))?;
    }
    for d in devices {
        if !d.path.starts_with("/dev/") || d.path.split('/').any(|p| p == "..") {
            return Err(format!("device {}: not under /dev", d.path));
        }
        mknod(&d.path, d.kind, d.major, d.minor, d.mode)?;
        chown(&d.path, d.uid, d.gid)?;
    }
    Ok(())
}
