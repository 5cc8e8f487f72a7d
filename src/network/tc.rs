//! Traffic control, the data path between an interface and its tap: an ingress qdisc on the
//! source interface (handle `ffff:`) holding one filter that matches every frame of every
//! protocol and whose mirred action redirects it to the target's egress, as
//!
//! ```text
//! tc qdisc add dev eth0 ingress
//! tc filter add dev eth0 parent ffff: protocol all prio 1 u32 match u8 0 0 \
//!     action mirred egress redirect dev rvtap0
//! ```
//!
//! The classifier is u32 with one zero-mask key (in every kernel that has tc); where u32 is
//! missing, flower without keys does the same. Removing the ingress qdisc removes its
//! filters with it.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterFlowerOption, TcFilterU32Option, TcHandle, TcMessage,
    TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

use super::NetworkError;
use super::link;
use super::netlink::{Netlink, NetlinkError};

/// The ingress qdisc's handle, `ffff:`.
pub const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// The priority of our filter.
const FILTER_PRIORITY: u16 = 1;

/// Redirects every frame arriving on `from_ifindex` to the egress of `to_ifindex`,
/// replacing whatever ingress qdisc and filters `from` had.
pub fn redirect(from_ifindex: u32, to_ifindex: u32) -> Result<(), NetworkError> {
    redirect_with(&mut link::open()?, from_ifindex, to_ifindex)
}

/// Removes the ingress qdisc of `ifindex` and so its filters; none there is not an error.
pub fn clear(ifindex: u32) -> Result<(), NetworkError> {
    clear_with(&mut link::open()?, ifindex)
}

/// The interfaces the ingress filters of `ifindex` redirect to, in filter order.
pub fn redirect_targets(ifindex: u32) -> Result<Vec<u32>, NetworkError> {
    let mut nl = link::open()?;
    let mut ask = TcMessage::with_index(ifindex as i32);
    ask.header.parent = INGRESS_HANDLE;
    let filters = nl
        .dump(RouteNetlinkMessage::GetTrafficFilter(ask))
        .map_err(|source| NetworkError::Request {
            op: format!(
                "list the ingress filters of {}",
                link::describe(&mut nl, ifindex)
            ),
            source,
        })?;
    Ok(filters
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficFilter(f) => Some(f),
            _ => None,
        })
        .filter(|f| f.header.index == ifindex as i32)
        .flat_map(|f| filter_actions(f).into_iter().filter_map(mirred_target))
        .collect())
}

/// Whether `ifindex` has an ingress qdisc.
pub fn has_ingress(ifindex: u32) -> Result<bool, NetworkError> {
    let mut nl = link::open()?;
    let qdiscs = nl
        .dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))
        .map_err(|source| NetworkError::Scan {
            what: "qdiscs",
            source,
        })?;
    Ok(qdiscs.iter().any(|m| {
        matches!(m, RouteNetlinkMessage::NewQueueDiscipline(q)
            if q.header.index == ifindex as i32 && q.header.parent == TcHandle::INGRESS)
    }))
}

/// [`redirect`] over an open socket.
pub(crate) fn redirect_with(nl: &mut Netlink, from: u32, to: u32) -> Result<(), NetworkError> {
    clear_with(nl, from)?;
    let create = NLM_F_CREATE | NLM_F_EXCL;
    if let Err(source) = nl.request(
        RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc(from)),
        create,
    ) {
        let op = format!("add the ingress qdisc on {}", link::describe(nl, from));
        return Err(NetworkError::Request { op, source });
    }
    let added = match nl.request(
        RouteNetlinkMessage::NewTrafficFilter(u32_filter(from, to)),
        create,
    ) {
        // ENOENT: no u32 classifier in this kernel.
        Err(e) if e.errno() == Some(libc::ENOENT) => nl.request(
            RouteNetlinkMessage::NewTrafficFilter(flower_filter(from, to)),
            create,
        ),
        other => other,
    };
    if let Err(source) = added {
        let op = format!(
            "add the filter redirecting {} to {}",
            link::describe(nl, from),
            link::describe(nl, to)
        );
        let _ = clear_with(nl, from);
        return Err(NetworkError::Request { op, source });
    }
    Ok(())
}

/// [`clear`] over an open socket.
pub(crate) fn clear_with(nl: &mut Netlink, ifindex: u32) -> Result<(), NetworkError> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::INGRESS;
    msg.header.handle = INGRESS_HANDLE;
    match nl.request(RouteNetlinkMessage::DelQueueDiscipline(msg), 0) {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(source) => Err(NetworkError::Request {
            op: format!(
                "remove the ingress qdisc on {}",
                link::describe(nl, ifindex)
            ),
            source,
        }),
    }
}

/// Whether a delete failed only because there was nothing to delete.
fn is_missing(e: &NetlinkError) -> bool {
    matches!(e.errno(), Some(libc::ENOENT | libc::EINVAL))
}

