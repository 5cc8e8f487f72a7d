//! Notification suppression: with event indexes the device asks for kicks only once it has
//! drained a queue (tx) or run out of buffers (rx), and interrupts only when the driver's
//! `used_event` says so; without them it uses the used ring's `NO_NOTIFY` flag the same way.

use virtio_bindings::bindings::virtio_ring::VRING_USED_F_NO_NOTIFY;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;

use super::super::device::rearm_notification;
use super::*;

const EVENT_IDX: u32 = VIRTIO_RING_F_EVENT_IDX;

/// Queues `count` frames on tx and notifies only if the device asked for it; returns whether
/// it did.
fn send_as_driver(guest: &mut TestGuest, count: u8, event_idx: bool) -> bool {
    let old = guest.queues.avail_idx(TX_QUEUE);
    for seed in 0..count {
        let sent = frame(64, seed);
        guest.push_chain(TX_QUEUE, &[ro(sent.len() as u32)], &sent);
    }
    let kick = guest.queues.kick_wanted(TX_QUEUE, old, event_idx);
    if kick {
        guest.kick(TX_QUEUE);
    }
    kick
}

#[test]
fn event_idx_is_offered_and_used_only_when_accepted() {
    let mem = test_memory();
    let (guest, _peer) = TestGuest::with_features(&mem, bit(EVENT_IDX));
    assert_ne!(guest.dev().device_features() & bit(EVENT_IDX), 0);
    {
        let dev = guest.dev();
        let active = dev.active.as_ref().unwrap();
        assert!(active.rx.event_idx_enabled() && active.tx.event_idx_enabled());
    }
    let (guest, _peer) = TestGuest::with_tap(&mem);
    let dev = guest.dev();
    let active = dev.active.as_ref().unwrap();
    assert!(!active.rx.event_idx_enabled() && !active.tx.event_idx_enabled());
}

#[test]
fn tx_with_event_idx_asks_for_the_next_kick_once_drained() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(EVENT_IDX));
    assert!(send_as_driver(&mut guest, 3, true));
    assert_eq!(guest.take_used(TX_QUEUE).len(), 3);
    // Drained: the next chain published (index 3) is worth a kick, none before it.
    assert_eq!(guest.queues.avail_event(TX_QUEUE), 3);
    assert!(send_as_driver(&mut guest, 1, true));
    assert_eq!(guest.take_used(TX_QUEUE).len(), 1);
    assert_eq!(guest.queues.avail_event(TX_QUEUE), 4);

    // Two frames published one after the other before the device runs: one kick.
    let sent = frame(64, 8);
    let old = guest.queues.avail_idx(TX_QUEUE);
    guest.push_chain(TX_QUEUE, &[ro(sent.len() as u32)], &sent);
    assert!(guest.queues.kick_wanted(TX_QUEUE, old, true));
    let old = guest.queues.avail_idx(TX_QUEUE);
    guest.push_chain(TX_QUEUE, &[ro(sent.len() as u32)], &sent);
    assert!(!guest.queues.kick_wanted(TX_QUEUE, old, true));
    guest.kick(TX_QUEUE);
    assert_eq!(guest.take_used(TX_QUEUE).len(), 2);
    let mut received = 0;
    while recv_now(&peer).is_some() {
        received += 1;
    }
    assert_eq!(received, 6);
}

#[test]
fn tx_without_event_idx_turns_kicks_back_on_once_drained() {
    let mem = test_memory();
    let (mut guest, _peer) = TestGuest::with_tap(&mem);
    assert!(send_as_driver(&mut guest, 3, false));
    assert_eq!(guest.take_used(TX_QUEUE).len(), 3);
    assert_eq!(
        guest.queues.used_flags(TX_QUEUE) & VRING_USED_F_NO_NOTIFY as u16,
        0
    );
    assert!(send_as_driver(&mut guest, 1, false));
}

#[test]
fn tx_with_event_idx_interrupts_when_used_event_says_so() {
    let mem = test_memory();
    let (mut guest, _peer) = TestGuest::with_features(&mem, bit(EVENT_IDX));
    let before = guest.interrupts();
    // Interrupt me once the used index passes 1 (that is, at the second chain).
    guest.queues.set_used_event(TX_QUEUE, 1);
    guest.send(&frame(64, 1));
    assert_eq!(guest.interrupts(), before);
    guest.send(&frame(64, 2));
    assert_eq!(guest.interrupts(), before + 1);
    // Nothing asked for past 2: quiet.
    guest.send(&frame(64, 3));
    assert_eq!(guest.interrupts(), before + 1);
}

