//! Our routes in the main table (RTM_GETROUTE, RTM_NEWROUTE, RTM_DELROUTE): the spec's routes
//! added, and the routes over our interfaces that are neither the kernel's (made for an
//! address, protocol `kernel`) nor in the spec removed. Routes are compared by what makes
//! them one route to the kernel: destination, gateway, interface, metric (and TOS).
//!
//! A missing route is added with NLM_F_CREATE alone: NLM_F_REPLACE would make an IPv4 route
//! take the place of another with the same destination and metric, such as a second NIC's
//! default route. Routes without a gateway go first: a gateway must be reachable.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use guest_init::netlink::{Netlink, NetlinkError};
use guest_init::netspec::RouteSpec;
use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::nics::Nic;

/// The kernel's metric for an IPv6 route added without one (IP6_RT_PRIO_USER).
const V6_DEFAULT_METRIC: u32 = 1024;
/// The main routing table.
const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// What makes a route one route: its family is the destination's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey {
    /// The destination, host bits cleared (unspecified for a default route).
    pub dst: IpAddr,
    /// The destination's prefix length.
    pub prefix: u8,
    /// The next hop, if any.
    pub gateway: Option<IpAddr>,
    /// The outgoing interface's index.
    pub oif: u32,
    /// The metric (priority) as the kernel keeps it.
    pub metric: u32,
    /// The type of service.
    pub tos: u8,
}

/// One route of the main table (one per next hop of a multipath route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What makes it one route.
    pub key: RouteKey,
    /// Whether the kernel made it (for an address).
    pub kernel: bool,
    /// Its header as dumped, to delete it with.
    header: RouteHeader,
}