/// The ingress qdisc of `ifindex`.
fn ingress_qdisc(ifindex: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.handle = INGRESS_HANDLE;
    msg.header.parent = TcHandle::INGRESS;
    msg.attributes.push(TcAttribute::Kind("ingress".into()));
    msg
}

/// A filter header under the ingress qdisc of `ifindex`, priority 1, every protocol.
fn filter_header(ifindex: u32, kind: &str) -> TcMessage {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = INGRESS_HANDLE;
    let all = (libc::ETH_P_ALL as u16).to_be();
    msg.header.info = (u32::from(FILTER_PRIORITY) << 16) | u32::from(all);
    msg.attributes.push(TcAttribute::Kind(kind.into()));
    msg
}

/// The u32 filter of `from`: one key of mask 0 (every frame), redirect to `to`.
fn u32_filter(from: u32, to: u32) -> TcMessage {
    let mut key = TcU32Key::default();
    key.mask = 0;
    key.val = 0;
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![key];
    let mut msg = filter_header(from, "u32");
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::Action(vec![redirect_action(to)])),
    ]));
    msg
}

/// The flower filter of `from`: no keys (every frame), redirect to `to`.
fn flower_filter(from: u32, to: u32) -> TcMessage {
    let mut msg = filter_header(from, "flower");
    msg.attributes
        .push(TcAttribute::Options(vec![TcOption::Flower(
            TcFilterFlowerOption::Actions(vec![redirect_action(to)]),
        )]));
    msg
}

/// `mirred egress redirect dev <to>`, the frame stolen from the source.
fn redirect_action(to: u32) -> TcAction {
    let mut generic = TcActionGeneric::default();
    generic.action = TcActionType::Stolen;
    let mut mirror = TcMirror::default();
    mirror.generic = generic;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    action
}

/// The actions of a filter message, whatever its classifier.
fn filter_actions(filter: &TcMessage) -> Vec<&TcAction> {
    let mut out = Vec::new();
    for attr in &filter.attributes {
        let TcAttribute::Options(options) = attr else {
            continue;
        };
        for option in options {
            match option {
                TcOption::U32(TcFilterU32Option::Action(a))
                | TcOption::Flower(TcFilterFlowerOption::Actions(a)) => out.extend(a),
                TcOption::MatchAll(netlink_packet_route::tc::TcFilterMatchAllOption::Action(a)) => {
                    out.extend(a)
                }
                _ => {}
            }
        }
    }
    out
}

/// The target of an egress-redirect mirred action.
fn mirred_target(action: &TcAction) -> Option<u32> {
    action.attributes.iter().find_map(|attr| match attr {
        TcActionAttribute::Options(options) => options.iter().find_map(|o| match o {
            TcActionOption::Mirror(TcActionMirrorOption::Parms(m))
                if m.eaction == TcMirrorActionType::EgressRedir =>
            {
                Some(m.ifindex)
            }
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{Emitable, Parseable};

    use super::*;

    fn round_trip(msg: &TcMessage) -> TcMessage {
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        TcMessage::parse(&buf).unwrap()
    }

    #[test]
    fn the_u32_filter_matches_everything_and_redirects() {
        let msg = round_trip(&u32_filter(3, 9));
        assert_eq!(msg.header.index, 3);
        assert_eq!(msg.header.parent, INGRESS_HANDLE);
        // prio 1, protocol ETH_P_ALL in network order
        assert_eq!(msg.header.info, 0x0001_0300);
        let selector = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                TcAttribute::Options(o) => o.iter().find_map(|o| match o {
                    TcOption::U32(TcFilterU32Option::Selector(s)) => Some(s.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap();
        assert_eq!(selector.nkeys, 1);
        assert_eq!(selector.keys[0].mask, 0);
        assert!(selector.flags.contains(TcU32SelectorFlags::Terminal));
        let actions = filter_actions(&msg);
        assert_eq!(actions.len(), 1);
        assert_eq!(mirred_target(actions[0]), Some(9));
    }

    #[test]
    fn the_flower_filter_redirects_too() {
        let msg = round_trip(&flower_filter(4, 5));
        let actions = filter_actions(&msg);
        assert_eq!(
            actions.iter().map(|a| mirred_target(a)).collect::<Vec<_>>(),
            [Some(5)]
        );
    }

    #[test]
    fn the_action_steals_the_frame() {
        let action = redirect_action(7);
        let TcActionAttribute::Options(o) = &action.attributes[1] else {
            panic!("no options");
        };
        let TcActionOption::Mirror(TcActionMirrorOption::Parms(m)) = &o[0] else {
            panic!("no mirred parameters");
        };
        assert_eq!(m.generic.action, TcActionType::Stolen);
        assert_eq!(m.ifindex, 7);
    }

    #[test]
    fn the_qdisc_is_ingress_ffff() {
        let msg = round_trip(&ingress_qdisc(2));
        assert_eq!(msg.header.handle, INGRESS_HANDLE);
        assert_eq!(msg.header.parent, TcHandle::INGRESS);
        assert_eq!(msg.attributes[0], TcAttribute::Kind("ingress".into()));
    }
}
