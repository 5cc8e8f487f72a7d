//! What the guest's one NIC is given when the container shares the host's network: the
//! host's interface of the default route, as passt presents it (passt takes the same one):
//! its name, its addresses (link-local ones aside: the guest makes its own) and its routes,
//! with passt's MTU and the slot's placeholder MAC (passt answers as the host's MAC itself,
//! and learns the guest's from its frames).

use std::net::IpAddr;

use guest_init::netspec::{MAX_ADDRESSES, MAX_ROUTES, NetSpec, NicSpec, RouteSpec, slot_mac};

use crate::network::scan::{Route, Scan};

/// The MTU of the guest's NIC towards passt: passt's own default (the largest 802.3 MTU
/// less the Ethernet header, rounded down to 32 bits). Frames that large cost passt and the
/// guest one copy each; passt segments for the real network itself.
pub const PASST_MTU: u32 = 65520;

/// The NIC of `slot` as the host's default-route interface of `scan`, or `None` when the
/// host has no default route (passt then has nothing to connect through).
pub fn host_netspec(scan: &Scan, slot: u32) -> Option<NetSpec> {
    let default = |v6: bool| {
        scan.routes
            .iter()
            .filter(|r| r.dst.is_none() && r.v6 == v6)
            .min_by_key(|r| r.metric.unwrap_or(0))
    };
    let via: &Route = default(false).or_else(|| default(true))?;
    let iface = scan.interfaces.iter().find(|i| i.index == via.ifindex)?;
    let addresses = iface
        .addresses
        .iter()
        .filter(|a| a.is_valid() && !is_link_local(a.addr))
        .take(MAX_ADDRESSES)
        .copied()
        .collect();
    let routes = scan
        .routes
        .iter()
        .filter(|r| r.ifindex == iface.index)
        .filter(|r| r.dst.is_none_or(|d| d.is_valid() && !is_link_local(d.addr)))
        .take(MAX_ROUTES)
        .map(|r| RouteSpec {
            dst: r.dst,
            gateway: r.gateway,
            v6: r.v6,
            dev: iface.name.clone(),
            metric: r.metric,
        })
        .collect();
    Some(NetSpec {
        nics: vec![NicSpec {
            slot,
            name: iface.name.clone(),
            mac: slot_mac(slot),
            mtu: PASST_MTU,
            addresses,
        }],
        routes,
        neighbours: Vec::new(),
        dns_relay: Vec::new(),
        publish_listeners: true,
    })
}

/// IPv6 link-local (fe80::/10) and multicast addresses, which the guest's kernel sets up
/// on its own.
fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(_) => false,
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80 || a.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use guest_init::netspec::IpCidr;

    use super::*;
    use crate::network::scan::Interface;

    fn cidr(s: &str) -> IpCidr {
        let (a, p) = s.split_once('/').unwrap();
        IpCidr {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }
    }

    fn iface(index: u32, name: &str, addrs: &[&str]) -> Interface {
        Interface {
            index,
            name: name.into(),
            mac: [2, 0, 0, 0, 0, index as u8],
            mtu: 1500,
            up: true,
            oper_up: true,
            kind: None,
            addresses: addrs.iter().map(|a| cidr(a)).collect(),
        }
    }

    fn route(dst: Option<&str>, gw: Option<&str>, ifindex: u32, metric: Option<u32>) -> Route {
        let dst = dst.map(cidr);
        Route {
            v6: matches!(dst.map(|d| d.addr), Some(IpAddr::V6(_)))
                || gw.is_some_and(|g| g.contains(':')),
            dst,
            gateway: gw.map(|g| g.parse().unwrap()),
            ifindex,
            metric,
        }
    }

    /// This machine's shape: eth0 with v4 and v6 defaults, docker0 beside it.
    fn host() -> Scan {
        Scan {
            interfaces: vec![
                iface(2, "eth0", &["192.0.2.2/24", "fd00::2/64", "fe80::1/64"]),
                iface(3, "docker0", &["172.17.0.1/16"]),
            ],
            routes: vec![
                route(None, Some("192.0.2.1"), 2, None),
                route(Some("192.0.2.0/24"), None, 2, None),
                route(Some("172.17.0.0/16"), None, 3, None),
                route(Some("fd00::/64"), None, 2, Some(256)),
                route(Some("fe80::/64"), None, 2, Some(256)),
                route(None, Some("fd00::1"), 2, Some(1024)),
            ],
            neighbours: Vec::new(),
        }
    }

    #[test]
    fn the_default_route_interface_becomes_the_nic() {
        let spec = host_netspec(&host(), 0).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.nics.len(), 1);
        let nic = &spec.nics[0];
        assert_eq!(
            (nic.slot, nic.name.as_str(), nic.mac, nic.mtu),
            (0, "eth0", slot_mac(0), PASST_MTU)
        );
        assert_eq!(nic.addresses, [cidr("192.0.2.2/24"), cidr("fd00::2/64")]);
        let routes: Vec<_> = spec
            .routes
            .iter()
            .map(|r| (r.dst.map(|d| d.addr.to_string()), r.gateway, r.dev.as_str()))
            .collect();
        assert_eq!(
            routes,
            [
                (None, Some("192.0.2.1".parse().unwrap()), "eth0"),
                (Some("192.0.2.0".into()), None, "eth0"),
                (Some("fd00::".into()), None, "eth0"),
                (None, Some("fd00::1".parse().unwrap()), "eth0"),
            ]
        );
        assert!(spec.publish_listeners);
    }

    #[test]
    fn the_lowest_metric_wins_and_v6_alone_will_do() {
        let mut scan = host();
        scan.interfaces.push(iface(4, "wlan0", &["10.1.0.5/24"]));
        scan.routes.push(route(None, Some("10.1.0.1"), 4, Some(0)));
        scan.routes[0].metric = Some(100);
        assert_eq!(host_netspec(&scan, 0).unwrap().nics[0].name, "wlan0");
        let v6_only = Scan {
            routes: host().routes.into_iter().filter(|r| r.v6).collect(),
            ..host()
        };
        assert_eq!(host_netspec(&v6_only, 0).unwrap().nics[0].name, "eth0");
    }

    #[test]
    fn no_default_route_no_nic() {
        let mut scan = host();
        scan.routes.retain(|r| r.dst.is_some());
        assert_eq!(host_netspec(&scan, 0), None);
    }
}
