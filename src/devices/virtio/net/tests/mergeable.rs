//! Mergeable rx buffers: a frame spans as many chains as it needs, `num_buffers` counting them;
//! a frame that finds too few waits, whole, for the guest to add buffers, and goes first when
//! it does.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::*;
use virtio_queue::QueueT;

const MRG: u32 = VIRTIO_NET_F_MRG_RXBUF;

#[test]
fn a_frame_spans_as_many_chains_as_it_needs() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(MRG));
    let heads: Vec<u16> = (0..5).map(|_| guest.post_rx(&[wo(1000)])).collect();
    guest.kick(RX_QUEUE);
    // 12 + 3000 bytes: three full chains and 12 bytes in a fourth.
    let sent = frame(3000, 1);
    peer.send(&sent).unwrap();
    guest.pump();
    let used = guest.take_used(RX_QUEUE);
    assert_eq!(
        used,
        vec![
            (heads[0], 1000),
            (heads[1], 1000),
            (heads[2], 1000),
            (heads[3], 12)
        ]
    );
    let mut got = Vec::new();
    for &(head, len) in &used {
        got.extend(guest.read_rx(head, len));
    }
    assert_eq!(got, as_received_in(&sent, 4));

    // A small frame takes one chain, num_buffers 1.
    let small = frame(200, 2);
    peer.send(&small).unwrap();
    guest.pump();
    assert_eq!(guest.recv_merged(), vec![(as_received(&small), 1)]);
    let stats = guest.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_bytes, stats.rx_dropped),
        (2, 3200, 0)
    );
}

#[test]
fn a_64k_segment_spreads_over_page_sized_buffers() {
    let mem = test_memory();
    let features = bit(MRG) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    for _ in 0..SLOTS {
        guest.post_rx(&[wo(1536), wo(2560)]);
    }
    guest.kick(RX_QUEUE);
    let mut sent = frame(MAX_FRAME_LEN, 3);
    sent[0] = 1; // NEEDS_CSUM
    sent[1] = 1; // GSO_TCPV4
    peer.send(&sent).unwrap();
    guest.pump();
    let chains = MAX_BUF_LEN.div_ceil(4096);
    assert_eq!(
        guest.recv_merged(),
        vec![(as_received_in(&sent, chains as u16), chains)]
    );
}

#[test]
fn a_bad_chain_met_midway_goes_back_before_the_frame() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(MRG));
    let first = guest.post_rx(&[wo(1000)]);
    let bad = guest.post_rx(&[ro(1000)]);
    let second = guest.post_rx(&[wo(1000)]);
    guest.kick(RX_QUEUE);
    let sent = frame(1500, 4);
    peer.send(&sent).unwrap();
    guest.pump();
    let used = guest.take_used(RX_QUEUE);
    assert_eq!(used, vec![(bad, 0), (first, 1000), (second, 512)]);
    let mut got = guest.read_rx(first, 1000);
    got.extend(guest.read_rx(second, 512));
    assert_eq!(got, as_received_in(&sent, 2));
    assert_eq!(guest.stats().bad_chains, 1);
}

#[test]
fn chains_shorter_than_a_header_are_refused() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(MRG));
    let tiny = guest.post_rx(&[wo(8)]);
    guest.post_rx(&[wo(2048)]);
    guest.kick(RX_QUEUE);
    assert_eq!(guest.take_used(RX_QUEUE), vec![(tiny, 0)]);
    let sent = frame(100, 5);
    peer.send(&sent).unwrap();
    guest.pump();
    assert_eq!(guest.recv_merged(), vec![(as_received(&sent), 1)]);
    assert_eq!(guest.stats().bad_chains, 1);
}

