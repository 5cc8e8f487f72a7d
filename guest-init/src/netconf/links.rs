//! The guest's interfaces as rtnetlink lists them (RTM_GETLINK), and the single changes
//! netconf makes to one (RTM_SETLINK): up or down, name, MAC, MTU.

use guest_init::netlink::{Netlink, NetlinkError};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its current MAC (IFLA_ADDRESS), if it has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// Its permanent MAC (IFLA_PERM_ADDRESS), if the kernel reports one.
    pub perm_mac: Option<[u8; 6]>,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is administratively up (IFF_UP).
    pub up: bool,
}

/// Lists every interface.
pub fn dump(nl: &mut Netlink) -> Result<Vec<Link>, NetlinkError> {
    let answers = nl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    Ok(answers
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(from_message(link)),
            _ => None,
        })
        .collect())
}

/// The [`Link`] an RTM_NEWLINK message describes.
fn from_message(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mac: None,
        perm_mac: None,
        mtu: 0,
        up: message.header.flags.contains(LinkFlags::Up),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(a) => link.mac = a.as_slice().try_into().ok(),
            LinkAttribute::PermAddress(a) => link.perm_mac = a.as_slice().try_into().ok(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            _ => {}
        }
    }
    link
}

/// Sets interface `index` up or down.
pub fn set_up(nl: &mut Netlink, index: u32, up: bool) -> Result<(), NetlinkError> {
    let mut message = link_message(index);
    message.header.change_mask = LinkFlags::Up;
    if up {
        message.header.flags = LinkFlags::Up;
    }
    nl.request(RouteNetlinkMessage::SetLink(message), 0)
}

/// Renames interface `index` (it must be down).
pub fn rename(nl: &mut Netlink, index: u32, name: &str) -> Result<(), NetlinkError> {
    set_attribute(nl, index, LinkAttribute::IfName(name.to_owned()))
}

/// Sets the MAC of interface `index`.
pub fn set_mac(nl: &mut Netlink, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
    set_attribute(nl, index, LinkAttribute::Address(mac.to_vec()))
}

/// Sets the MTU of interface `index`.
pub fn set_mtu(nl: &mut Netlink, index: u32, mtu: u32) -> Result<(), NetlinkError> {
    set_attribute(nl, index, LinkAttribute::Mtu(mtu))
}

/// Sets one attribute of interface `index`.
fn set_attribute(
    nl: &mut Netlink,
    index: u32,
    attribute: LinkAttribute,
) -> Result<(), NetlinkError> {
    let mut message = link_message(index);
    message.attributes.push(attribute);
    nl.request(RouteNetlinkMessage::SetLink(message), 0)
}

/// An empty link message naming interface `index`.
fn link_message(index: u32) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
}

/// `mac` as text, `02:42:ac:11:00:02`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_message_becomes_a_link() {
        let mut message = link_message(3);
        message.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        message.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Address(vec![2, 0x72, 0x76, 0x6d, 0, 1]),
            LinkAttribute::Mtu(1400),
            LinkAttribute::PermAddress(vec![0; 4]),
        ];
        let link = from_message(&message);
        assert_eq!(link.index, 3);
        assert_eq!(link.name, "eth0");
        assert_eq!(link.mac, Some([2, 0x72, 0x76, 0x6d, 0, 1]));
        assert_eq!(link.perm_mac, None);
        assert_eq!(link.mtu, 1400);
        assert!(link.up);
        assert_eq!(mac_text(&[2, 0x42, 0xac, 0x11, 0, 2]), "02:42:ac:11:00:02");
    }
}
