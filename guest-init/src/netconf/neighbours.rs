//! Our permanent neighbour entries (RTM_GETNEIGH, RTM_NEWNEIGH, RTM_DELNEIGH): the spec's
//! added or replaced (NUD_PERMANENT), and permanent ones over our interfaces that the spec
//! does not list removed. Entries the kernel learnt (reachable, stale, ...) are left alone.

use std::net::IpAddr;

use guest_init::netlink::{Netlink, NetlinkError};
use guest_init::netspec::NeighbourSpec;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::links::mac_text;
use super::nics::Nic;

/// One permanent neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface's index.
    pub index: u32,
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its MAC, if it has a 6-byte one.
    pub mac: Option<[u8; 6]>,
}

/// Makes the permanent neighbours over `nics` the spec's `neighbours`.
pub fn reconcile(
    nl: &mut Netlink,
    nics: &[Nic],
    neighbours: &[NeighbourSpec],
) -> Result<(), String> {
    let mut wanted = Vec::with_capacity(neighbours.len());
    for n in neighbours {
        let nic = nics
            .iter()
            .find(|nic| nic.wanted.is_some_and(|w| w.name == n.dev))
            .ok_or_else(|| format!("neighbour over unknown interface {:?}", n.dev))?;
        wanted.push(Neighbour {
            index: nic.link.index,
            ip: n.ip,
            mac: Some(n.mac),
        });
    }
    let ours: Vec<u32> = nics.iter().map(|n| n.link.index).collect();
    let name = |index: u32| {
        nics.iter()
            .find(|n| n.link.index == index)
            .map_or("?", |n| n.link.name.as_str())
    };
    let current = dump(nl).map_err(|e| format!("cannot list neighbours: {e}"))?;
    let (remove, missing) = diff(&current, &ours, &wanted);
    for n in remove {
        match delete(nl, n) {
            Err(e) if e.errno() != Some(libc::ENOENT) => {
                let dev = name(n.index);
                return Err(format!("cannot remove neighbour {} on {dev}: {e}", n.ip));
            }
            _ => {}
        }
    }
    for n in &missing {
        add(nl, n).map_err(|e| {
            let mac = n.mac.as_ref().map(mac_text).unwrap_or_default();
            format!(
                "cannot add neighbour {} ({mac}) on {}: {e}",
                n.ip,
                name(n.index)
            )
        })?;
    }
    Ok(())
}

/// The permanent entries to remove (over `ours`, no wanted entry for their address) and the
/// wanted ones to add or replace (not in `current` with that MAC).
pub fn diff<'a>(
    current: &'a [Neighbour],
    ours: &[u32],
    wanted: &[Neighbour],
) -> (Vec<&'a Neighbour>, Vec<Neighbour>) {
    let remove = current
        .iter()
        .filter(|c| {
            ours.contains(&c.index) && !wanted.iter().any(|w| (w.index, w.ip) == (c.index, c.ip))
        })
        .collect();
    let mut add: Vec<Neighbour> = Vec::new();
    for w in wanted {
        if !current.contains(w) && !add.iter().any(|a| (a.index, a.ip) == (w.index, w.ip)) {
            add.push(*w);
        }
    }
    (remove, add)
}

/// Lists the permanent IPv4 and IPv6 neighbour entries.
pub fn dump(nl: &mut Netlink) -> Result<Vec<Neighbour>, NetlinkError> {
    let mut all = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = NeighbourMessage::default();
        request.header.family = family;
        for answer in nl.dump(RouteNetlinkMessage::GetNeighbour(request))? {
            if let RouteNetlinkMessage::NewNeighbour(m) = answer
                && m.header.family == family
                && m.header.state == NeighbourState::Permanent
                && let Some(n) = from_message(&m)
            {
                all.push(n);
            }
        }
    }
    Ok(all)
}

/// The [`Neighbour`] an RTM_NEWNEIGH message describes.
fn from_message(m: &NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for attribute in &m.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some((*a).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => ip = Some((*a).into()),
            NeighbourAttribute::LinkLayerAddress(l) => mac = l.as_slice().try_into().ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        index: m.header.ifindex,
        ip: ip?,
        mac,
    })
}

/// Adds (or replaces) the permanent entry `n`.
fn add(nl: &mut Netlink, n: &Neighbour) -> Result<(), NetlinkError> {
    let mut m = message(n);
    m.header.state = NeighbourState::Permanent;
    if let Some(mac) = n.mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    nl.request(
        RouteNetlinkMessage::NewNeighbour(m),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// Deletes the entry `n`.
fn delete(nl: &mut Netlink, n: &Neighbour) -> Result<(), NetlinkError> {
    nl.request(RouteNetlinkMessage::DelNeighbour(message(n)), 0)
}

/// A neighbour message naming `n`'s interface and address.
fn message(n: &Neighbour) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.ifindex = n.index;
    let address = match n.ip {
        IpAddr::V4(a) => {
            m.header.family = AddressFamily::Inet;
            NeighbourAddress::Inet(a)
        }
        IpAddr::V6(a) => {
            m.header.family = AddressFamily::Inet6;
            NeighbourAddress::Inet6(a)
        }
    };
    m.attributes.push(NeighbourAttribute::Destination(address));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(index: u32, ip: &str, last: u8) -> Neighbour {
        Neighbour {
            index,
            ip: ip.parse().unwrap(),
            mac: Some([2, 0, 0, 0, 0, last]),
        }
    }

    #[test]
    fn the_diff_replaces_changed_macs_and_removes_only_ours() {
        let current = [
            n(3, "10.0.0.1", 1),
            n(3, "10.0.0.2", 2),
            n(9, "10.0.0.3", 3),
        ];
        let wanted = [n(3, "10.0.0.1", 1), n(3, "10.0.0.2", 7), n(3, "fd00::1", 4)];
        let (remove, add) = diff(&current, &[3], &wanted);
        assert!(remove.is_empty());
        assert_eq!(add, [wanted[1], wanted[2]]);
        let (remove, add) = diff(&current, &[3, 9], &wanted[..1]);
        assert_eq!(remove, [&current[1], &current[2]]);
        assert!(add.is_empty());
    }

    #[test]
    fn a_message_round_trips() {
        let want = n(4, "fd00::1", 9);
        let mut m = message(&want);
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]));
        assert_eq!(from_message(&m), Some(want));
    }
}
