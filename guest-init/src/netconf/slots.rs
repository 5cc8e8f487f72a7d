//! Which interface is which virtio-net slot. A virtio-net NIC's permanent address
//! (IFLA_PERM_ADDRESS) is the MAC of its config space, the slot's placeholder
//! [`slot_mac`]: it stays whatever name and MAC the interface is given. An interface without
//! a permanent address (some drivers, and the test's veths) is known by its current MAC
//! instead, and once configured, by its index and the MAC netconf gave it ([`Remembered`]).

use guest_init::netspec::{MAX_NICS, slot_mac};

use super::links::Link;

/// The interface index and MAC netconf last left each slot's interface with.
pub type Remembered = [Option<(u32, [u8; 6])>; MAX_NICS];

/// For each slot, the position in `links` of its interface, if the guest has one.
pub fn find(links: &[Link], remembered: &Remembered) -> [Option<usize>; MAX_NICS] {
    let mut found = [None; MAX_NICS];
    let mut taken = vec![false; links.len()];
    let mut pass = |test: &dyn Fn(usize, &Link) -> bool| {
        for (slot, place) in found.iter_mut().enumerate() {
            if place.is_some() {
                continue;
            }
            *place = (0..links.len()).find(|&i| !taken[i] && test(slot, &links[i]));
            if let Some(i) = *place {
                taken[i] = true;
            }
        }
    };
    pass(&|slot, l| l.perm_mac == Some(mac_of(slot)));
    pass(&|slot, l| {
        l.perm_mac.is_none()
            && l.mac
                .is_some_and(|mac| remembered[slot] == Some((l.index, mac)))
    });
    pass(&|slot, l| l.perm_mac.is_none() && l.mac == Some(mac_of(slot)));
    found
}

/// The placeholder MAC of slot number `slot` (below [`MAX_NICS`]).
fn mac_of(slot: usize) -> [u8; 6] {
    slot_mac(slot as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, mac: [u8; 6], perm: Option<[u8; 6]>) -> Link {
        Link {
            index,
            name: format!("if{index}"),
            mac: Some(mac),
            perm_mac: perm,
            mtu: 1500,
            up: false,
        }
    }

    #[test]
    fn the_permanent_address_names_the_slot_whatever_the_current_mac() {
        let links = vec![
            link(1, [0; 6], None),
            link(2, [2, 0x42, 0, 0, 0, 9], Some(slot_mac(1))),
            link(3, slot_mac(1), Some(slot_mac(0))),
        ];
        let found = find(&links, &[None; MAX_NICS]);
        assert_eq!(found[0], Some(2));
        assert_eq!(found[1], Some(1));
        assert_eq!(found[2..], [None; MAX_NICS - 2]);
    }

    #[test]
    fn without_a_permanent_address_the_current_or_remembered_mac_does() {
        let given = [2, 0x42, 0xac, 0x11, 0, 2];
        let links = vec![
            link(1, [0; 6], None),
            link(5, given, None),
            link(6, slot_mac(1), None),
        ];
        let mut remembered = [None; MAX_NICS];
        assert_eq!(find(&links, &remembered)[0], None);
        assert_eq!(find(&links, &remembered)[1], Some(2));
        remembered[0] = Some((5, given));
        assert_eq!(find(&links, &remembered)[0], Some(1));
        // A remembered index whose MAC has changed since is someone else.
        remembered[0] = Some((5, [2, 0, 0, 0, 0, 1]));
        assert_eq!(find(&links, &remembered)[0], None);
        // A link with a permanent address is never matched by its current MAC.
        let links = vec![link(7, slot_mac(0), Some([2, 9, 9, 9, 9, 9]))];
        assert_eq!(find(&links, &[None; MAX_NICS])[0], None);
    }
}
