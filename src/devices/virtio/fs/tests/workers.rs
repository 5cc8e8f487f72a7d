//! The request queues' workers: requests on several queues, several at once, all answered
//! once; the driver using fewer queues than offered; event indexes; workers stopped by a
//! reset.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;

/// The driver's queues: hiprio and up to four request queues.
const MQ_ADDRS: [u64; 5] = [0x0, 0x1_0000, 0x2_0000, 0x3_0000, 0x4_0000];
/// Where chain `k` of a burst puts its request and its reply.
const BURST_REQUESTS: u64 = 0x10_0000;
const BURST_REPLIES: u64 = 0x20_0000;
const BURST_REPLY_LEN: u32 = 0x1000;

/// A device offering `request_queues`, served by `workers` threads each, activated with
/// `used` of its request queues, FUSE session initialized.
fn guest_with_workers<'a>(
    mem: &'a GuestMemoryMmap,
    share: &Path,
    request_queues: usize,
    workers: usize,
    used: usize,
) -> TestGuest<'a> {
    let device = VirtioFs::with_config(TAG, share, ShareConfig::default())
        .and_then(|fs| fs.with_queues(request_queues, workers))
        .unwrap();
    let mut guest = TestGuest::inactive_device(mem, device, &MQ_ADDRS[..=used]);
    guest.activate().unwrap();
    guest.init().unwrap();
    guest
}

/// Publishes `count` GETATTR requests of the root on `queue` (chains `first..`, head
/// descriptors `2 * k`), without notifying; returns their `unique`s by head.
fn publish_burst(guest: &mut TestGuest, queue: usize, first: u16, count: u16) -> Vec<(u16, u64)> {
    let mut published = Vec::new();
    for k in first..first + count {
        let request = guest.fuse_request(
            Opcode::Getattr as u32,
            ROOT_ID,
            &[GetattrIn::default().as_slice()],
        );
        let unique = parse::<InHeader>(&request).unique;
        let at = BURST_REQUESTS + u64::from(k) * 0x100;
        let reply = BURST_REPLIES + u64::from(k) * u64::from(BURST_REPLY_LEN);
        guest.mem.write_slice(&request, GuestAddress(at)).unwrap();
        let len = u32::try_from(request.len()).unwrap();
        let head = 2 * k;
        guest.queues.store(
            queue,
            head,
            &[
                desc(at, len, VRING_DESC_F_NEXT, head + 1),
                desc(reply, BURST_REPLY_LEN, VRING_DESC_F_WRITE, 0),
            ],
        );
        guest.queues.publish(queue, head);
        published.push((head, unique));
    }
    published
}

/// Waits (at most 10 s) for `count` used entries on `queue`.
fn wait_for_used(guest: &mut TestGuest, queue: usize, count: usize) -> Vec<(u16, u32)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut used = Vec::new();
    while used.len() < count && Instant::now() < deadline {
        used.extend(guest.queues.take_used(queue));
        std::thread::sleep(Duration::from_millis(1));
    }
    used
}

#[test]
fn requests_on_every_queue_are_served_by_workers_each_answered_once() {
    let mem = test_memory();
    let share = share_with_file();
    let mut guest = guest_with_workers(&mem, share.path(), 2, 2, 2);
    assert_eq!(
        guest.dev().workers(),
        4,
        "two workers for each request queue"
    );
    let on_first = publish_burst(&mut guest, REQUEST_QUEUE, 0, 40);
    let on_second = publish_burst(&mut guest, REQUEST_QUEUE + 1, 40, 40);
    guest.kick(REQUEST_QUEUE);
    guest.kick(REQUEST_QUEUE + 1);
    for (queue, published) in [(REQUEST_QUEUE, on_first), (REQUEST_QUEUE + 1, on_second)] {
        let used = wait_for_used(&mut guest, queue, published.len());
        let heads: BTreeSet<u16> = used.iter().map(|&(head, _)| head).collect();
        let expected: BTreeSet<u16> = published.iter().map(|&(head, _)| head).collect();
        assert_eq!(
            heads, expected,
            "queue {queue}: every chain given back once"
        );
        assert_eq!(used.len(), published.len(), "queue {queue}: no chain twice");
        for (head, unique) in published {
            let k = u64::from(head / 2);
            let reply_at = BURST_REPLIES + k * u64::from(BURST_REPLY_LEN);
            let header: OutHeader = mem.read_obj(GuestAddress(reply_at)).unwrap();
            assert_eq!(header.unique, unique);
            assert_eq!(header.error, 0);
            let len = used.iter().find(|&&(h, _)| h == head).unwrap().1;
            assert_eq!(len as usize, size_of::<OutHeader>() + size_of::<AttrOut>());
        }
    }
    // Nothing is left over, nor answered later.
    std::thread::sleep(Duration::from_millis(50));
    assert!(guest.queues.take_used(REQUEST_QUEUE).is_empty());
    assert!(guest.queues.take_used(REQUEST_QUEUE + 1).is_empty());
}