#[test]
fn rx_with_event_idx_interrupts_when_used_event_says_so() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(EVENT_IDX));
    guest.provide_rx(4, 2048);
    guest.queues.set_used_event(RX_QUEUE, 2);
    let before = guest.interrupts();
    for seed in 0..3u8 {
        let old = guest.dev().active.as_ref().unwrap().rx.next_used();
        let sent = frame(100, seed);
        guest.assert_delivered(&peer, &sent);
        let wanted = guest.queues.interrupt_wanted(RX_QUEUE, old);
        assert_eq!(wanted, seed == 2, "frame {seed}");
    }
    assert_eq!(guest.interrupts(), before + 1);
}

#[test]
fn rx_with_event_idx_asks_for_kicks_only_when_out_of_buffers() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(EVENT_IDX));
    // The first buffers: the driver does not know yet (avail_event starts at 0), so it kicks.
    assert!(guest.post_rx_as_driver(4, &[wo(2048)], true));
    assert_eq!(guest.tap_interest(), Some(EventSet::IN));
    // The device has buffers: more are not worth a kick.
    assert!(!guest.post_rx_as_driver(1, &[wo(2048)], true));
    let sent: Vec<Vec<u8>> = (0..6).map(|seed| frame(200, seed)).collect();
    for frame in &sent {
        peer.send(frame).unwrap();
    }
    guest.pump();
    let expected: Vec<Vec<u8>> = sent[..5].iter().map(|f| as_received(f)).collect();
    assert_eq!(guest.recv(), expected);
    // Out of buffers, the sixth frame still in the tap: the next buffer is worth a kick.
    assert_eq!(guest.tap_interest(), Some(EventSet::empty()));
    assert_eq!(guest.queues.avail_event(RX_QUEUE), 5);
    assert!(guest.post_rx_as_driver(1, &[wo(2048)], true));
    assert_eq!(guest.recv(), vec![as_received(&sent[5])]);
}

#[test]
fn rx_without_event_idx_sets_no_notify_while_it_has_buffers() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let no_notify = VRING_USED_F_NO_NOTIFY as u16;
    assert!(guest.post_rx_as_driver(2, &[wo(2048)], false));
    assert_eq!(guest.queues.used_flags(RX_QUEUE) & no_notify, no_notify);
    assert!(!guest.post_rx_as_driver(1, &[wo(2048)], false));
    for seed in 0..3 {
        peer.send(&frame(100, seed)).unwrap();
    }
    guest.pump();
    assert_eq!(guest.recv().len(), 3);
    // Out of buffers: kicks are welcome again.
    assert_eq!(guest.queues.used_flags(RX_QUEUE) & no_notify, 0);
    assert!(guest.post_rx_as_driver(1, &[wo(2048)], false));
}

#[test]
fn rearm_looks_again_after_asking() {
    let mem = test_memory();
    let queues = driver_queues(&mem);
    let mut queue = queues.device_queues().remove(RX_QUEUE);
    queue.set_event_idx(true);
    let mut errors = 0;
    // Nothing published: wait, with a kick asked for at index 0.
    assert!(!rearm_notification(&mut queue, &mem, 0, &mut errors));
    assert_eq!(queues.avail_event(RX_QUEUE), 0);
    // A chain published before the device looked again: take it instead of waiting.
    queues.store(
        RX_QUEUE,
        0,
        &[desc(BUF_BASES[0], 100, VRING_DESC_F_WRITE, 0)],
    );
    queues.publish(RX_QUEUE, 0);
    assert!(rearm_notification(&mut queue, &mem, 0, &mut errors));
    // Asking past what was seen (the frame that waits for more): kick at index 1.
    assert!(!rearm_notification(&mut queue, &mem, 1, &mut errors));
    assert_eq!(queues.avail_event(RX_QUEUE), 1);
    assert_eq!(queue.next_avail(), 0, "the queue's position is left alone");
    // A driver publishing an index the queue refuses does not make the device spin.
    for _ in 0..RX_QUEUE_SIZE {
        queues.publish(RX_QUEUE, 0);
    }
    assert!(!rearm_notification(&mut queue, &mem, 1, &mut errors));
    assert_eq!(errors, 0);
}
