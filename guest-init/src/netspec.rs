//! The guest's network as the host wants it: one entry per wired NIC (the guest interface of
//! virtio-net slot `slot`, given the name, MAC, MTU and addresses of the network-namespace
//! interface it stands for), the routes and neighbours over them. The host scans the
//! container's network namespace and sends the whole wanted state in
//! [`HostMessage::Network`](crate::protocol::HostMessage::Network); guest-init makes the guest
//! match it (a slot not listed is taken down and its addresses removed).
//!
//! Before it is wired, the NIC of slot N carries the placeholder MAC [`slot_mac`]`(N)` in its
//! config space: guest-init finds the slot's interface by that permanent address, whatever
//! name and MAC it has been given since.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The most NICs (virtio-net slots) a VM has.
pub const MAX_NICS: usize = 8;
/// The most addresses of one NIC.
pub const MAX_ADDRESSES: usize = 32;
/// The most routes in a [`NetSpec`].
pub const MAX_ROUTES: usize = 128;
/// The most neighbours in a [`NetSpec`].
pub const MAX_NEIGHBOURS: usize = 128;
/// The most resolver addresses relayed ([`NetSpec::dns_relay`]).
pub const MAX_DNS_RELAY: usize = 4;
/// The longest interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// The placeholder MAC of virtio-net slot `slot`: locally administered, unicast,
/// 02:72:76:6d:00:NN ("rvm").
pub fn slot_mac(slot: u32) -> [u8; 6] {
    [0x02, 0x72, 0x76, 0x6d, (slot >> 8) as u8, slot as u8]
}

/// An address with its prefix length (`10.0.0.2/16`, `fd00::2/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (at most 32 for v4, 128 for v6).
    pub prefix: u8,
}

impl IpCidr {
    /// Whether the prefix fits the address family.
    pub fn is_valid(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.prefix <= 32,
            IpAddr::V6(_) => self.prefix <= 128,
        }
    }
}

impl std::fmt::Display for IpCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One wired NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The virtio-net slot (0-based, in the order of the VM's virtio-net devices).
    pub slot: u32,
    /// The interface's name in the guest (the namespace interface's, `eth0`).
    pub name: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses, v4 and v6 (link-local v6 ones are the guest kernel's own).
    pub addresses: Vec<IpCidr>,
}

/// One route over a wired NIC (routes the kernel makes for an address are not listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The destination; `None` is the default route of the gateway's (or `v6`'s) family.
    pub dst: Option<IpCidr>,
    /// The next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Whether this is an IPv6 route (needed for a default route without gateway).
    pub v6: bool,
    /// The NIC's name ([`NicSpec::name`]).
    pub dev: String,
    /// The route's metric (priority), if set.
    pub metric: Option<u32>,
}

/// One permanent neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourSpec {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: [u8; 6],
    /// The NIC's name.
    pub dev: String,
}

/// The guest's whole wanted network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    /// The wired NICs.
    pub nics: Vec<NicSpec>,
    /// Routes.
    pub routes: Vec<RouteSpec>,
    /// Permanent neighbours.
    pub neighbours: Vec<NeighbourSpec>,
    /// Loopback addresses of the namespace where a resolver listens (docker's 127.0.0.11):
    /// the guest answers DNS there by relaying to the host ([`crate::dnsrelay`]).
    #[serde(default)]
    pub dns_relay: Vec<IpAddr>,
    /// The container shares the host's network: guest-init reports the TCP ports it listens
    /// on and serves the connections the host forwards to them ([`crate::portfwd`]).
    #[serde(default)]
    pub publish_listeners: bool,
}

