//! Test helpers: a fresh network namespace on a thread of its own, a veth pair, addresses,
//! routes and neighbours made through rtnetlink, and a packet socket to send and catch
//! frames on an interface.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use guest_init::netspec::IpCidr;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link;
use super::netlink::Netlink;

/// Runs `f` on a new thread inside a new network namespace; `None` (the test skips) when
/// this user may not make one.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; it moves only this thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipped: cannot create a network namespace: {}",
                io::Error::last_os_error()
            );
            return None;
        }
        Some(f())
    });
    match thread.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Makes veth `name` with peer `peer`, both up with MTU `mtu`; their indexes.
pub fn add_veth(nl: &mut Netlink, name: &str, peer: &str, mtu: u32) -> (u32, u32) {
    let mut peer_msg = LinkMessage::default();
    peer_msg.attributes.push(LinkAttribute::IfName(peer.into()));
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.into()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));
    nl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
        .expect("create the veth pair");
    let a = link::index_of(nl, name).unwrap();
    let b = link::index_of(nl, peer).unwrap();
    link::set_mtu_up(nl, a, mtu).unwrap();
    link::set_mtu_up(nl, b, mtu).unwrap();
    (a, b)
}

/// Adds `cidr` to interface `index` (IPv6 without duplicate detection).
pub fn add_address(nl: &mut Netlink, index: u32, cidr: &str) {
    let cidr: IpCidr = parse_cidr(cidr);
    let mut msg = AddressMessage::default();
    msg.header.family = family(&cidr.addr);
    msg.header.prefix_len = cidr.prefix;
    msg.header.index = index;
    msg.header.flags = AddressHeaderFlags::Nodad;
    msg.attributes.push(AddressAttribute::Local(cidr.addr));
    msg.attributes.push(AddressAttribute::Address(cidr.addr));
    nl.request(
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .expect("add the address");
}

/// Adds a static route to `dst` (`None`: the default) via `gateway` over `index`.
pub fn add_route(
    nl: &mut Netlink,
    dst: Option<&str>,
    gateway: &str,
    index: u32,
    metric: Option<u32>,
) {
    let gateway: IpAddr = gateway.parse().unwrap();
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(&gateway);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    if let Some(dst) = dst {
        let dst = parse_cidr(dst);
        msg.header.destination_prefix_length = dst.prefix;
        msg.attributes
            .push(RouteAttribute::Destination(dst.addr.into()));
    }
    msg.attributes.push(RouteAttribute::Gateway(gateway.into()));
    msg.attributes.push(RouteAttribute::Oif(index));
    if let Some(m) = metric {
        msg.attributes.push(RouteAttribute::Priority(m));
    }
    nl.request(
        RouteNetlinkMessage::NewRoute(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .expect("add the route");
}

/// Adds a permanent neighbour `ip` at `mac` on interface `index`.
pub fn add_neighbour(nl: &mut Netlink, index: u32, ip: &str, mac: [u8; 6]) {
    let ip: IpAddr = ip.parse().unwrap();
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(&ip);
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::Destination(ip.into()));
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    nl.request(
        RouteNetlinkMessage::NewNeighbour(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .expect("add the neighbour");
}

/// Whether interface `name` exists.
pub fn exists(nl: &mut Netlink, name: &str) -> bool {
    link::index_of(nl, name).is_ok()
}

/// The flags of link `index`.
pub fn flags_of(nl: &mut Netlink, index: u32) -> (LinkFlags, u32) {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    let RouteNetlinkMessage::NewLink(l) = nl.get(RouteNetlinkMessage::GetLink(msg)).unwrap() else {
        panic!("not a link");
    };
    let mtu = l
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap();
    (l.header.flags, mtu)
}

fn parse_cidr(text: &str) -> IpCidr {
    let (addr, prefix) = text.split_once('/').unwrap();
    IpCidr {
        addr: addr.parse().unwrap(),
        prefix: prefix.parse().unwrap(),
    }
}

/// An `AF_PACKET` socket bound to one interface, every protocol.
pub struct PacketSocket {
    fd: OwnedFd,
    index: u32,
}

impl PacketSocket {
    /// Binds to interface `index`.
    pub fn bind(index: u32) -> PacketSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket takes no pointers.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(raw >= 0, "packet socket: {}", io::Error::last_os_error());
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = sockaddr(index, proto);
        // SAFETY: bind reads a live sockaddr_ll of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        PacketSocket { fd, index }
    }

    /// Sends one Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) {
        let addr = sockaddr(self.index, 0);
        // SAFETY: sendto reads `frame` and a live sockaddr_ll of the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(sent, frame.len() as isize, "{}", io::Error::last_os_error());
    }

    /// Waits up to `timeout` for a frame arriving (not leaving) that contains `marker`.
    pub fn catch(&self, marker: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while wait_readable(&self.fd, end) {
            // SAFETY: sockaddr_ll is plain old data; zeroes are valid.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: recvfrom writes at most `buf.len()` bytes into `buf` and at most
            // `len` bytes into `from`, both live.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &raw mut len,
                )
            };
            if n <= 0 {
                continue;
            }
            let frame = &buf[..n as usize];
            if from.sll_pkttype != libc::PACKET_OUTGOING && contains(frame, marker) {
                return Some(frame.to_vec());
            }
        }
        None
    }
}

fn sockaddr(index: u32, proto: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; zeroes are valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    addr
}

/// Waits until `fd` is readable or `end` passes; whether it is readable.
pub fn wait_readable(fd: &impl AsRawFd, end: Instant) -> bool {
    let left = end.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one live pollfd.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, left.as_millis().max(1) as i32) };
    rc > 0
}

/// Whether `marker` appears in `data`.
pub fn contains(data: &[u8], marker: &[u8]) -> bool {
    data.windows(marker.len()).any(|w| w == marker)
}

/// An Ethernet frame from `src` to `dst` of the local experimental EtherType carrying
/// `payload`.
pub fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}
