//! The pseudo file systems every guest needs before anything else: /proc, /sys, /dev
//! (devtmpfs), /run.

use std::ffi::CString;
use std::io;

/// One mount: source, target, type, flags, data.
struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
}

const BASICS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: "",
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
    },
];

fn mount(m: &Mount) -> io::Result<()> {
    std::fs::create_dir_all(m.target)?;
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, target, fstype, data) = (c(m.source)?, c(m.target)?, c(m.fstype)?, c(m.data)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            m.flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        // The kernel may have mounted devtmpfs itself (CONFIG_DEVTMPFS_MOUNT).
        if e.raw_os_error() == Some(libc::EBUSY) {
            Ok(())
        } else {
            Err(io::Error::new(e.kind(), format!("{}: {e}", m.target)))
        }
    }
}

/// Mounts the virtio-fs share `tag` at `target`, creating `target` if needed.
pub fn mount_share(tag: &str, target: &str) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, dir, fstype) = (c(tag)?, c(target)?, c("virtiofs")?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; no data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            e.kind(),
            format!("mount virtiofs {tag} on {target}: {e}"),
        ))
    }
}

/// Mounts /proc, /sys, /dev and /run; tries them all and reports the first failure.
pub fn mount_basics() -> io::Result<()> {
    let mut first_error = None;
    for m in BASICS {
        if let Err(e) = mount(m) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
