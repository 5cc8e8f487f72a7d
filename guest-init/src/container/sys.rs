//! Thin wrappers over the system calls the container stage makes, turning failures into
//! one-line messages that name the operation and the path.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// `open_tree(2)`: clone the mount tree at the path instead of opening it.
pub const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `open_tree(2)`/`mount_setattr(2)`: the whole subtree.
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
/// `move_mount(2)`: the source is the descriptor itself.
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// A path as a C string.
pub fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// `what path: errno text` for the last OS error.
pub fn last_error(what: &str, path: &str) -> String {
    format!("{what} {path}: {}", io::Error::last_os_error())
}

/// `mount(2)` with optional source, type and data; the error names the target.
pub fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> Result<(), String> {
    guest_init::mount::mount(
        source.map(Path::new),
        Path::new(target),
        fstype,
        flags,
        data,
    )
    .map_err(|e| format!("mount {target}: {e}"))
}

/// Creates `path` and its missing parents as directories (mode 0755).
pub fn mkdir_all(path: &str) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("mkdir {path}: {e}"))
}

/// `prctl(2)` with one argument.
pub fn prctl(option: libc::c_int, arg: libc::c_ulong, what: &str) -> Result<(), String> {
    // SAFETY: the prctl options used here take integers, no pointers.
    if unsafe { libc::prctl(option, arg, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    }
}
