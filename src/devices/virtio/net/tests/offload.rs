//! Offloads: tx headers may ask for exactly what the guest negotiated, with every offset inside
//! the frame; rx headers may carry only what the guest accepted; the tap is told which
//! offloads it may use, and a tap that refuses is left plain.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP,
};

use super::super::backend::TunOffloads;
use super::super::header::{Negotiated, tap_offloads};
use super::*;
use crate::devices::virtio::VIRTIO_F_VERSION_1;

const NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
const DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
const NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
const TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
const TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;
const UDP: u8 = VIRTIO_NET_HDR_GSO_UDP as u8;
const ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;

/// A vnet header's fields, as the guest or the tap fills them.
#[derive(Clone, Copy)]
struct Hdr {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

/// A TCP segment's header: checksum at 34+16, headers of 66 bytes, MSS 1448.
const TSO: Hdr = Hdr {
    flags: NEEDS_CSUM,
    gso_type: TCPV4,
    hdr_len: 66,
    gso_size: 1448,
    csum_start: 34,
    csum_offset: 16,
};

/// No offload at all.
const PLAIN: Hdr = Hdr {
    flags: 0,
    gso_type: NONE,
    hdr_len: 0,
    gso_size: 0,
    csum_start: 0,
    csum_offset: 0,
};

/// `hdr` in front of `len` bytes of frame.
fn with_hdr(hdr: Hdr, len: usize, seed: u8) -> Vec<u8> {
    let mut out = frame(len, seed);
    out[0] = hdr.flags;
    out[1] = hdr.gso_type;
    for (at, value) in [
        (2, hdr.hdr_len),
        (4, hdr.gso_size),
        (6, hdr.csum_start),
        (8, hdr.csum_offset),
    ] {
        out[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }
    out
}

/// Sends each of `frames` (header, length) and returns which reached the tap.
fn tx_passes(guest: &mut TestGuest, peer: &UnixDatagram, frames: &[(Hdr, usize)]) -> Vec<bool> {
    frames
        .iter()
        .enumerate()
        .map(|(i, &(hdr, len))| {
            let sent = with_hdr(hdr, len, i as u8);
            guest.send(&sent);
            match recv_now(peer) {
                Some(got) => {
                    assert_eq!(got, sent, "frame {i} changed on its way");
                    true
                }
                None => false,
            }
        })
        .collect()
}

#[test]
fn tx_checksum_offload_only_when_negotiated() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(VIRTIO_NET_F_CSUM));
    let csum = |start, offset| Hdr {
        flags: NEEDS_CSUM,
        csum_start: start,
        csum_offset: offset,
        ..PLAIN
    };
    let passed = tx_passes(
        &mut guest,
        &peer,
        &[
            (csum(34, 16), 100),
            // The checksum's last byte is the frame's last: fits.
            (csum(84, 14), 100),
            // One byte past.
            (csum(85, 14), 100),
            (csum(u16::MAX, u16::MAX), 100),
            // The driver must not set DATA_VALID (nor any flag but NEEDS_CSUM).
            (
                Hdr {
                    flags: DATA_VALID,
                    ..PLAIN
                },
                100,
            ),
            (
                Hdr {
                    flags: 0x80,
                    ..PLAIN
                },
                100,
            ),
            // Headers longer than the frame.
            (
                Hdr {
                    hdr_len: 101,
                    ..csum(34, 16)
                },
                100,
            ),
            (
                Hdr {
                    hdr_len: 100,
                    ..csum(34, 16)
                },
                100,
            ),
        ],
    );
    assert_eq!(
        passed,
        [true, true, false, false, false, false, false, true]
    );
    let stats = guest.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_dropped, stats.tx_bad_header),
        (3, 5, 5)
    );
    assert_eq!(stats.bad_chains, 0);

    // Not negotiated: refused.
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    assert_eq!(
        tx_passes(&mut guest, &peer, &[(csum(34, 16), 100)]),
        [false]
    );
    assert_eq!(guest.stats().tx_bad_header, 1);
}

