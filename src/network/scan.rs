//! What the calling thread's network namespace holds for the guest: the Ethernet interfaces
//! to wire (not `lo`, not our own taps, not ports of a bridge or bond), their addresses
//! (link-local IPv6 and host-scope ones are the guest kernel's own business), the routes of
//! the main table over them (not those the kernel derives from an address, not local,
//! broadcast or multicast ones), and their permanent neighbours.

use std::net::{IpAddr, Ipv6Addr};

use guest_init::netspec::IpCidr;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage, State,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::Netlink;
use super::tap::TAP_PREFIX;
use super::{NetworkError, link};

/// One interface to wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its index in the namespace.
    pub index: u32,
    /// Its name (`eth0`).
    pub name: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is administratively up (`IFF_UP`).
    pub up: bool,
    /// Whether it can carry traffic now (operational state up).
    pub oper_up: bool,
    /// Its link kind (`veth`, `macvlan`, `ipvlan`...), when the kernel says.
    pub kind: Option<String>,
    /// Its addresses, v4 and v6, in the kernel's order.
    pub addresses: Vec<IpCidr>,
}

/// One route over a wired interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination; `None` is the default route.
    pub dst: Option<IpCidr>,
    /// The next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Whether it is an IPv6 route.
    pub v6: bool,
    /// The output interface's index.
    pub ifindex: u32,
    /// Its metric, if set.
    pub metric: Option<u32>,
}

/// One permanent neighbour entry on a wired interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: [u8; 6],
    /// The interface's index.
    pub ifindex: u32,
}

/// The namespace's network as the guest should see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// The interfaces to wire, in index order.
    pub interfaces: Vec<Interface>,
    /// Routes over them.
    pub routes: Vec<Route>,
    /// Permanent neighbours on them.
    pub neighbours: Vec<Neighbour>,
}

/// Scans the calling thread's network namespace.
pub fn scan() -> Result<Scan, NetworkError> {
    let mut nl = link::open()?;
    let links = dump(
        &mut nl,
        "links",
        RouteNetlinkMessage::GetLink(Default::default()),
    )?;
    let addresses = dump(
        &mut nl,
        "addresses",
        RouteNetlinkMessage::GetAddress(Default::default()),
    )?;
    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut ask = RouteMessage::default();
        ask.header.address_family = family;
        ask.header.table = RouteHeader::RT_TABLE_MAIN;
        routes.extend(dump(&mut nl, "routes", RouteNetlinkMessage::GetRoute(ask))?);
    }
    let neighbours = dump(
        &mut nl,
        "neighbours",
        RouteNetlinkMessage::GetNeighbour(Default::default()),
    )?;
    Ok(Scan::from_messages(
        &links,
        &addresses,
        &routes,
        &neighbours,
    ))
}

fn dump(
    nl: &mut Netlink,
    what: &'static str,
    ask: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, NetworkError> {
    nl.dump(ask)
        .map_err(|source| NetworkError::Scan { what, source })
}

impl Scan {
    /// Builds the scan from the kernel's dumps (messages of other kinds are ignored).
    pub fn from_messages(
        links: &[RouteNetlinkMessage],
        addresses: &[RouteNetlinkMessage],
        routes: &[RouteNetlinkMessage],
        neighbours: &[RouteNetlinkMessage],
    ) -> Scan {
        let mut interfaces: Vec<Interface> = links
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => interface_of(l),
                _ => None,
            })
            .collect();
        for m in addresses {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            let Some(cidr) = address_of(a) else {
                continue;
            };
            if let Some(i) = interfaces.iter_mut().find(|i| i.index == a.header.index) {
                i.addresses.push(cidr);
            }
        }
        let wired = |index: u32| interfaces.iter().any(|i| i.index == index);
        let routes = routes
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_of(r),
                _ => None,
            })
            .filter(|r| wired(r.ifindex))
            .collect();
        let neighbours = neighbours
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => neighbour_of(n),
                _ => None,
            })
            .filter(|n| wired(n.ifindex))
            .collect();
        Scan {
            interfaces,
            routes,
            neighbours,
        }
    }
}

/// The interface a link stands for, if it is one to wire.
pub(crate) fn interface_of(link: &LinkMessage) -> Option<Interface> {
    if link.header.link_layer_type != LinkLayerType::Ether {
        return None;
    }
    let mut name = None;
    let mut mac = None;
    let mut mtu = 1500;
    let mut oper = State::Unknown;
    let mut kind = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::OperState(s) => oper = *s,
            // A port of a bridge or bond in the namespace is its controller's business.
            LinkAttribute::Controller(_) => return None,
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    let name = name?;
    if name == "lo" || name.starts_with(TAP_PREFIX) {
        return None;
    }
    let flags = link.header.flags;
    Some(Interface {
        index: link.header.index,
        name,
        mac: mac?,
        mtu,
        up: flags.contains(LinkFlags::Up),
        oper_up: oper == State::Up
            || (oper == State::Unknown && flags.contains(LinkFlags::LowerUp)),
        kind,
        addresses: Vec::new(),
    })
}

