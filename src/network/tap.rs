//! The tap behind one guest NIC: made with `/dev/net/tun` in the calling thread's network
//! namespace, frames without packet information but with a 12-byte virtio-net header (the
//! layout of `virtio_net_hdr_v1`, as the device's queues carry it), non-blocking, not
//! persistent: it vanishes when its last descriptor closes. A device of that name already
//! there is an error (`IFF_TUN_EXCL`), never shared. Its MTU and up state are set through
//! rtnetlink.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use guest_init::netspec::valid_ifname;

use super::NetworkError;
use super::link;
use super::netlink::Netlink;

/// Every tap runvm makes is named with this prefix (the scan leaves them out).
pub const TAP_PREFIX: &str = "rvtap";
/// The virtio-net header each frame on the tap carries (`virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;

/// The tap name of virtio-net slot `slot`: `rvtap0`, `rvtap1`...
pub fn tap_name(slot: u32) -> String {
    format!("{TAP_PREFIX}{slot}")
}

/// Makes tap `name` with MTU `mtu`, up; the descriptor is its only hold on life.
pub fn open_tap(name: &str, mtu: u32) -> Result<OwnedFd, NetworkError> {
    if !valid_ifname(name) {
        return Err(NetworkError::TapName(name.to_string()));
    }
    let mut nl = link::open()?;
    open_tap_with(&mut nl, name, mtu).map(|(fd, _)| fd)
}

/// [`open_tap`] over an open socket, also giving the tap's interface index.
pub(crate) fn open_tap_with(
    nl: &mut Netlink,
    name: &str,
    mtu: u32,
) -> Result<(OwnedFd, u32), NetworkError> {
    if !valid_ifname(name) {
        return Err(NetworkError::TapName(name.to_string()));
    }
    let failed = |step| {
        move |source| NetworkError::Tap {
            name: name.to_string(),
            step,
            source,
        }
    };
    let fd: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(failed("open /dev/net/tun"))?
        .into();
    set_iff(&fd, name).map_err(failed("TUNSETIFF"))?;
    let size = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int from a live local on a tun descriptor we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &raw const size) } != 0 {
        return Err(failed("TUNSETVNETHDRSZ")(io::Error::last_os_error()));
    }
    let request = |op: String| move |source| NetworkError::Request { op, source };
    let index = link::index_of(nl, name).map_err(request(format!("find the new tap {name}")))?;
    link::set_mtu_up(nl, index, mtu)
        .map_err(request(format!("set MTU {mtu} and bring up {name}")))?;
    Ok((fd, index))
}

/// Attaches the descriptor to a new tap called `name` (TUNSETIFF).
fn set_iff(fd: &OwnedFd, name: &str) -> io::Result<()> {
    // SAFETY: ifreq is plain old data (arrays, integers, a union of those and a pointer we
    // do not use); all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // valid_ifname: at most 15 bytes, no NUL, so the name stays NUL-terminated.
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL;
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, a live local, on a tun descriptor.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_carry_the_prefix_and_fit() {
        assert_eq!(tap_name(0), "rvtap0");
        assert_eq!(tap_name(7), "rvtap7");
        assert!(valid_ifname(&tap_name(u32::MAX)));
    }

    #[test]
    fn bad_names_are_refused_before_the_kernel() {
        for name in ["", "a-name-far-too-long", "x/y", "a b"] {
            assert!(matches!(
                open_tap(name, 1500),
                Err(NetworkError::TapName(_))
            ));
        }
    }
}
