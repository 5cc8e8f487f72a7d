//! [`apply`] against the real kernel: in a fresh network namespace (a thread that unshares
//! CLONE_NEWNET), veth interfaces stand for the virtio-net NICs. A veth has no permanent
//! address, so it is found by its placeholder MAC at first, and by what netconf remembers
//! once its MAC is the spec's. Needs root; skipped (with a note) without.

use std::net::IpAddr;

use guest_init::netlink::Netlink;
use guest_init::netspec::{IpCidr, NeighbourSpec, NetSpec, NicSpec, RouteSpec, slot_mac};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};

use super::{addresses, apply, links, neighbours, routes};

fn cidr(text: &str) -> IpCidr {
    let (addr, prefix) = text.split_once('/').expect("a/p");
    IpCidr {
        addr: addr.parse().expect("address"),
        prefix: prefix.parse().expect("prefix"),
    }
}

fn nic(slot: u32, name: &str, last: u8, mtu: u32, addresses: &[&str]) -> NicSpec {
    NicSpec {
        slot,
        name: name.into(),
        mac: [0x02, 0x42, 0xac, 0x11, 0x00, last],
        mtu,
        addresses: addresses.iter().map(|a| cidr(a)).collect(),
    }
}

fn via(gateway: &str, dev: &str) -> RouteSpec {
    let gateway: IpAddr = gateway.parse().expect("gateway");
    RouteSpec {
        dst: None,
        gateway: Some(gateway),
        v6: gateway.is_ipv6(),
        dev: dev.into(),
        metric: None,
    }
}

fn neighbour(ip: &str, last: u8, dev: &str) -> NeighbourSpec {
    NeighbourSpec {
        ip: ip.parse().expect("ip"),
        mac: [2, 0, 0, 0, 0x99, last],
        dev: dev.into(),
    }
}

/// Runs `f` on a thread of its own in a new network namespace; `None` if that is not
/// allowed here.
fn in_new_netns(f: fn()) -> Option<()> {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread (a thread
        // of its own, ended with the test) into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        f();
        Some(())
    });
    match thread.join() {
        Ok(done) => done,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Creates veth `name` with MAC `mac` and its peer `peer`, the peer up (for a carrier).
fn add_veth(nl: &mut Netlink, name: &str, peer: &str, mac: [u8; 6]) {
    let mut peer_message = LinkMessage::default();
    peer_message
        .attributes
        .push(LinkAttribute::IfName(peer.into()));
    let mut m = LinkMessage::default();
    m.attributes = vec![
        LinkAttribute::IfName(name.into()),
        LinkAttribute::Address(mac.to_vec()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
        ]),
    ];
    nl.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
        .expect("create a veth");
    let index = link(nl, peer).index;
    links::set_up(nl, index, true).expect("set the peer up");
}

fn link(nl: &mut Netlink, name: &str) -> links::Link {
    let all = links::dump(nl).expect("dump links");
    all.into_iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no interface {name}"))
}

/// Checks the namespace is as `spec` wants: each NIC's link state and addresses, and the
/// routes and permanent neighbours over them.
fn check(nl: &mut Netlink, spec: &NetSpec) {
    let all = links::dump(nl).expect("dump links");
    let mut indexes = Vec::new();
    for want in &spec.nics {
        let l = all
            .iter()
            .find(|l| l.name == want.name)
            .expect("a wired nic");
        assert_eq!(l.mac, Some(want.mac), "{}", want.name);
        assert_eq!(l.mtu, want.mtu);
        assert!(l.up, "{} is down", want.name);
        let mut have: Vec<IpCidr> = addresses::dump(nl)
            .expect("dump addresses")
            .into_iter()
            .filter(|a| a.index == l.index && !addresses::is_kernels(&a.cidr))
            .map(|a| a.cidr)
            .collect();
        let mut wanted = want.addresses.clone();
        have.sort_by_key(|c| c.to_string());
        wanted.sort_by_key(|c| c.to_string());
        assert_eq!(have, wanted, "addresses of {}", want.name);
        indexes.push((want.name.clone(), l.index));
    }
    let index = |dev: &str| indexes.iter().find(|(n, _)| n == dev).expect("dev").1;

    let ours: Vec<u32> = indexes.iter().map(|(_, i)| *i).collect();
    let mut have: Vec<String> = routes::dump(nl)
        .expect("dump routes")
        .into_iter()
        .filter(|r| !r.kernel && ours.contains(&r.key.oif))
        .map(|r| routes::describe(&r.key, ""))
        .collect();
    let mut wanted: Vec<String> = spec
        .routes
        .iter()
        .map(|r| routes::describe(&routes::key_of(r, index(&r.dev)).expect("key"), ""))
        .collect();
    have.sort();
    wanted.sort();
    assert_eq!(have, wanted, "routes");

    let mut have: Vec<String> = neighbours::dump(nl)
        .expect("dump neighbours")
        .into_iter()
        .filter(|n| ours.contains(&n.index))
        .map(|n| format!("{} {:?} {}", n.ip, n.mac, n.index))
        .collect();
    let mut wanted: Vec<String> = spec
        .neighbours
        .iter()
        .map(|n| format!("{} {:?} {}", n.ip, Some(n.mac), index(&n.dev)))
        .collect();
    have.sort();
    wanted.sort();
    assert_eq!(have, wanted, "neighbours");
}

