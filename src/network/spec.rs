//! The guest's [`NetSpec`] from a [`Scan`]: one NIC per interface that was given a
//! virtio-net slot, the routes and neighbours over those NICs, everything cut to the bounds
//! the guest accepts, so that [`NetSpec::validate`] passes.

use guest_init::netspec::{
    MAX_ADDRESSES, MAX_NEIGHBOURS, MAX_NICS, MAX_ROUTES, NeighbourSpec, NetSpec, NicSpec,
    RouteSpec, valid_ifname,
};

use super::scan::Scan;

/// The MTUs a guest NIC may have.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

impl Scan {
    /// The guest's network: the interfaces `slot_of` gives a slot (an interface without
    /// one, with a slot out of range or taken, an unusable name or MTU is left out), with
    /// their addresses, routes and neighbours, cut to the `MAX_*` bounds.
    pub fn to_netspec(&self, slot_of: impl Fn(&str) -> Option<u32>) -> NetSpec {
        let mut nics: Vec<NicSpec> = Vec::new();
        let mut indexes = Vec::new();
        for iface in &self.interfaces {
            if nics.len() == MAX_NICS {
                break;
            }
            let Some(slot) = slot_of(&iface.name) else {
                continue;
            };
            if slot as usize >= MAX_NICS
                || nics.iter().any(|n| n.slot == slot || n.name == iface.name)
                || !valid_ifname(&iface.name)
                || !MTU_RANGE.contains(&iface.mtu)
            {
                continue;
            }
            nics.push(NicSpec {
                slot,
                name: iface.name.clone(),
                mac: iface.mac,
                mtu: iface.mtu,
                addresses: iface
                    .addresses
                    .iter()
                    .filter(|a| a.is_valid())
                    .take(MAX_ADDRESSES)
                    .copied()
                    .collect(),
            });
            indexes.push(iface.index);
        }
        let dev = |ifindex: u32| {
            let at = indexes.iter().position(|&i| i == ifindex)?;
            Some(nics[at].name.clone())
        };
        let routes = self
            .routes
            .iter()
            .filter(|r| r.dst.is_none_or(|d| d.is_valid()))
            .filter_map(|r| {
                Some(RouteSpec {
                    dst: r.dst,
                    gateway: r.gateway,
                    v6: r.v6,
                    dev: dev(r.ifindex)?,
                    metric: r.metric,
                })
            })
            .take(MAX_ROUTES)
            .collect();
        let neighbours = self
            .neighbours
            .iter()
            .filter_map(|n| {
                Some(NeighbourSpec {
                    ip: n.ip,
                    mac: n.mac,
                    dev: dev(n.ifindex)?,
                })
            })
            .take(MAX_NEIGHBOURS)
            .collect();
        NetSpec {
            nics,
            routes,
            neighbours,
            dns_relay: Vec::new(),
            publish_listeners: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use guest_init::netspec::IpCidr;

    use super::*;
    use crate::network::scan::{Interface, Neighbour, Route};

    fn iface(index: u32, name: &str, addresses: usize) -> Interface {
        Interface {
            index,
            name: name.into(),
            mac: [2, 0, 0, 0, 0, index as u8],
            mtu: 1500,
            up: true,
            oper_up: true,
            kind: Some("veth".into()),
            addresses: (0..addresses)
                .map(|i| IpCidr {
                    addr: IpAddr::from([10, index as u8, (i >> 8) as u8, i as u8]),
                    prefix: 8,
                })
                .collect(),
        }
    }

    fn default_route(ifindex: u32) -> Route {
        Route {
            dst: None,
            gateway: Some(IpAddr::from([10, ifindex as u8, 0, 1])),
            v6: false,
            ifindex,
            metric: None,
        }
    }

    #[test]
    fn a_docker_namespace_becomes_one_nic() {
        let scan = Scan {
            interfaces: vec![iface(2, "eth0", 1), iface(3, "eth1", 1)],
            routes: vec![default_route(2), default_route(3)],
            neighbours: vec![Neighbour {
                ip: IpAddr::from([10, 2, 0, 9]),
                mac: [2, 9, 9, 9, 9, 9],
                ifindex: 2,
            }],
        };
        let spec = scan.to_netspec(|name| (name == "eth0").then_some(0));
        spec.validate().unwrap();
        assert_eq!(spec.nics.len(), 1);
        assert_eq!(spec.nics[0].name, "eth0");
        assert_eq!(spec.nics[0].mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(spec.routes.len(), 1);
        assert_eq!(spec.routes[0].dev, "eth0");
        assert_eq!(spec.neighbours[0].dev, "eth0");
    }

    #[test]
    fn everything_is_cut_to_the_bounds() {
        let interfaces: Vec<_> = (0..12)
            .map(|i| iface(i + 2, &format!("eth{i}"), 40))
            .collect();
        let routes = (0..300).map(|i| default_route(2 + i % 12)).collect();
        let neighbours = (0..300)
            .map(|i| Neighbour {
                ip: IpAddr::from([10, 2, 1, i as u8]),
                mac: [2, 0, 0, 0, 1, 1],
                ifindex: 2,
            })
            .collect();
        let scan = Scan {
            interfaces,
            routes,
            neighbours,
        };
        // Every name gets a slot from its number: 8..11 are out of range.
        let spec = scan.to_netspec(|name| name[3..].parse().ok());
        spec.validate().unwrap();
        assert_eq!(spec.nics.len(), MAX_NICS);
        assert!(spec.nics.iter().all(|n| n.addresses.len() == MAX_ADDRESSES));
        assert_eq!(spec.routes.len(), MAX_ROUTES);
        assert_eq!(spec.neighbours.len(), MAX_NEIGHBOURS);
    }

    #[test]
    fn taken_or_bad_slots_names_and_mtus_are_left_out() {
        let mut tiny = iface(4, "eth2", 0);
        tiny.mtu = 40;
        let scan = Scan {
            interfaces: vec![
                iface(2, "eth0", 1),
                iface(3, "eth1", 1),
                tiny,
                iface(5, "eth3", 0),
            ],
            routes: vec![default_route(3)],
            neighbours: vec![],
        };
        let spec = scan.to_netspec(|name| match name {
            "eth0" | "eth1" | "eth2" => Some(0),
            _ => Some(99),
        });
        spec.validate().unwrap();
        assert_eq!(spec.nics.len(), 1);
        assert_eq!(spec.nics[0].name, "eth0");
        // The route over eth1, which got no NIC, is gone with it.
        assert!(spec.routes.is_empty());
        assert_eq!(Scan::default().to_netspec(|_| Some(0)), NetSpec::default());
    }
}