#[test]
fn a_frame_waits_for_buffers_and_goes_first() {
    let mem = test_memory();
    let features = bit(MRG) | bit(VIRTIO_RING_F_EVENT_IDX);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    assert!(guest.post_rx_as_driver(2, &[wo(1000)], true));
    let large = frame(3000, 6);
    let small = frame(100, 7);
    peer.send(&large).unwrap();
    peer.send(&small).unwrap();
    guest.pump();
    // Two chains are not enough: nothing used, the frame waits in the device, the tap is not
    // watched, and the next buffer the driver adds is worth a kick.
    assert!(guest.take_used(RX_QUEUE).is_empty());
    assert_eq!(guest.dev().rx_pending, Some(large.len()));
    assert_eq!(guest.tap_interest(), Some(EventSet::empty()));
    assert_eq!(guest.queues.avail_event(RX_QUEUE), 2);
    assert_eq!(guest.dev().active.as_ref().unwrap().rx.next_avail(), 0);

    // One more is still not enough; a fourth is.
    assert!(guest.post_rx_as_driver(1, &[wo(1000)], true));
    assert!(guest.take_used(RX_QUEUE).is_empty());
    assert!(guest.post_rx_as_driver(1, &[wo(1000)], true));
    assert_eq!(guest.recv_merged(), vec![(as_received_in(&large, 4), 4)]);
    assert_eq!(guest.dev().rx_pending, None);
    // The small frame was not read meanwhile: it comes with the next buffer.
    assert_eq!(guest.tap_interest(), Some(EventSet::empty()));
    assert!(guest.post_rx_as_driver(2, &[wo(1000)], true));
    assert_eq!(guest.recv_merged(), vec![(as_received(&small), 1)]);
    assert_eq!(guest.tap_interest(), Some(EventSet::IN));
    let stats = guest.stats();
    assert_eq!((stats.rx_frames, stats.rx_dropped), (2, 0));
}

#[test]
fn a_waiting_frame_outlives_its_tap_but_not_a_reset() {
    let mem = test_memory();
    let mut guest = TestGuest::inactive(&mem);
    guest.dev().ack_features(bit(MRG));
    guest.activate();
    let (ours, peer) = UnixDatagram::pair().unwrap();
    let our_copy = ours.try_clone().unwrap();
    guest.handle.attach(OwnedFd::from(ours)).unwrap();
    guest.wake();
    guest.provide_rx(1, 1000);
    let large = frame(3000, 8);
    peer.send(&large).unwrap();
    guest.pump();
    assert_eq!(guest.dev().rx_pending, Some(large.len()));
    // The tap hangs up: it leaves the loop, the frame it gave stays.
    our_copy.shutdown(std::net::Shutdown::Both).unwrap();
    guest.pump();
    assert_eq!(guest.tap_interest(), None);
    guest.provide_rx(3, 1000);
    assert_eq!(guest.recv_merged(), vec![(as_received_in(&large, 4), 4)]);

    // A new tap, a new frame waiting: a reset drops it.
    let peer = guest.attach_tap();
    peer.send(&large).unwrap();
    guest.provide_rx(1, 1000);
    assert_eq!(guest.dev().rx_pending, Some(large.len()));
    assert!(guest.dev().reset());
    assert_eq!(guest.dev().rx_pending, None);
    let stats = guest.stats();
    assert_eq!((stats.rx_frames, stats.rx_dropped), (1, 1));
}

#[test]
fn a_frame_the_whole_queue_cannot_hold_is_dropped() {
    let mem = test_memory();
    let mut guest = TestGuest::inactive(&mem);
    const SIZE: u16 = 4;
    guest.queues = DriverQueues::new(&mem, &QUEUE_ADDRS, SIZE);
    guest.dev().ack_features(bit(MRG));
    guest.activate();
    let peer = guest.attach_tap();
    let buf = |i: u16| BUF_BASES[RX_QUEUE] + u64::from(i) * 0x1000;
    for head in 0..SIZE {
        guest.queues.store(
            RX_QUEUE,
            head,
            &[desc(buf(head), 100, VRING_DESC_F_WRITE, 0)],
        );
        guest.queues.publish(RX_QUEUE, head);
    }
    guest.kick(RX_QUEUE);
    // 412 bytes in four 100-byte chains: never.
    peer.send(&frame(400, 9)).unwrap();
    let small = frame(50, 10);
    peer.send(&small).unwrap();
    guest.pump();
    // The large frame is dropped, its chains left for the next.
    assert_eq!(
        guest.queues.take_used(RX_QUEUE),
        vec![(0, small.len() as u32)]
    );
    let mut got = vec![0u8; small.len()];
    mem.read_slice(&mut got, GuestAddress(buf(0))).unwrap();
    assert_eq!(got, as_received(&small));
    let stats = guest.stats();
    assert_eq!((stats.rx_frames, stats.rx_dropped), (1, 1));
    assert_eq!(guest.dev().rx_pending, None);
}

#[test]
fn without_mergeable_buffers_a_tso_frame_takes_one_large_chain() {
    let mem = test_memory();
    let features = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    guest.post_rx(&[wo(VNET_HDR_LEN as u32), wo(MAX_FRAME_LEN as u32)]);
    guest.kick(RX_QUEUE);
    let mut sent = frame(60_000, 11);
    sent[0] = 1; // NEEDS_CSUM
    sent[1] = 1; // GSO_TCPV4
    guest.assert_delivered(&peer, &sent);
}