impl NetSpec {
    /// Checks the bounds and shapes a receiver relies on: counts, names, slots, prefixes,
    /// MTUs; that every route and neighbour names a listed NIC; no slot or name twice.
    pub fn validate(&self) -> Result<(), String> {
        if self.nics.len() > MAX_NICS {
            return Err(format!("{} NICs (at most {MAX_NICS})", self.nics.len()));
        }
        if self.routes.len() > MAX_ROUTES || self.neighbours.len() > MAX_NEIGHBOURS {
            return Err("too many routes or neighbours".into());
        }
        for (i, nic) in self.nics.iter().enumerate() {
            if nic.slot as usize >= MAX_NICS {
                return Err(format!("NIC slot {} out of range", nic.slot));
            }
            if !valid_ifname(&nic.name) {
                return Err(format!("invalid interface name {:?}", nic.name));
            }
            if !(68..=65535).contains(&nic.mtu) {
                return Err(format!("invalid MTU {} for {}", nic.mtu, nic.name));
            }
            if nic.addresses.len() > MAX_ADDRESSES {
                return Err(format!("too many addresses on {}", nic.name));
            }
            if let Some(a) = nic.addresses.iter().find(|a| !a.is_valid()) {
                return Err(format!("invalid address {a} on {}", nic.name));
            }
            if self.nics[..i]
                .iter()
                .any(|o| o.slot == nic.slot || o.name == nic.name)
            {
                return Err(format!("NIC slot {} or name {} twice", nic.slot, nic.name));
            }
        }
        let known = |dev: &str| self.nics.iter().any(|n| n.name == dev);
        for r in &self.routes {
            if !known(&r.dev) || r.dst.is_some_and(|d| !d.is_valid()) {
                return Err(format!("invalid route over {:?}", r.dev));
            }
        }
        if let Some(n) = self.neighbours.iter().find(|n| !known(&n.dev)) {
            return Err(format!("neighbour {} over unknown {:?}", n.ip, n.dev));
        }
        if self.dns_relay.len() > MAX_DNS_RELAY || self.dns_relay.iter().any(|a| !a.is_loopback()) {
            return Err("the DNS relay takes at most 4 loopback addresses".into());
        }
        Ok(())
    }
}

/// Whether `name` is a usable interface name: 1 to 15 bytes, no '/', ':', whitespace or NUL,
/// not `.` or `..`.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(slot: u32, name: &str) -> NicSpec {
        NicSpec {
            slot,
            name: name.into(),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            addresses: vec![IpCidr {
                addr: "172.17.0.2".parse().unwrap(),
                prefix: 16,
            }],
        }
    }

    #[test]
    fn a_docker_bridge_spec_is_valid_and_round_trips() {
        let spec = NetSpec {
            nics: vec![nic(0, "eth0")],
            routes: vec![RouteSpec {
                dst: None,
                gateway: Some("172.17.0.1".parse().unwrap()),
                v6: false,
                dev: "eth0".into(),
                metric: None,
            }],
            neighbours: vec![],
            dns_relay: vec!["127.0.0.11".parse().unwrap()],
            publish_listeners: true,
        };
        spec.validate().unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<NetSpec>(&text).unwrap(), spec);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut two = NetSpec {
            nics: vec![nic(0, "eth0"), nic(0, "eth1")],
            ..NetSpec::default()
        };
        assert!(two.validate().is_err());
        two.nics[1].slot = 1;
        two.validate().unwrap();
        two.nics[1].name = "eth0".into();
        assert!(two.validate().is_err());

        let mut bad = NetSpec {
            nics: vec![nic(9, "eth0")],
            ..NetSpec::default()
        };
        assert!(bad.validate().is_err());
        bad.nics[0].slot = 0;
        bad.nics[0].name = "../x".into();
        assert!(bad.validate().is_err());
        bad.nics[0].name = "eth0".into();
        bad.nics[0].addresses[0].prefix = 33;
        assert!(bad.validate().is_err());
        bad.nics[0].addresses[0].prefix = 16;
        bad.nics[0].mtu = 10;
        assert!(bad.validate().is_err());
        bad.nics[0].mtu = 1400;
        bad.dns_relay.push("10.0.0.1".parse().unwrap());
        assert!(bad.validate().is_err());
        bad.dns_relay.clear();
        bad.routes.push(RouteSpec {
            dst: None,
            gateway: None,
            v6: true,
            dev: "eth1".into(),
            metric: None,
        });
        assert!(bad.validate().is_err());
    }

    #[test]
    fn slot_macs_are_distinct_local_unicast() {
        let a = slot_mac(0);
        assert_eq!(a[0] & 0b11, 0b10);
        assert_ne!(slot_mac(0), slot_mac(1));
    }
}
