//! The container's file system view: the shared root moved over `/` and entered, the spec's
//! mounts in order inside it (bind sources cloned from the share before the root changes,
//! attached after), a guest-only `/dev`, read-only and masked paths, and the root made
//! read-only last.
//!
//! The root is entered with `MS_MOVE` + `chroot`, not `pivot_root`: the guest's own root is
//! the initramfs, which cannot be pivoted away from (runc's `--no-pivot` does the same). A
//! process that escapes the chroot reaches only the guest's initramfs; the VM is the
//! boundary. Mount targets are resolved after the root changed, so a symlink in the image
//! cannot point a mount outside it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use guest_init::spec::{ExecSpec, MountSpec};

use super::sys::{self, AT_RECURSIVE, MOVE_MOUNT_F_EMPTY_PATH, OPEN_TREE_CLONE, cstr};

const MS_PROPAGATION: u64 =
    libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE;
/// The flags a bind mount takes by a remount after it is attached.
const BIND_REMOUNT_FLAGS: u64 = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME;

/// A bind mount's source, cloned from the share while it is still reachable.
pub struct BindSource {
    tree: OwnedFd,
    is_dir: bool,
}

/// Clones the source tree of every bind mount (`None` for the other mounts). Must run
/// before [`enter`], while the share is visible.
pub fn open_bind_sources(mounts: &[MountSpec]) -> Result<Vec<Option<BindSource>>, String> {
    mounts
        .iter()
        .map(|m| {
            if m.flags & libc::MS_BIND == 0 {
                return Ok(None);
            }
            let is_dir = std::fs::metadata(&m.source)
                .map_err(|e| format!("bind mount source {}: {e}", m.source))?
                .is_dir();
            let path = cstr(&m.source)?;
            let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
            if m.flags & libc::MS_REC != 0 {
                flags |= AT_RECURSIVE;
            }
            // SAFETY: `path` is a NUL-terminated string; open_tree returns a new descriptor
            // or -1.
            let fd =
                unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
            if fd < 0 {
                return Err(sys::last_error("clone the bind mount", &m.source));
            }
            // SAFETY: open_tree just returned this descriptor; nothing else owns it.
            let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            Ok(Some(BindSource { tree, is_dir }))
        })
        .collect()
}

/// Makes every mount private, then moves `root` over `/` and enters it.
pub fn enter(root: &str) -> Result<(), String> {
    sys::mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    sys::mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC, None)?;
    std::env::set_current_dir(root).map_err(|e| format!("chdir {root}: {e}"))?;
    sys::mount(Some("."), "/", None, libc::MS_MOVE, None)?;
    std::os::unix::fs::chroot(".").map_err(|e| format!("chroot {root}: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Creates a mount point: a directory, or an empty file for a file bind.
fn make_target(target: &str, dir: bool) -> Result<(), String> {
    if dir {
        return sys::mkdir_all(target);
    }
    if let Some(parent) = Path::new(target).parent() {
        sys::mkdir_all(&parent.to_string_lossy())?;
    }
    match std::fs::symlink_metadata(target) {
        Ok(_) => Ok(()),
        Err(_) => std::fs::File::create(target)
            .map(drop)
            .map_err(|e| format!("create mount point {target}: {e}")),
    }
}

fn propagate(target: &str, propagation: &[u64]) -> Result<(), String> {
    for p in propagation {
        sys::mount(None, target, None, *p, None)?;
    }
    Ok(())
}

/// Mounts the spec's mounts in order, inside the root entered by [`enter`]. When the spec
/// mounts nothing on `/dev`, a tmpfs goes there first, so device nodes are never created in
/// the shared (host) root file system.
pub fn mount_all(mounts: &[MountSpec], binds: Vec<Option<BindSource>>) -> Result<(), String> {
    if !mounts.iter().any(|m| clean(&m.target) == "/dev") {
        make_target("/dev", true)?;
        sys::mount(
            Some("tmpfs"),
            "/dev",
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        )?;
    }
    for (m, bind) in mounts.iter().zip(binds) {
        let target = clean(&m.target);
        match bind {
            Some(b) => attach_bind(m, &target, b)?,
            None => {
                make_target(&target, true)?;
                let fstype = if m.fstype.is_empty() {
                    None
                } else {
                    Some(m.fstype.as_str())
                };
                let data = (!m.data.is_empty()).then_some(m.data.as_str());
                sys::mount(
                    Some(&m.source),
                    &target,
                    fstype,
                    m.flags & !MS_PROPAGATION,
                    data,
                )
                .map_err(|e| format!("{e} (type {})", m.fstype))?;
            }
        }
        propagate(&target, &m.propagation)?;
    }
    Ok(())
}

fn attach_bind(m: &MountSpec, target: &str, b: BindSource) -> Result<(), String> {
    make_target(target, b.is_dir)?;
    let c_target = cstr(target)?;
    // SAFETY: `b.tree` is a detached mount from open_tree; the strings are NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            b.tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(sys::last_error("attach the bind mount at", target));
    }
    let extra = m.flags & BIND_REMOUNT_FLAGS;
    if extra != 0 {
        sys::mount(
            None,
            target,
            None,
            extra | (libc::MS_BIND | libc::MS_REMOUNT),
            None,
        )?;
    }
    Ok(())
}

/// A mount target as an absolute path without `.` parts or trailing slashes.
fn clean(target: &str) -> String {
    let parts: Vec<&str> = target
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Remounts each existing path of `paths` read-only (a bind onto itself first).
pub fn readonly_paths(paths: &[String]) -> Result<(), String> {
    for p in paths {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        sys::mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None)?;
        sys::mount(
            None,
            p,
            None,
            libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        )?;
    }
    Ok(())
}

/// Hides each existing path of `paths`: a read-only empty tmpfs over a directory, /dev/null
/// over anything else (runc's way).
pub fn mask_paths(paths: &[String]) -> Result<(), String> {
    for p in paths {
        match std::fs::metadata(p) {
            Err(_) => continue,
            Ok(m) if m.is_dir() => sys::mount(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                libc::MS_RDONLY,
                Some("size=0"),
            )?,
            Ok(_) => sys::mount(Some("/dev/null"), p, None, libc::MS_BIND, None)?,
        }
    }
    Ok(())
}

/// The last step of the file system view: the root read-only if asked, and its propagation.
pub fn finish_root(spec: &ExecSpec) -> Result<(), String> {
    if spec.root_readonly {
        sys::mount(
            None,
            "/",
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )?;
    }
    if let Some(p) = spec.root_propagation {
        sys::mount(None, "/", None, p, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_cleaned() {
        assert_eq!(clean("/dev/"), "/dev");
        assert_eq!(clean("dev//pts/./"), "/dev/pts");
        assert_eq!(clean("/"), "/");
    }
}