/// Makes the routes over `nics` the spec's `routes`.
pub fn reconcile(nl: &mut Netlink, nics: &[Nic], routes: &[RouteSpec]) -> Result<(), String> {
    let mut wanted = Vec::with_capacity(routes.len());
    for r in routes {
        let nic = nics
            .iter()
            .find(|n| n.wanted.is_some_and(|w| w.name == r.dev))
            .ok_or_else(|| format!("route over unknown interface {:?}", r.dev))?;
        wanted.push(key_of(r, nic.link.index)?);
    }
    let ours: Vec<u32> = nics.iter().map(|n| n.link.index).collect();
    let name = |index: u32| {
        nics.iter()
            .find(|n| n.link.index == index)
            .map_or("?", |n| n.link.name.as_str())
    };
    let current = dump(nl).map_err(|e| format!("cannot list routes: {e}"))?;
    let (remove, missing) = diff(&current, &ours, &wanted);
    for route in remove {
        match delete(nl, route) {
            Err(e) if e.errno() != Some(libc::ESRCH) => {
                let text = describe(&route.key, name(route.key.oif));
                return Err(format!("cannot remove route {text}: {e}"));
            }
            _ => {}
        }
    }
    for key in &missing {
        match add(nl, key) {
            Err(e) if e.errno() != Some(libc::EEXIST) => {
                let text = describe(key, name(key.oif));
                return Err(format!("cannot add route {text}: {e}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The routes to remove (ours, over `ours`, not `wanted`) and the wanted ones to add (not
/// in `current`), those without a gateway first.
pub fn diff<'a>(
    current: &'a [Route],
    ours: &[u32],
    wanted: &[RouteKey],
) -> (Vec<&'a Route>, Vec<RouteKey>) {
    let remove = current
        .iter()
        .filter(|r| !r.kernel && ours.contains(&r.key.oif) && !wanted.contains(&r.key))
        .collect();
    let mut add: Vec<RouteKey> = Vec::new();
    for w in wanted {
        if !current.iter().any(|r| r.key == *w) && !add.contains(w) {
            add.push(*w);
        }
    }
    add.sort_by_key(|k| k.gateway.is_some());
    (remove, add)
}

/// The key of route `r` over interface `oif`.
pub fn key_of(r: &RouteSpec, oif: u32) -> Result<RouteKey, String> {
    let v6 = match (r.dst, r.gateway) {
        (Some(d), Some(g)) if d.addr.is_ipv6() != g.is_ipv6() => {
            return Err(format!(
                "route to {d} via {g}: the gateway's family differs"
            ));
        }
        (Some(d), _) => d.addr.is_ipv6(),
        (None, Some(g)) => g.is_ipv6(),
        (None, None) => r.v6,
    };
    let (dst, prefix) = match r.dst {
        Some(d) => (masked(d.addr, d.prefix), d.prefix),
        None if v6 => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    };
    let metric = match r.metric {
        None | Some(0) if v6 => V6_DEFAULT_METRIC,
        m => m.unwrap_or(0),
    };
    Ok(RouteKey {
        dst,
        prefix,
        gateway: r.gateway,
        oif,
        metric,
        tos: 0,
    })
}

/// `addr` with the bits past `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// `key` as `ip route` would show it, over interface `dev`.
pub fn describe(key: &RouteKey, dev: &str) -> String {
    let mut text = if key.prefix == 0 {
        "default".to_owned()
    } else {
        format!("{}/{}", key.dst, key.prefix)
    };
    if let Some(g) = key.gateway {
        text.push_str(&format!(" via {g}"));
    }
    text.push_str(&format!(" dev {dev} metric {}", key.metric));
    text
}

/// Lists the IPv4 and IPv6 unicast routes of the main table.
pub fn dump(nl: &mut Netlink) -> Result<Vec<Route>, NetlinkError> {
    let mut all = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        for answer in nl.dump(RouteNetlinkMessage::GetRoute(request))? {
            if let RouteNetlinkMessage::NewRoute(m) = answer
                && m.header.address_family == family
            {
                all.extend(from_message(&m));
            }
        }
    }
    Ok(all)
}

/// The main-table unicast routes an RTM_NEWROUTE message describes, one per next hop.
fn from_message(m: &RouteMessage) -> Vec<Route> {
    let h = &m.header;
    let v6 = h.address_family == AddressFamily::Inet6;
    let mut table = u32::from(h.table);
    let mut dst = None;
    let mut hop = (None, None);
    let mut hops = Vec::new();
    let mut metric = 0;
    for attribute in &m.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = ip(a),
            RouteAttribute::Gateway(a) => hop.0 = ip(a),
            RouteAttribute::Oif(i) => hop.1 = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(next) => {
                for n in next {
                    let gateway = n.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(a) => ip(a),
                        _ => None,
                    });
                    hops.push((gateway, Some(n.interface_index)));
                }
            }
            _ => {}
        }
    }
    if table != MAIN_TABLE || h.kind != RouteType::Unicast {
        return Vec::new();
    }
    if hops.is_empty() {
        hops.push(hop);
    }
    let unspecified = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    hops.into_iter()
        .filter_map(|(gateway, oif)| {
            Some(Route {
                key: RouteKey {
                    dst: dst.unwrap_or(unspecified),
                    prefix: h.destination_prefix_length,
                    gateway,
                    oif: oif?,
                    metric,
                    tos: h.tos,
                },
                kernel: h.protocol == RouteProtocol::Kernel,
                header: h.clone(),
            })
        })
        .collect()
}

/// The IP address of a route attribute's address.
fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Adds the route `key`, ours (protocol `static`).
fn add(nl: &mut Netlink, key: &RouteKey) -> Result<(), NetlinkError> {
    let mut header = RouteHeader {
        address_family: family(&key.dst),
        destination_prefix_length: key.prefix,
        tos: key.tos,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Static,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    if key.gateway.is_none() && key.dst.is_ipv4() {
        header.scope = RouteScope::Link;
    }
    let m = message(header, key);
    nl.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE)
}

/// Deletes `route`.
fn delete(nl: &mut Netlink, route: &Route) -> Result<(), NetlinkError> {
    let mut header = route.header.clone();
    header.flags = Default::default();
    let m = message(header, &route.key);
    nl.request(RouteNetlinkMessage::DelRoute(m), 0)
}

/// A route message of `header` with the attributes of `key`.
fn message(header: RouteHeader, key: &RouteKey) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = header;
    if key.prefix > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(key.dst)));
    }
    if let Some(g) = key.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    m.attributes.push(RouteAttribute::Oif(key.oif));
    m.attributes.push(RouteAttribute::Priority(key.metric));
    m
}

