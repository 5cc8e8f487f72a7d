//! Guest to tap: frames reach the tap byte for byte; bad chains and headers, and frames with
//! nowhere to go, are dropped without stopping the queue.

use virtio_bindings::virtio_net::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};

use super::*;

#[test]
fn tx_frame_reaches_the_tap_byte_exact() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    // The fields that mean nothing without an offload carry junk: they pass through
    // untouched. hdr_len is the exception (the tap refuses one beyond the frame, see
    // `tx_offsets_must_stay_inside_the_frame`).
    let mut sent = vnet_hdr(0xa5).to_vec();
    sent[2..4].copy_from_slice(&54u16.to_le_bytes());
    sent.extend(frame(1500, 7)[VNET_HDR_LEN..].iter());
    guest.send(&sent);
    assert_eq!(recv_now(&peer).unwrap(), sent);
    assert_eq!(recv_now(&peer), None);
    let stats = guest.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_bytes, stats.tx_dropped),
        (1, 1500, 0)
    );
    assert_eq!(guest.interrupts(), 1);
}

#[test]
fn tx_frame_gathered_from_several_descriptors() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let sent = frame(3000, 1);
    // Header split in two, then the frame in two uneven parts.
    let used = guest.send_chain(&[ro(5), ro(7), ro(1000), ro(2000)], &sent);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1, 0);
    assert_eq!(recv_now(&peer).unwrap(), sent);
}

#[test]
fn tx_largest_frame_passes_and_one_byte_more_is_dropped() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let largest = frame(MAX_FRAME_LEN, 2);
    assert_eq!(largest.len(), MAX_BUF_LEN);
    guest.send_chain(
        &[ro(VNET_HDR_LEN as u32), ro(MAX_FRAME_LEN as u32)],
        &largest,
    );
    assert_eq!(recv_now(&peer).unwrap(), largest);

    let too_large = frame(MAX_FRAME_LEN + 1, 3);
    let used = guest.send_chain(&[ro(40_000), ro(25_563)], &too_large);
    assert_eq!(used, vec![(used[0].0, 0)]);
    assert_eq!(recv_now(&peer), None);
    // Descriptors of 4 GiB each are refused the same way.
    let used = guest.send_chain(&[ro(u32::MAX), ro(u32::MAX)], &[]);
    assert_eq!(used.len(), 1);
    assert_eq!(recv_now(&peer), None);
    let stats = guest.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_dropped, stats.bad_chains),
        (1, 2, 2)
    );
}

#[test]
fn tx_header_asking_for_offloads_is_dropped() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let mut csum = frame(100, 4);
    csum[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    guest.send(&csum);
    let mut gso = frame(100, 5);
    gso[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    guest.send(&gso);
    assert_eq!(recv_now(&peer), None);
    // The queue keeps working.
    let good = frame(100, 6);
    guest.send(&good);
    assert_eq!(recv_now(&peer).unwrap(), good);
    let stats = guest.stats();
    assert_eq!((stats.tx_frames, stats.tx_dropped), (1, 2));
}

#[test]
fn tx_chain_with_a_write_only_descriptor_is_dropped() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let sent = frame(100, 8);
    let used = guest.send_chain(&[ro(VNET_HDR_LEN as u32), wo(100)], &sent);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1, 0);
    let used = guest.send_chain(&[wo(112)], &sent);
    assert_eq!(used.len(), 1);
    assert_eq!(recv_now(&peer), None);
    assert_eq!(guest.stats().bad_chains, 2);
}

#[test]
fn tx_chains_too_short_or_outside_memory_are_dropped() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    guest.send(&frame(0, 0)[..VNET_HDR_LEN - 1]);
    let outside = Seg {
        addr: Some(OUTSIDE),
        ..ro(100)
    };
    let used = guest.send_chain(&[ro(VNET_HDR_LEN as u32), outside], &frame(0, 0));
    assert_eq!(used.len(), 1);
    // Straddling the end of guest memory.
    let straddling = Seg {
        addr: Some(MEM_SIZE as u64 - 10),
        ..ro(100)
    };
    let used = guest.send_chain(&[straddling], &[]);
    assert_eq!(used.len(), 1);
    // Two descriptors that add up to less than a header.
    let used = guest.send_chain(&[ro(4), ro(4)], &[0; 8]);
    assert_eq!(used.len(), 1);
    assert_eq!(recv_now(&peer), None);
    let stats = guest.stats();
    assert_eq!((stats.tx_frames, stats.tx_dropped), (0, 4));
}

#[test]
fn tx_frames_are_dropped_while_detached() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    guest.send(&frame(60, 9));
    guest.send(&frame(60, 10));
    let stats = guest.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_dropped, stats.bad_chains),
        (0, 2, 0)
    );
}

#[test]
fn tx_to_a_full_tap_drops_without_blocking() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    // The host end never reads: the socket's send buffer fills after a few large
    // datagrams, then writes fail with EAGAIN and the frames are dropped.
    for _ in 0..100 {
        guest.send(&frame(MAX_FRAME_LEN, 11));
    }
    let stats = guest.stats();
    assert_eq!(stats.tx_frames + stats.tx_dropped, 100);
    assert!(stats.tx_dropped > 0, "{stats:?}");
    assert!(stats.tx_frames > 0, "{stats:?}");
    let mut received = 0;
    while recv_now(&peer).is_some() {
        received += 1;
    }
    assert_eq!(received, stats.tx_frames);
}

#[test]
fn tx_interrupts_once_per_batch() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let before = guest.interrupts();
    for seed in 0..3 {
        let sent = frame(64, seed);
        guest.push_chain(TX_QUEUE, &[ro(sent.len() as u32)], &sent);
    }
    guest.kick(TX_QUEUE);
    assert_eq!(guest.take_used(TX_QUEUE).len(), 3);
    assert_eq!(guest.interrupts(), before + 1);
    for seed in 0..3 {
        assert_eq!(recv_now(&peer).unwrap(), frame(64, seed));
    }
}

#[test]
fn tx_before_activation_waits_for_it() {
    let mem = test_memory();
    let mut guest = TestGuest::inactive(&mem);
    let peer = guest.attach_tap();
    let sent = frame(64, 12);
    guest.push_chain(TX_QUEUE, &[ro(sent.len() as u32)], &sent);
    guest.kick(TX_QUEUE);
    assert!(guest.take_used(TX_QUEUE).is_empty());
    guest.activate();
    assert_eq!(guest.take_used(TX_QUEUE), vec![(0, 0)]);
    assert_eq!(recv_now(&peer).unwrap(), sent);
}
