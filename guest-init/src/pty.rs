//! Pseudo-terminals, shared by both sides: the container stage makes the process's pty
//! in the container's devpts, and runvm makes the one whose master goes to a
//! `--console-socket` on the host.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A new pty.
pub struct Pty {
    /// The master side.
    pub master: OwnedFd,
    /// The slave side, opened from the master.
    pub slave: OwnedFd,
    /// The slave's path (`/dev/pts/N` of the devpts `ptmx` belongs to).
    pub path: String,
}

fn failed(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Opens a pty through `ptmx` (`/dev/ptmx`), both sides close-on-exec and not made
/// anybody's controlling terminal.
pub fn open(ptmx: &std::ffi::CStr) -> io::Result<Pty> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path; open returns a new descriptor or -1.
    let fd = unsafe { libc::open(ptmx.as_ptr(), flags) };
    if fd < 0 {
        return Err(failed(&format!("open {}", ptmx.to_string_lossy())));
    }
    // SAFETY: open just returned this descriptor; nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(failed("unlockpt"));
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) } != 0 {
        return Err(failed("ptsname"));
    }
    // The peer straight from the master: no path lookup another mount could redirect.
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(failed("open the pty's slave"));
    }
    // SAFETY: the ioctl just returned this descriptor; nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Pty {
        master,
        slave,
        path: format!("/dev/pts/{number}"),
    })
}

/// Sets a terminal's window size, `rows` by `cols`; the kernel signals the terminal's
/// foreground process group if it changed.
pub fn set_size(tty: &impl AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(failed("set the window size"));
    }
    Ok(())
}

/// A terminal's window size `(rows, cols)`; `None` if it is not a terminal or has none.
pub fn size(tty: &impl AsRawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data; zeroed is valid.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize to a valid pointer.
    let ok = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_pty_carries_bytes_and_its_size() {
        let pty = open(c"/dev/ptmx").unwrap();
        assert!(pty.path.starts_with("/dev/pts/"));
        set_size(&pty.master, 33, 101).unwrap();
        assert_eq!(size(&pty.slave), Some((33, 101)));
        let mut master = std::fs::File::from(pty.master);
        let mut slave = std::fs::File::from(pty.slave);
        slave.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        master.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        assert_eq!(size(&std::fs::File::open("/dev/null").unwrap()), None);
    }
}