/// The address family of `ip`.
fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

#[cfg(test)]
mod tests {
    use guest_init::netspec::IpCidr;

    use super::*;

    fn spec(dst: Option<&str>, gateway: Option<&str>, v6: bool, metric: Option<u32>) -> RouteSpec {
        RouteSpec {
            dst: dst.map(|d| {
                let (a, p) = d.split_once('/').unwrap();
                IpCidr {
                    addr: a.parse().unwrap(),
                    prefix: p.parse().unwrap(),
                }
            }),
            gateway: gateway.map(|g| g.parse().unwrap()),
            v6,
            dev: "eth0".into(),
            metric,
        }
    }

    fn route(key: RouteKey, kernel: bool) -> Route {
        Route {
            key,
            kernel,
            header: RouteHeader::default(),
        }
    }

    #[test]
    fn keys_normalise_family_destination_and_metric() {
        let k = key_of(&spec(None, Some("10.0.0.1"), true, None), 3).unwrap();
        assert_eq!(k.dst, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((k.prefix, k.metric, k.oif), (0, 0, 3));
        let k = key_of(&spec(None, None, true, Some(0)), 3).unwrap();
        assert_eq!(k.dst, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(k.metric, V6_DEFAULT_METRIC);
        let k = key_of(&spec(Some("10.1.2.3/16"), None, false, Some(7)), 3).unwrap();
        assert_eq!((k.dst.to_string(), k.metric), ("10.1.0.0".into(), 7));
        let k = key_of(&spec(Some("fd00:1:2:3::9/48"), None, false, None), 3).unwrap();
        assert_eq!(k.dst.to_string(), "fd00:1:2::");
        assert!(key_of(&spec(Some("10.0.0.0/8"), Some("fd00::1"), false, None), 3).is_err());
        assert_eq!(masked("1.2.3.4".parse().unwrap(), 0).to_string(), "0.0.0.0");
        assert_eq!(
            masked("1.2.3.4".parse().unwrap(), 32).to_string(),
            "1.2.3.4"
        );
    }

    #[test]
    fn the_diff_removes_only_our_stale_routes_and_adds_direct_ones_first() {
        let default = key_of(&spec(None, Some("10.0.0.1"), false, None), 3).unwrap();
        let onlink = key_of(&spec(Some("10.0.0.1/32"), None, false, None), 3).unwrap();
        let stale = key_of(&spec(None, Some("10.0.0.9"), false, None), 3).unwrap();
        let subnet = key_of(&spec(Some("10.0.0.0/24"), None, false, None), 3).unwrap();
        let foreign = RouteKey { oif: 9, ..stale };
        let current = [
            route(stale, false),
            route(subnet, true),
            route(foreign, false),
        ];
        let (remove, add) = diff(&current, &[3], &[default, onlink, onlink, subnet]);
        assert_eq!(remove, [&current[0]]);
        assert_eq!(add, [onlink, default]);
        assert_eq!(
            describe(&default, "eth0"),
            "default via 10.0.0.1 dev eth0 metric 0"
        );
    }

    #[test]
    fn multipath_routes_give_one_route_per_hop() {
        use netlink_packet_route::route::RouteNextHop;
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet6;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = RouteType::Unicast;
        m.header.protocol = RouteProtocol::Static;
        let hop = |index: u32, gw: &str| {
            let mut n = RouteNextHop::default();
            n.interface_index = index;
            n.attributes = vec![RouteAttribute::Gateway(RouteAddress::from(
                gw.parse::<IpAddr>().unwrap(),
            ))];
            n
        };
        m.attributes = vec![
            RouteAttribute::Priority(1024),
            RouteAttribute::MultiPath(vec![hop(3, "fd00::1"), hop(4, "fd01::1")]),
        ];
        let routes = from_message(&m);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].key.oif, 4);
        assert_eq!(routes[1].key.gateway, Some("fd01::1".parse().unwrap()));
        assert!(!routes[0].kernel);
        m.header.table = 255;
        assert!(from_message(&m).is_empty());
    }
}
