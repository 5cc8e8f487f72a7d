//! Our interfaces' addresses (RTM_GETADDR, RTM_NEWADDR, RTM_DELADDR) made to match the spec
//! exactly, but for IPv6 link-local ones (fe80::/10): those are the guest kernel's own, made
//! from the MAC, and neither added nor removed. Unwanted addresses go first (deleting an
//! IPv4 primary address takes its subnet's secondaries with it), then the missing ones are
//! added: IPv6 ones without duplicate address detection (the namespace side already owns
//! them), IPv4 ones with their subnet's broadcast address.

use std::net::{IpAddr, Ipv4Addr};

use guest_init::netlink::{Netlink, NetlinkError};
use guest_init::netspec::IpCidr;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::nics::Nic;

/// One address of one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The interface's index.
    pub index: u32,
    /// The address and prefix.
    pub cidr: IpCidr,
}

/// Makes the addresses of every interface of `nics` those its spec lists (none for an
/// unwired slot).
pub fn reconcile(nl: &mut Netlink, nics: &[Nic]) -> Result<(), String> {
    let list = |nl: &mut Netlink| dump(nl).map_err(|e| format!("cannot list addresses: {e}"));
    let mut current = list(nl)?;
    for nic in nics {
        let link = &nic.link;
        let wanted = nic.wanted.map_or(&[][..], |w| &w.addresses[..]);
        let (remove, _) = diff(&on(&current, link.index), wanted);
        for cidr in &remove {
            match delete(nl, link.index, cidr) {
                Err(e) if e.errno() != Some(libc::EADDRNOTAVAIL) => {
                    return Err(format!("cannot remove {cidr} from {}: {e}", link.name));
                }
                _ => {}
            }
        }
        if !remove.is_empty() {
            current = list(nl)?;
        }
        let (_, missing) = diff(&on(&current, link.index), wanted);
        for cidr in &missing {
            add(nl, link.index, cidr)
                .map_err(|e| format!("cannot add {cidr} to {}: {e}", link.name))?;
        }
    }
    Ok(())
}

/// The addresses of interface `index` among `all`.
fn on(all: &[Address], index: u32) -> Vec<IpCidr> {
    all.iter()
        .filter(|a| a.index == index)
        .map(|a| a.cidr)
        .collect()
}

/// What to remove from `current` and add to it to make it `wanted`, link-local IPv6
/// addresses left out of both.
pub fn diff(current: &[IpCidr], wanted: &[IpCidr]) -> (Vec<IpCidr>, Vec<IpCidr>) {
    let remove = current
        .iter()
        .filter(|c| !is_kernels(c) && !wanted.contains(c))
        .copied()
        .collect();
    let mut add: Vec<IpCidr> = Vec::new();
    for w in wanted {
        if !is_kernels(w) && !current.contains(w) && !add.contains(w) {
            add.push(*w);
        }
    }
    (remove, add)
}

/// Whether `cidr` is an IPv6 link-local address (fe80::/10), which the kernel manages.
pub fn is_kernels(cidr: &IpCidr) -> bool {
    matches!(cidr.addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

/// Lists the IPv4 and IPv6 addresses of every interface.
pub fn dump(nl: &mut Netlink) -> Result<Vec<Address>, NetlinkError> {
    let mut all = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = AddressMessage::default();
        request.header.family = family;
        for answer in nl.dump(RouteNetlinkMessage::GetAddress(request))? {
            if let RouteNetlinkMessage::NewAddress(m) = answer
                && m.header.family == family
                && let Some(address) = from_message(&m)
            {
                all.push(address);
            }
        }
    }
    Ok(all)
}

/// The [`Address`] an RTM_NEWADDR message describes: the local address (IFA_LOCAL, or
/// IFA_ADDRESS without it).
fn from_message(m: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    for attribute in &m.attributes {
        match attribute {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    Some(Address {
        index: m.header.index,
        cidr: IpCidr {
            addr: local.or(address)?,
            prefix: m.header.prefix_len,
        },
    })
}

/// Adds `cidr` to interface `index`.
fn add(nl: &mut Netlink, index: u32, cidr: &IpCidr) -> Result<(), NetlinkError> {
    let mut m = message(index, cidr);
    match cidr.addr {
        IpAddr::V4(v4) => {
            m.attributes.push(AddressAttribute::Local(cidr.addr));
            m.attributes.push(AddressAttribute::Address(cidr.addr));
            if let Some(b) = broadcast(v4, cidr.prefix) {
                m.attributes.push(AddressAttribute::Broadcast(b));
            }
        }
        IpAddr::V6(_) => {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes.push(AddressAttribute::Address(cidr.addr));
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    nl.request(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// Removes `cidr` from interface `index`.
fn delete(nl: &mut Netlink, index: u32, cidr: &IpCidr) -> Result<(), NetlinkError> {
    let mut m = message(index, cidr);
    if cidr.addr.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(cidr.addr));
    }
    m.attributes.push(AddressAttribute::Address(cidr.addr));
    nl.request(RouteNetlinkMessage::DelAddress(m), 0)
}

/// An address message for `cidr` on interface `index`, without attributes.
fn message(index: u32, cidr: &IpCidr) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = match cidr.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = cidr.prefix;
    m.header.index = index;
    m
}

/// The broadcast address of `addr`'s subnet of `prefix` bits; none for /31 and /32.
fn broadcast(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    (prefix <= 30).then(|| Ipv4Addr::from(u32::from(addr) | (u32::MAX >> prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> IpCidr {
        let (addr, prefix) = text.split_once('/').unwrap();
        IpCidr {
            addr: addr.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
        }
    }

    #[test]
    fn the_diff_keeps_wanted_ones_and_the_kernels_link_local() {
        let current = [
            cidr("10.0.0.2/24"),
            cidr("10.0.0.3/24"),
            cidr("fe80::42:acff:fe11:2/64"),
            cidr("fd00::2/64"),
        ];
        let wanted = [
            cidr("10.0.0.2/24"),
            cidr("fd00::2/48"),
            cidr("fe80::1/64"),
            cidr("10.0.1.2/24"),
            cidr("10.0.1.2/24"),
        ];
        let (remove, add) = diff(&current, &wanted);
        assert_eq!(remove, [cidr("10.0.0.3/24"), cidr("fd00::2/64")]);
        assert_eq!(add, [cidr("fd00::2/48"), cidr("10.0.1.2/24")]);
        assert_eq!(diff(&current[..1], &current[..1]), (vec![], vec![]));
    }

    #[test]
    fn broadcasts_fill_the_host_bits() {
        let a: Ipv4Addr = "172.17.0.2".parse().unwrap();
        assert_eq!(broadcast(a, 16), Some("172.17.255.255".parse().unwrap()));
        assert_eq!(broadcast(a, 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(broadcast(a, 31), None);
        assert!(is_kernels(&cidr("febf::1/64")));
        assert!(!is_kernels(&cidr("fec0::1/64")));
    }

    #[test]
    fn a_message_gives_its_local_address() {
        let mut m = message(4, &cidr("10.0.0.2/24"));
        m.attributes = vec![
            AddressAttribute::Address("10.0.0.1".parse().unwrap()),
            AddressAttribute::Local("10.0.0.2".parse().unwrap()),
        ];
        let a = from_message(&m).unwrap();
        assert_eq!((a.index, a.cidr), (4, cidr("10.0.0.2/24")));
        m.attributes.clear();
        assert_eq!(from_message(&m), None);
    }
}
