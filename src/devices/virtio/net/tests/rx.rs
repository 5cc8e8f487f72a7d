//! Tap to guest: frames land in the guest's buffers with `num_buffers` set; frames too large
//! for their buffer are dropped, bad chains cost no frame, and the tap is only watched while
//! the guest has buffers.

use super::*;

#[test]
fn rx_frame_lands_in_a_guest_buffer_with_num_buffers_one() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    guest.provide_rx(1, 2048);
    let before = guest.interrupts();
    // The tap leaves num_buffers as it finds it: junk here.
    let mut sent = vnet_hdr(0xff).to_vec();
    sent.extend(&frame(1500, 1)[VNET_HDR_LEN..]);
    peer.send(&sent).unwrap();
    guest.pump();
    let used = guest.take_used(RX_QUEUE);
    assert_eq!(used.len(), 1);
    let (head, len) = used[0];
    assert_eq!(len as usize, sent.len());
    let got = guest.read_rx(head, len);
    assert_eq!(&got[10..12], &[1, 0]);
    assert_eq!(got, as_received(&sent));
    assert_eq!(guest.interrupts(), before + 1);
    let stats = guest.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_bytes, stats.rx_dropped),
        (1, 1500, 0)
    );
}

#[test]
fn rx_frame_scattered_over_several_descriptors() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    guest.post_rx(&[wo(VNET_HDR_LEN as u32), wo(700), wo(700), wo(700)]);
    guest.kick(RX_QUEUE);
    let sent = frame(2000, 2);
    guest.assert_delivered(&peer, &sent);
    // A frame that exactly fills its chain fits.
    guest.post_rx(&[wo(40), wo(60)]);
    guest.kick(RX_QUEUE);
    let exact = frame(100 - VNET_HDR_LEN, 3);
    guest.assert_delivered(&peer, &exact);
}

#[test]
fn rx_frame_larger_than_its_buffer_is_dropped() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let small = guest.post_rx(&[wo(100)]);
    let large = guest.post_rx(&[wo(2048)]);
    guest.kick(RX_QUEUE);
    peer.send(&frame(200, 4)).unwrap();
    let second = frame(50, 5);
    peer.send(&second).unwrap();
    guest.pump();
    let used = guest.take_used(RX_QUEUE);
    assert_eq!(used, vec![(small, 0), (large, second.len() as u32)]);
    assert_eq!(guest.read_rx(large, used[1].1), as_received(&second));
    let stats = guest.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_dropped, stats.bad_chains),
        (1, 1, 0)
    );
}

#[test]
fn rx_bad_chains_are_returned_without_costing_a_frame() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let read_only = guest.post_rx(&[ro(2048)]);
    let mixed = guest.post_rx(&[wo(VNET_HDR_LEN as u32), ro(2048)]);
    let outside = guest.post_rx(&[Seg {
        addr: Some(OUTSIDE),
        ..wo(2048)
    }]);
    let straddling = guest.post_rx(&[Seg {
        addr: Some(MEM_SIZE as u64 - 100),
        ..wo(2048)
    }]);
    let good = guest.post_rx(&[wo(2048)]);
    guest.kick(RX_QUEUE);
    // The bad chains go back at once, before any frame arrives.
    let used = guest.take_used(RX_QUEUE);
    assert_eq!(
        used,
        vec![(read_only, 0), (mixed, 0), (outside, 0), (straddling, 0)]
    );
    let sent = frame(500, 6);
    peer.send(&sent).unwrap();
    guest.pump();
    let used = guest.take_used(RX_QUEUE);
    assert_eq!(used, vec![(good, sent.len() as u32)]);
    let stats = guest.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_dropped, stats.bad_chains),
        (1, 0, 4)
    );
}

#[test]
fn rx_datagram_shorter_than_a_header_is_skipped() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    guest.provide_rx(1, 2048);
    peer.send(&[1, 2, 3, 4, 5]).unwrap();
    let sent = frame(60, 7);
    guest.assert_delivered(&peer, &sent);
    assert_eq!(guest.stats().rx_dropped, 1);
}

#[test]
fn rx_stops_watching_the_tap_without_buffers_and_resumes_on_kick() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    // No buffers yet: the tap is registered but quiet.
    assert_eq!(guest.tap_interest(), Some(EventSet::empty()));
    let first = frame(100, 8);
    let second = frame(100, 9);
    peer.send(&first).unwrap();
    peer.send(&second).unwrap();
    // A readable tap with nowhere to go must not keep the loop busy (pump panics if it does).
    guest.pump();
    assert!(guest.take_used(RX_QUEUE).is_empty());

    // One buffer: the kick itself delivers a frame, and the queue is dry again.
    guest.provide_rx(1, 2048);
    assert_eq!(guest.recv(), vec![as_received(&first)]);
    assert_eq!(guest.tap_interest(), Some(EventSet::empty()));
    guest.pump();
    assert!(guest.take_used(RX_QUEUE).is_empty());

    // Buffers to spare: the tap is watched for the next frames.
    guest.provide_rx(3, 2048);
    assert_eq!(guest.recv(), vec![as_received(&second)]);
    assert_eq!(guest.tap_interest(), Some(EventSet::IN));
    let third = frame(100, 10);
    guest.assert_delivered(&peer, &third);
    assert_eq!(guest.tap_interest(), Some(EventSet::IN));
}

#[test]
fn rx_interrupts_once_per_batch() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    guest.provide_rx(4, 2048);
    let before = guest.interrupts();
    let sent: Vec<Vec<u8>> = (0..3).map(|seed| frame(300, seed)).collect();
    for frame in &sent {
        peer.send(frame).unwrap();
    }
    guest.pump();
    let expected: Vec<Vec<u8>> = sent.iter().map(|f| as_received(f)).collect();
    assert_eq!(guest.recv(), expected);
    assert_eq!(guest.interrupts(), before + 1);
}

#[test]
fn rx_reads_nothing_without_a_tap() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    guest.provide_rx(2, 2048);
    guest.pump();
    assert!(guest.take_used(RX_QUEUE).is_empty());
    assert_eq!(guest.tap_interest(), None);
}
