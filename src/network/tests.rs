//! The wiring on this host's kernel, each test in a network namespace of its own: a veth
//! pair stands for the engine's interface and the outside world, the scan reads it back,
//! and frames cross a [`Wire`] both ways (written to and read from the tap's descriptor as
//! the VMM's device does, sent and caught on the veth's peer with a packet socket).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::netlink::Netlink;
use super::tap::VNET_HDR_LEN;
use super::testnet::*;
use super::*;

const WAIT: Duration = Duration::from_secs(3);

fn interface(scan: &Scan, name: &str) -> Interface {
    scan.interfaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not in {scan:?}"))
        .clone()
}

/// Reads frames from the tap until one holds `marker`; the frame without its vnet header.
fn read_tap(tap: &mut File, marker: &[u8]) -> Option<Vec<u8>> {
    let end = Instant::now() + WAIT;
    let mut buf = vec![0u8; 65536];
    while wait_readable(tap, end) {
        match tap.read(&mut buf) {
            Ok(n) if n > VNET_HDR_LEN && contains(&buf[VNET_HDR_LEN..n], marker) => {
                return Some(buf[VNET_HDR_LEN..n].to_vec());
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("read the tap: {e}"),
        }
    }
    None
}

#[test]
fn the_scan_sees_the_veth_its_addresses_routes_and_neighbours() {
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        let (eth0, _) = add_veth(&mut nl, "eth0", "peer0", 1400);
        add_address(&mut nl, eth0, "10.1.2.3/24");
        add_address(&mut nl, eth0, "fd00::3/64");
        add_route(&mut nl, None, "10.1.2.1", eth0, None);
        add_route(&mut nl, Some("10.9.0.0/16"), "10.1.2.254", eth0, Some(5));
        add_route(&mut nl, None, "fd00::1", eth0, None);
        add_neighbour(&mut nl, eth0, "10.1.2.9", [2, 0, 0, 0, 0, 9]);
        let _tap = open_tap("rvtap0", 1400).unwrap();
        let taken = open_tap("rvtap0", 1400).unwrap_err();
        assert_eq!(taken.errno(), Some(libc::EBUSY), "{taken}");

        let scan = scan().unwrap();
        let mut names: Vec<&str> = scan.interfaces.iter().map(|i| i.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["eth0", "peer0"], "no lo, no rvtap0");
        let iface = interface(&scan, "eth0");
        assert_eq!(iface.index, eth0);
        assert_eq!(iface.mtu, 1400);
        assert_eq!(iface.kind.as_deref(), Some("veth"));
        assert!(iface.up);
        let mut addresses: Vec<String> = iface.addresses.iter().map(|a| a.to_string()).collect();
        addresses.sort();
        assert_eq!(addresses, ["10.1.2.3/24", "fd00::3/64"]);

        let ours: Vec<_> = scan.routes.iter().filter(|r| r.ifindex == eth0).collect();
        let gateway = |g: &str| Some(g.parse::<IpAddr>().unwrap());
        assert!(
            ours.iter()
                .any(|r| r.dst.is_none() && r.gateway == gateway("10.1.2.1") && !r.v6),
            "{ours:?}"
        );
        assert!(ours.iter().any(|r| {
            r.dst.map(|d| d.to_string()).as_deref() == Some("10.9.0.0/16")
                && r.gateway == gateway("10.1.2.254")
                && r.metric == Some(5)
        }));
        assert!(
            ours.iter()
                .any(|r| r.dst.is_none() && r.gateway == gateway("fd00::1") && r.v6)
        );
        // The kernel's own routes (10.1.2.0/24, fd00::/64, fe80::/64, ff00::/8) are not listed.
        assert_eq!(ours.len(), 3, "{ours:?}");
        assert_eq!(scan.neighbours.len(), 1);
        assert_eq!(scan.neighbours[0].ip.to_string(), "10.1.2.9");

        let spec = scan.to_netspec(|name| (name == "eth0").then_some(0));
        spec.validate().unwrap();
        assert_eq!(spec.nics.len(), 1);
        assert_eq!(spec.nics[0].mac, iface.mac);
        assert_eq!(spec.routes.len(), 3);
        assert_eq!(spec.neighbours.len(), 1);
    });
}

