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

/// Mounts the virtio-fs share `tag` at `target`, creating `target` if needed. Not `nosuid`:
/// the container's root and binds are bind mounts of it and keep its flags, and under runc
/// a set-user-ID program or a file capability in the image takes effect (the spec's mount
/// options add `nosuid` where it asks). `nodev`: device nodes never come from the share.
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
            libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount virtiofs {tag} on {target}: {e}"),
        ));
    }
    if let Err(e) = set_readahead(target, SHARE_READAHEAD_KB) {
        // Slower sequential reads, nothing else: not worth failing the container for.
        eprintln!("guest-init: readahead of {target}: {e}");
    }
    Ok(())
}

/// The readahead of a virtio-fs share, in KiB: the host server takes READs of up to 1 MiB
/// (its INIT answer), but the guest kernel reads ahead 128 KiB at a time unless told more,
/// so a sequential read made eight round trips per MiB.
pub const SHARE_READAHEAD_KB: u32 = 1024;

/// The sysfs file of the readahead of the backing device `dev` (a FUSE mount's anonymous
/// device).
fn readahead_path(dev: libc::dev_t) -> String {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb")
}

/// Sets the readahead of the file system mounted at `target` to `kb` KiB.
fn set_readahead(target: &str, kb: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(target)?.dev();
    std::fs::write(readahead_path(dev), kb.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readahead_file_is_named_by_the_device_numbers() {
        assert_eq!(
            readahead_path(libc::makedev(0, 42)),
            "/sys/class/bdi/0:42/read_ahead_kb"
        );
        assert_eq!(
            readahead_path(libc::makedev(259, 3)),
            "/sys/class/bdi/259:3/read_ahead_kb"
        );
    }
}
