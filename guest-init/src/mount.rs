//! `mount(2)` with optional source, type and data, for both sides: runvm assembles the share
//! with it on the host, guest-init sets up the container with it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Mounts `source` (or nothing) on `target` with `flags` (`MS_*`); a string with a NUL byte
/// is `InvalidInput`.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source
        .map(|s| c_string(s.as_os_str().as_bytes()))
        .transpose()?;
    let target = c_string(target.as_os_str().as_bytes())?;
    let fstype = fstype.map(|s| c_string(s.as_bytes())).transpose()?;
    let data = data.map(|s| c_string(s.as_bytes())).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_byte_is_invalid_input_and_nothing_is_mounted() {
        let err = mount(None, Path::new("/tmp/a\0b"), None, 0, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = mount(None, Path::new("/tmp"), Some("x\0"), 0, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