#[test]
fn tx_segmentation_only_as_negotiated() {
    let mem = test_memory();
    let features = bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    let passed = tx_passes(
        &mut guest,
        &peer,
        &[
            // A 64 KiB segment: the largest frame.
            (TSO, MAX_FRAME_LEN),
            (TSO, 3000),
            (
                Hdr {
                    gso_type: TCPV6,
                    ..TSO
                },
                3000,
            ),
            (
                Hdr {
                    gso_type: TCPV4 | ECN,
                    ..TSO
                },
                3000,
            ),
            (
                Hdr {
                    gso_type: UDP,
                    ..TSO
                },
                3000,
            ),
            (
                Hdr {
                    gso_type: 0x7f,
                    ..TSO
                },
                3000,
            ),
            (
                Hdr {
                    gso_type: NONE | ECN,
                    ..TSO
                },
                3000,
            ),
            // Segmentation needs a checksum to fill in.
            (Hdr { flags: 0, ..TSO }, 3000),
            (Hdr { gso_size: 0, ..TSO }, 3000),
            // A segment as large as the frame is no segmentation.
            (
                Hdr {
                    gso_size: 3000,
                    ..TSO
                },
                3000,
            ),
            (
                Hdr {
                    gso_size: 2999,
                    ..TSO
                },
                3000,
            ),
            (
                Hdr {
                    hdr_len: 3001,
                    ..TSO
                },
                3000,
            ),
        ],
    );
    assert_eq!(
        passed,
        [
            true, true, false, false, false, false, false, false, false, false, true, false
        ]
    );
    // One byte more than the largest frame is still too large.
    let too_large = with_hdr(TSO, MAX_FRAME_LEN + 1, 0);
    guest.send_chain(&[ro(40_000), ro(25_563)], &too_large);
    assert_eq!(recv_now(&peer), None);
    let stats = guest.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_bad_header, stats.bad_chains),
        (3, 9, 1)
    );

    // Everything negotiated: IPv6 and the ECN bit pass.
    let features = features | bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    let tcpv6_ecn = Hdr {
        gso_type: TCPV6 | ECN,
        csum_start: 54,
        hdr_len: 86,
        ..TSO
    };
    assert_eq!(tx_passes(&mut guest, &peer, &[(tcpv6_ecn, 3000)]), [true]);
}

#[test]
fn tx_segmentation_without_checksum_offload_is_refused() {
    // A driver that ignores HOST_TSO4's dependency on CSUM.
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(VIRTIO_NET_F_HOST_TSO4));
    assert_eq!(tx_passes(&mut guest, &peer, &[(TSO, 3000)]), [false]);
}

/// Sends `hdr` in front of a frame from the tap; returns what the guest got, if anything.
fn rx_through(guest: &mut TestGuest, peer: &UnixDatagram, hdr: Hdr) -> Option<Vec<u8>> {
    peer.send(&with_hdr(hdr, 3000, 1)).unwrap();
    guest.pump();
    let mut got = guest.recv();
    assert!(got.len() <= 1);
    got.pop()
}

#[test]
fn rx_headers_carry_only_what_the_guest_accepted() {
    let mem = test_memory();
    // Nothing accepted: DATA_VALID is cleared, the rest refused.
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    guest.provide_rx(8, 4096);
    let valid = Hdr {
        flags: DATA_VALID,
        ..PLAIN
    };
    let got = rx_through(&mut guest, &peer, valid).unwrap();
    assert_eq!(got, as_received(&with_hdr(PLAIN, 3000, 1)));
    assert_eq!(
        rx_through(
            &mut guest,
            &peer,
            Hdr {
                gso_type: NONE,
                ..TSO
            }
        ),
        None
    );
    assert_eq!(rx_through(&mut guest, &peer, TSO), None);
    let stats = guest.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_dropped, stats.rx_bad_header),
        (1, 2, 2)
    );

    // Checksums and TCPv4 segments accepted.
    let features = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    guest.provide_rx(8, 4096);
    for hdr in [
        valid,
        Hdr {
            gso_type: NONE,
            ..TSO
        },
        TSO,
    ] {
        let got = rx_through(&mut guest, &peer, hdr).unwrap();
        assert_eq!(got, as_received(&with_hdr(hdr, 3000, 1)));
    }
    for gso_type in [TCPV6, TCPV4 | ECN, UDP, NONE | ECN] {
        let hdr = Hdr { gso_type, ..TSO };
        assert_eq!(rx_through(&mut guest, &peer, hdr), None, "{gso_type:#x}");
    }
    // Unknown flags are cleared.
    let odd = Hdr {
        flags: DATA_VALID | 0x40,
        ..PLAIN
    };
    let got = rx_through(&mut guest, &peer, odd).unwrap();
    assert_eq!(got, as_received(&with_hdr(valid, 3000, 1)));
    assert_eq!(guest.stats().rx_bad_header, 4);
}

#[test]
fn tap_offloads_come_from_the_guest_features() {
    let offloads = |features: u64| tap_offloads(&Negotiated::from_features(features));
    let csum = bit(VIRTIO_NET_F_GUEST_CSUM);
    let tso4 = bit(VIRTIO_NET_F_GUEST_TSO4);
    let tso6 = bit(VIRTIO_NET_F_GUEST_TSO6);
    let ecn = bit(VIRTIO_NET_F_GUEST_ECN);
    assert_eq!(offloads(0), 0);
    // The host direction's features do not matter.
    let host = bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_ECN);
    assert_eq!(offloads(host), 0);
    assert_eq!(offloads(csum), libc::TUN_F_CSUM);
    assert_eq!(
        offloads(csum | tso4 | tso6 | ecn),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
    );
    assert_eq!(offloads(csum | tso6), libc::TUN_F_CSUM | libc::TUN_F_TSO6);
    // What the tap would refuse is never asked for.
    assert_eq!(offloads(tso4 | tso6 | ecn), 0);
    assert_eq!(offloads(csum | ecn), libc::TUN_F_CSUM);
}