#[test]
fn a_wire_moves_frames_both_ways_and_cleans_up() {
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        let (eth0, peer0) = add_veth(&mut nl, "eth0", "peer0", 1400);
        let scan = scan().unwrap();
        let iface = interface(&scan, "eth0");
        let peer_mac = interface(&scan, "peer0").mac;

        let (wire, tap) = Wire::connect(&iface, &tap_name(0)).unwrap();
        assert_eq!((wire.iface_index(), wire.iface_name()), (eth0, "eth0"));
        assert_eq!(wire.tap_name(), "rvtap0");
        let (flags, mtu) = flags_of(&mut nl, wire.tap_index());
        assert!(flags.contains(netlink_packet_route::link::LinkFlags::Up));
        assert_eq!(mtu, 1400);
        assert_eq!(tc::redirect_targets(eth0).unwrap(), [wire.tap_index()]);
        assert_eq!(tc::redirect_targets(wire.tap_index()).unwrap(), [eth0]);

        // The guest's frame, written to the tap as the VMM does, leaves by eth0.
        let sock = PacketSocket::bind(peer0);
        let mut tap = File::from(tap);
        let mut out = vec![0u8; VNET_HDR_LEN];
        out.extend(frame(peer_mac, iface.mac, b"runvm: guest to peer"));
        tap.write_all(&out).unwrap();
        let got = sock
            .catch(b"runvm: guest to peer", WAIT)
            .expect("the peer got it");
        assert_eq!(&got[..6], &peer_mac);

        // A frame for the guest, arriving on eth0, is read from the tap.
        sock.send(&frame(iface.mac, peer_mac, b"runvm: peer to guest"));
        let got = read_tap(&mut tap, b"runvm: peer to guest").expect("the tap got it");
        assert_eq!(&got[..6], &iface.mac);
        assert_eq!(&got[6..12], &peer_mac);

        wire.disconnect().unwrap();
        assert!(!tc::has_ingress(eth0).unwrap());
        let mut late = vec![0u8; VNET_HDR_LEN];
        late.extend(frame(peer_mac, iface.mac, b"runvm: after disconnect"));
        tap.write_all(&late).unwrap();
        let short = Duration::from_millis(300);
        assert!(sock.catch(b"runvm: after disconnect", short).is_none());
        assert!(tc::redirect_targets(eth0).unwrap().is_empty());
        assert!(exists(&mut nl, "rvtap0"));
        drop(tap);
        assert!(
            !exists(&mut nl, "rvtap0"),
            "the tap goes with its descriptor"
        );
    });
}

#[test]
fn a_dropped_wire_clears_and_a_failed_connect_leaves_nothing() {
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        let (eth0, _) = add_veth(&mut nl, "eth0", "peer0", 1500);
        let iface = interface(&scan().unwrap(), "eth0");
        let (wire, tap) = Wire::connect(&iface, "rvtap3").unwrap();
        assert!(tc::has_ingress(eth0).unwrap());
        drop(wire);
        assert!(!tc::has_ingress(eth0).unwrap());
        drop(tap);

        let mut gone = iface.clone();
        gone.index = 4242;
        let err = Wire::connect(&gone, "rvtap4").unwrap_err();
        assert!(
            err.to_string().starts_with("cannot ") && err.to_string().contains("#4242"),
            "{err}"
        );
        assert_eq!(err.errno(), Some(libc::ENODEV));
        assert!(!exists(&mut nl, "rvtap4"));
        assert!(!tc::has_ingress(eth0).unwrap());
    });
}

#[test]
fn redirect_replaces_and_clear_tolerates_nothing_to_clear() {
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        let (eth0, peer0) = add_veth(&mut nl, "eth0", "peer0", 1500);
        tc::clear(eth0).unwrap();
        tc::redirect(eth0, peer0).unwrap();
        tc::redirect(eth0, peer0).unwrap();
        assert_eq!(tc::redirect_targets(eth0).unwrap(), [peer0]);
        tc::clear(eth0).unwrap();
        tc::clear(eth0).unwrap();
        assert!(!tc::has_ingress(eth0).unwrap());
        let err = tc::redirect(eth0, 4242).unwrap_err();
        assert!(
            err.to_string()
                .contains("redirecting eth0 to interface #4242"),
            "{err}"
        );
        assert!(!tc::has_ingress(eth0).unwrap(), "the qdisc is undone");
    });
}