fn scenario() {
    let mut nl = Netlink::open().expect("netlink");
    add_veth(&mut nl, "rv0", "rv0p", slot_mac(0));

    let first = NetSpec {
        nics: vec![nic(0, "eth0", 2, 1400, &["10.9.0.2/24", "fd09::2/64"])],
        routes: vec![via("10.9.0.1", "eth0"), via("fd09::1", "eth0")],
        neighbours: vec![neighbour("10.9.0.1", 1, "eth0")],
        dns_relay: vec![],
        publish_listeners: false,
    };
    apply(&first).expect("first spec");
    check(&mut nl, &first);
    let index = link(&mut nl, "eth0").index;
    apply(&first).expect("first spec again");
    check(&mut nl, &first);

    let mut second = NetSpec {
        nics: vec![nic(
            0,
            "eth0",
            3,
            1500,
            &["10.8.0.2/16", "fd08::2/64", "fd08::3/64"],
        )],
        routes: vec![via("10.8.0.1", "eth0"), via("fd08::1", "eth0")],
        neighbours: vec![neighbour("fd08::1", 2, "eth0")],
        dns_relay: vec![],
        publish_listeners: false,
    };
    second.routes.push(RouteSpec {
        dst: Some(cidr("192.168.7.0/24")),
        metric: Some(50),
        ..via("10.8.0.1", "eth0")
    });
    apply(&second).expect("second spec");
    check(&mut nl, &second);
    assert_eq!(link(&mut nl, "eth0").index, index);

    apply(&NetSpec::default()).expect("empty spec");
    let parked = link(&mut nl, "net0");
    assert_eq!(parked.index, index);
    assert!(!parked.up);
    let left: Vec<_> = addresses::dump(&mut nl)
        .expect("dump addresses")
        .into_iter()
        .filter(|a| a.index == index)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        routes::dump(&mut nl)
            .expect("routes")
            .iter()
            .all(|r| r.key.oif != index)
    );
    assert!(
        neighbours::dump(&mut nl)
            .expect("neigh")
            .iter()
            .all(|n| n.index != index)
    );

    let missing = NetSpec {
        nics: vec![nic(1, "eth1", 4, 1500, &[])],
        ..NetSpec::default()
    };
    assert_eq!(
        apply(&missing).expect_err("slot 1 is missing"),
        "no virtio-net interface for slot 1"
    );

    // Two NICs, then their names swapped (a reconnect in another order).
    add_veth(&mut nl, "rv1", "rv1p", slot_mac(1));
    let two = |a: &str, b: &str| NetSpec {
        nics: vec![
            nic(0, a, 5, 1500, &["10.5.0.2/24"]),
            nic(1, b, 6, 1500, &["10.6.0.2/24"]),
        ],
        routes: vec![via("10.5.0.1", a)],
        neighbours: vec![],
        dns_relay: vec![],
        publish_listeners: false,
    };
    apply(&two("eth0", "eth1")).expect("two nics");
    check(&mut nl, &two("eth0", "eth1"));
    apply(&two("eth1", "eth0")).expect("two nics swapped");
    check(&mut nl, &two("eth1", "eth0"));
    assert_eq!(link(&mut nl, "eth1").index, index);

    // Unwiring slot 0 leaves slot 1 as it was.
    let one = NetSpec {
        nics: vec![two("eth1", "eth0").nics[1].clone()],
        ..NetSpec::default()
    };
    apply(&one).expect("slot 0 unwired");
    check(&mut nl, &one);
    assert!(!link(&mut nl, "net0").up);

    // A failing step says which, on which interface, and the kernel's reason.
    let mut bad = one.clone();
    bad.routes.push(via("10.99.0.1", "eth0"));
    let e = apply(&bad).expect_err("an unreachable gateway");
    assert!(
        e.starts_with("cannot add route default via 10.99.0.1 dev eth0 metric 0: "),
        "{e}"
    );
}

#[test]
fn apply_makes_a_namespace_match_each_spec_in_turn() {
    if in_new_netns(scenario).is_none() {
        eprintln!("skipped: needs root and CLONE_NEWNET");
    }
}

#[test]
fn an_invalid_spec_is_refused_before_any_change() {
    let spec = NetSpec {
        nics: vec![nic(0, "eth0", 2, 10, &[])],
        ..NetSpec::default()
    };
    assert!(apply(&spec).expect_err("MTU 10").contains("MTU"));
}