#[test]
fn the_driver_may_set_up_fewer_request_queues_than_offered() {
    let mem = test_memory();
    let share = share_with_file();
    let device = VirtioFs::with_config(TAG, share.path(), ShareConfig::default())
        .and_then(|fs| fs.with_queues(4, 1))
        .unwrap();
    assert_eq!(device.queue_max_sizes().len(), 5);
    let mut config = [0u8; CONFIG_SIZE];
    device.read_config(0, &mut config);
    assert_eq!(config[TAG_MAX_LEN..], 4u32.to_le_bytes());

    // A one-vCPU guest uses one request queue of the four.
    let mut guest = TestGuest::inactive_device(&mem, device, &MQ_ADDRS[..2]);
    guest.activate().unwrap();
    assert_eq!(guest.dev().workers(), 1);
    guest.init().unwrap();
    assert!(guest.getattr(ROOT_ID).is_ok());

    // Hiprio alone, or more queues than offered, is refused.
    for count in [1, 6] {
        let device = VirtioFs::with_config(TAG, share.path(), ShareConfig::default())
            .and_then(|fs| fs.with_queues(4, 1))
            .unwrap();
        let mut queues: Vec<Queue> = (0..count)
            .map(|_| Queue::new(QUEUE_SIZE).unwrap())
            .collect();
        let err = TestGuest::inactive_device(&mem, device, &MQ_ADDRS[..2])
            .dev()
            .activate(
                mem.clone(),
                Arc::new(CountingInterrupt::default()),
                std::mem::take(&mut queues),
            )
            .unwrap_err();
        assert!(
            matches!(err, ActivateError::QueueCount { expected: 5, got } if got == count),
            "{err:?}"
        );
    }
}

#[test]
fn with_event_indexes_a_worker_asks_for_the_next_notification_only() {
    let mem = test_memory();
    let share = share_with_file();
    let device = VirtioFs::with_config(TAG, share.path(), ShareConfig::default())
        .and_then(|fs| fs.with_queues(1, 1))
        .unwrap();
    let mut guest = TestGuest::inactive_device(&mem, device, &MQ_ADDRS[..2]);
    guest
        .dev()
        .ack_features(VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX);
    guest.activate().unwrap();
    guest.init().unwrap();
    // Served and drained: the device asks to be notified at the next chain published.
    assert_eq!(
        guest.queues.avail_event(REQUEST_QUEUE),
        guest.queues.avail_idx(REQUEST_QUEUE)
    );
    let old = guest.queues.avail_idx(REQUEST_QUEUE);
    let published = publish_burst(&mut guest, REQUEST_QUEUE, 0, 3);
    assert!(guest.queues.kick_wanted(REQUEST_QUEUE, old, true));
    guest.kick(REQUEST_QUEUE);
    assert_eq!(
        wait_for_used(&mut guest, REQUEST_QUEUE, 3).len(),
        published.len()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while guest.queues.avail_event(REQUEST_QUEUE) != guest.queues.avail_idx(REQUEST_QUEUE)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        guest.queues.avail_event(REQUEST_QUEUE),
        guest.queues.avail_idx(REQUEST_QUEUE),
        "armed again once drained"
    );
}

#[test]
fn a_reset_stops_the_workers_before_the_next_session() {
    let mem = test_memory();
    let share = share_with_file();
    let mut guest = guest_with_workers(&mem, share.path(), 1, 2, 1);
    assert_eq!(guest.dev().workers(), 2);
    assert!(guest.dev().reset());
    assert_eq!(guest.dev().workers(), 0);
    // The old queue is nobody's: a chain published and notified on it stays unanswered.
    publish_burst(&mut guest, REQUEST_QUEUE, 0, 1);
    guest.kick(REQUEST_QUEUE);
    std::thread::sleep(Duration::from_millis(200));
    assert!(guest.queues.take_used(REQUEST_QUEUE).is_empty());
}
