//! The guest's own network set-up: the loopback interface up, as every Linux network
//! namespace a container runtime hands a process has it. The container runs in the guest's
//! network namespace (the VM is its isolation), so `lo` there is the container's: 127.0.0.1
//! and ::1 (the kernel adds both when the interface comes up) work whatever the spec's
//! network mode.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Brings the interface `lo` up.
pub fn loopback_up() -> io::Result<()> {
    set_up("lo")
}

/// Sets IFF_UP on interface `name` (shorter than IFNAMSIZ) with the SIOCSIFFLAGS ioctl.
fn set_up(name: &str) -> io::Result<()> {
    // SAFETY: socket takes no pointers; the descriptor is owned at once below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq we own, named above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote ifru_flags, the union member SIOCGIFFLAGS uses.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own, name and flags set.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