/// An address to give the guest, if it is one.
pub(crate) fn address_of(msg: &AddressMessage) -> Option<IpCidr> {
    if msg.header.scope == AddressScope::Host {
        return None;
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS the peer's on point-to-point
    // links); IPv6 has IFA_ADDRESS only.
    let mut address = None;
    let mut local = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    let addr = local.or(address)?;
    if let IpAddr::V6(v6) = addr
        && is_link_local(&v6)
    {
        return None;
    }
    let cidr = IpCidr {
        addr,
        prefix: msg.header.prefix_len,
    };
    cidr.is_valid().then_some(cidr)
}

/// A route to give the guest, if it is one (its output interface is not checked here).
pub(crate) fn route_of(msg: &RouteMessage) -> Option<Route> {
    let h = &msg.header;
    if h.kind != RouteType::Unicast || h.protocol == RouteProtocol::Kernel {
        return None;
    }
    let v6 = match h.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let mut table = u32::from(h.table);
    let mut dst = None;
    let mut gateway = None;
    let mut ifindex = None;
    let mut metric = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = ip_of(a),
            RouteAttribute::Gateway(a) => gateway = Some(ip_of(a)?),
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            // A next hop of the other family, or several: not a shape the guest takes.
            RouteAttribute::Via(_) | RouteAttribute::MultiPath(_) => return None,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let prefix = h.destination_prefix_length;
    let dst = match (dst, prefix) {
        (_, 0) => None,
        (Some(addr), prefix) => Some(IpCidr { addr, prefix }),
        (None, _) => return None,
    };
    if let Some(IpCidr {
        addr: IpAddr::V6(a),
        prefix,
    }) = dst
        && ((is_link_local(&a) && prefix >= 10) || (a.is_multicast() && prefix >= 8))
    {
        return None;
    }
    if dst.is_some_and(|d| !d.is_valid() || d.addr.is_ipv6() != v6) {
        return None;
    }
    Some(Route {
        dst,
        gateway,
        v6,
        ifindex: ifindex?,
        metric,
    })
}

/// A permanent neighbour, if the entry is one.
pub(crate) fn neighbour_of(msg: &NeighbourMessage) -> Option<Neighbour> {
    if msg.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some((*a).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => ip = Some((*a).into()),
            NeighbourAttribute::LinkLayerAddress(m) => mac = <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        ip: ip?,
        mac: mac?,
        ifindex: msg.header.ifindex,
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}

/// Whether `a` is in fe80::/10.
fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::InfoKind;
    use netlink_packet_route::route::RouteScope;

    use super::*;

    fn link(index: u32, name: &str, layer: LinkLayerType) -> RouteNetlinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.header.link_layer_type = layer;
        l.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        l.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, index as u8]),
            LinkAttribute::Mtu(1450),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        RouteNetlinkMessage::NewLink(l)
    }

    fn address(index: u32, addr: &str, prefix: u8, scope: AddressScope) -> RouteNetlinkMessage {
        let addr: IpAddr = addr.parse().unwrap();
        let mut a = AddressMessage::default();
        a.header.index = index;
        a.header.prefix_len = prefix;
        a.header.scope = scope;
        a.header.family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        a.attributes.push(AddressAttribute::Address(addr));
        if addr.is_ipv4() {
            a.attributes.push(AddressAttribute::Local(addr));
        }
        RouteNetlinkMessage::NewAddress(a)
    }

    fn route(
        dst: Option<(&str, u8)>,
        gateway: Option<&str>,
        oif: u32,
        protocol: RouteProtocol,
        kind: RouteType,
    ) -> RouteNetlinkMessage {
        let mut r = RouteMessage::default();
        let v6 = dst.is_some_and(|d| d.0.contains(':')) || gateway.is_some_and(|g| g.contains(':'));
        r.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.header.protocol = protocol;
        r.header.kind = kind;
        r.header.scope = RouteScope::Universe;
        if let Some((d, p)) = dst {
            r.header.destination_prefix_length = p;
            let ip: IpAddr = d.parse().unwrap();
            r.attributes.push(RouteAttribute::Destination(ip.into()));
        }
        if let Some(g) = gateway {
            let ip: IpAddr = g.parse().unwrap();
            r.attributes.push(RouteAttribute::Gateway(ip.into()));
        }
        r.attributes.push(RouteAttribute::Table(254));
        r.attributes.push(RouteAttribute::Oif(oif));
        RouteNetlinkMessage::NewRoute(r)
    }

    fn neighbour(index: u32, ip: &str, state: NeighbourState) -> RouteNetlinkMessage {
        let ip: IpAddr = ip.parse().unwrap();
        let mut n = NeighbourMessage::default();
        n.header.ifindex = index;
        n.header.state = state;
        n.attributes
            .push(NeighbourAttribute::Destination(ip.into()));
        n.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 1, 2, 3, 4, 5]));
        RouteNetlinkMessage::NewNeighbour(n)
    }

    #[test]
    fn only_ethernet_links_other_than_lo_and_our_taps_are_wired() {
        let links = [
            link(1, "lo", LinkLayerType::Loopback),
            link(2, "eth0", LinkLayerType::Ether),
            link(3, "rvtap0", LinkLayerType::Ether),
            link(4, "wg0", LinkLayerType::None),
        ];
        let scan = Scan::from_messages(&links, &[], &[], &[]);
        assert_eq!(scan.interfaces.len(), 1);
        let eth0 = &scan.interfaces[0];
        assert_eq!(
            (
                eth0.index,
                eth0.name.as_str(),
                eth0.mtu,
                eth0.kind.as_deref()
            ),
            (2, "eth0", 1450, Some("veth"))
        );
        assert_eq!(eth0.mac, [2, 0, 0, 0, 0, 2]);
        assert!(eth0.up && eth0.oper_up);

        let RouteNetlinkMessage::NewLink(mut port) = link(5, "eth1", LinkLayerType::Ether) else {
            unreachable!()
        };
        port.attributes.push(LinkAttribute::Controller(9));
        assert_eq!(interface_of(&port), None);
    }

    #[test]
    fn link_local_and_host_addresses_stay_out() {
        let links = [link(2, "eth0", LinkLayerType::Ether)];
        let addresses = [
            address(2, "172.17.0.2", 16, AddressScope::Universe),
            address(2, "fe80::1", 64, AddressScope::Link),
            address(2, "fd00::2", 64, AddressScope::Universe),
            address(2, "127.0.0.9", 8, AddressScope::Host),
            address(1, "127.0.0.1", 8, AddressScope::Host),
            address(7, "10.0.0.1", 8, AddressScope::Universe),
        ];
        let scan = Scan::from_messages(&links, &addresses, &[], &[]);
        let got: Vec<String> = scan.interfaces[0]
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["172.17.0.2/16", "fd00::2/64"]);
    }

    #[test]
    fn kernel_local_and_link_local_routes_stay_out() {
        use RouteProtocol::{Boot, Kernel, Ra};
        use RouteType::{Local, Multicast, Unicast};
        let links = [link(2, "eth0", LinkLayerType::Ether)];
        let routes = [
            route(None, Some("172.17.0.1"), 2, Boot, Unicast),
            route(Some(("172.17.0.0", 16)), None, 2, Kernel, Unicast),
            route(
                Some(("10.9.0.0", 16)),
                Some("172.17.0.254"),
                2,
                Boot,
                Unicast,
            ),
            route(Some(("172.17.0.2", 32)), None, 2, Boot, Local),
            route(Some(("fe80::", 64)), None, 2, Boot, Unicast),
            route(Some(("ff00::", 8)), None, 2, Boot, Multicast),
            route(Some(("ff00::", 8)), None, 2, Boot, Unicast),
            route(None, Some("fe80::1"), 2, Ra, Unicast),
            route(None, Some("10.0.0.1"), 3, Boot, Unicast),
        ];
        let scan = Scan::from_messages(&links, &[], &routes, &[]);
        let got: Vec<_> = scan
            .routes
            .iter()
            .map(|r| (r.dst.map(|d| d.to_string()), r.gateway, r.v6))
            .collect();
        assert_eq!(
            got,
            [
                (None, Some("172.17.0.1".parse().unwrap()), false),
                (
                    Some("10.9.0.0/16".into()),
                    Some("172.17.0.254".parse().unwrap()),
                    false
                ),
                (None, Some("fe80::1".parse().unwrap()), true),
            ]
        );
        let RouteNetlinkMessage::NewRoute(mut other_table) =
            route(None, Some("172.17.0.1"), 2, Boot, Unicast)
        else {
            unreachable!()
        };
        other_table.attributes.push(RouteAttribute::Table(100));
        assert_eq!(route_of(&other_table), None);
    }

    #[test]
    fn only_permanent_neighbours_on_wired_links_count() {
        let links = [link(2, "eth0", LinkLayerType::Ether)];
        let neighbours = [
            neighbour(2, "172.17.0.9", NeighbourState::Permanent),
            neighbour(2, "172.17.0.8", NeighbourState::Reachable),
            neighbour(3, "10.0.0.9", NeighbourState::Permanent),
            neighbour(2, "fd00::9", NeighbourState::Permanent),
        ];
        let scan = Scan::from_messages(&links, &[], &[], &neighbours);
        let got: Vec<String> = scan.neighbours.iter().map(|n| n.ip.to_string()).collect();
        assert_eq!(got, ["172.17.0.9", "fd00::9"]);
        assert_eq!(scan.neighbours[0].mac, [2, 1, 2, 3, 4, 5]);
    }
}
