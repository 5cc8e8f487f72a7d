//! The few link requests the wiring needs: an interface's index from its name and back, and
//! setting a link's MTU and bringing it up.

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use super::NetworkError;
use super::netlink::{Netlink, NetlinkError};

/// The index of the interface called `name`.
pub(crate) fn index_of(nl: &mut Netlink, name: &str) -> Result<u32, NetlinkError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    match nl.get(RouteNetlinkMessage::GetLink(msg))? {
        RouteNetlinkMessage::NewLink(link) if link.header.index != 0 => Ok(link.header.index),
        _ => Err(NetlinkError::Malformed(format!("no index for {name}"))),
    }
}

/// The name of interface `index`, if it has one now.
pub(crate) fn name_of(nl: &mut Netlink, index: u32) -> Option<String> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    match nl.get(RouteNetlinkMessage::GetLink(msg)).ok()? {
        RouteNetlinkMessage::NewLink(link) => link.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n),
            _ => None,
        }),
        _ => None,
    }
}

/// How an interface is named in messages: its name, or its index when it has none any more.
pub(crate) fn describe(nl: &mut Netlink, index: u32) -> String {
    name_of(nl, index).unwrap_or_else(|| format!("interface #{index}"))
}

/// Sets link `index`'s MTU and brings it up, in one request.
pub(crate) fn set_mtu_up(nl: &mut Netlink, index: u32, mtu: u32) -> Result<(), NetlinkError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    nl.request(RouteNetlinkMessage::SetLink(msg), 0)
}

/// Opens a socket, as a [`NetworkError`].
pub(crate) fn open() -> Result<Netlink, NetworkError> {
    Netlink::open().map_err(NetworkError::Socket)
}