#[test]
fn the_tap_is_told_its_offloads_on_attach_activation_and_reset() {
    let mem = test_memory();
    let log = OffloadLog::default();
    let mut guest = TestGuest::inactive(&mem);
    guest.dev().offload_control = Box::new(log.clone());
    let (tap, _peer) = tap_pair();
    let first_fd = tap.as_raw_fd();
    guest.handle.attach(tap).unwrap();
    guest.wake();
    // No features yet: none.
    assert_eq!(log.flags(), [0]);
    let features = VIRTIO_F_VERSION_1
        | bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_GUEST_TSO6)
        | bit(VIRTIO_NET_F_GUEST_ECN)
        | bit(VIRTIO_NET_F_MRG_RXBUF);
    guest.dev().ack_features(features);
    guest.activate();
    let all = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    assert_eq!(log.flags(), [0, all]);
    assert_eq!(log.calls.lock().unwrap()[1].0, first_fd);
    assert_eq!(guest.dev().backend.as_ref().unwrap().offloads(), Some(all));

    // A new tap gets them at once.
    let (tap, _peer) = tap_pair();
    let second_fd = tap.as_raw_fd();
    guest.handle.attach(tap).unwrap();
    guest.wake();
    assert_eq!(log.calls.lock().unwrap().last(), Some(&(second_fd, all)));
    // A reset takes them away: frames queued until the next activation are plain.
    assert!(guest.dev().reset());
    assert_eq!(log.flags().last(), Some(&0));
    assert_eq!(log.flags().len(), 4);
}

#[test]
fn a_tap_that_refuses_offloads_stays_plain_and_is_not_asked_again() {
    let mem = test_memory();
    let log = OffloadLog {
        refuse: true,
        ..OffloadLog::default()
    };
    let mut guest = TestGuest::inactive(&mem);
    guest.dev().offload_control = Box::new(log.clone());
    guest
        .dev()
        .ack_features(VIRTIO_F_VERSION_1 | bit(VIRTIO_NET_F_GUEST_CSUM));
    guest.activate();
    let peer = guest.attach_tap();
    // Asked for checksums, refused; asked for none instead, once.
    assert_eq!(log.flags(), [libc::TUN_F_CSUM, 0]);
    {
        let dev = guest.dev();
        let tap = dev.backend.as_ref().unwrap();
        assert!(tap.offloads_refused());
        assert_eq!(tap.offloads(), None);
    }
    assert!(guest.dev().reset());
    guest.queues = driver_queues(&mem);
    guest.free_slots = [(0..SLOTS).collect(), (0..SLOTS).collect()];
    guest.activate();
    assert_eq!(log.flags().len(), 2);
    // Frames flow all the same.
    guest.provide_rx(1, 2048);
    guest.assert_delivered(&peer, &frame(100, 1));
    guest.send(&frame(100, 2));
    assert_eq!(recv_now(&peer).unwrap(), frame(100, 2));
}

#[test]
fn tunsetoffload_on_anything_but_a_tap_fails_cleanly() {
    let (ours, _peer) = tap_pair();
    let err = TunOffloads
        .set_offloads(ours.as_raw_fd(), libc::TUN_F_CSUM)
        .unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)),
        "{err}"
    );
    // The device behind the real ioctl falls back to plain frames and works.
    let mem = test_memory();
    let features = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    assert!(guest.dev().backend.as_ref().unwrap().offloads_refused());
    guest.provide_rx(1, 2048);
    guest.assert_delivered(&peer, &frame(100, 3));
}

#[test]
fn a_nic_without_offloads_offers_none_and_never_sets_them() {
    let mem = test_memory();
    let log = OffloadLog::default();
    let mut guest = TestGuest::inactive_with(&mem, false);
    guest.dev().offload_control = Box::new(log.clone());
    let offered = guest.dev().device_features();
    assert_eq!(offered & super::super::device::OFFLOAD_FEATURES, 0);
    assert_ne!(offered & bit(VIRTIO_NET_F_MRG_RXBUF), 0);
    // A driver that asks for everything gets what was offered only.
    guest.dev().ack_features(u64::MAX);
    guest.activate();
    let peer = guest.attach_tap();
    assert!(
        log.flags().is_empty(),
        "TUNSETOFFLOAD tried: {:?}",
        log.flags()
    );
    // Plain frames go both ways; a frame asking for a checksum offload is refused.
    let passed = tx_passes(&mut guest, &peer, &[(PLAIN, 100), (TSO, 3000)]);
    assert_eq!(passed, [true, false]);
    guest.provide_rx(1, 2048);
    guest.assert_delivered(&peer, &frame(100, 1));
    assert!(guest.dev().reset());
    assert!(log.flags().is_empty());
}
