//! Indirect descriptors: chains through a table work both ways (rx into one chain or spread
//! over several, the wait for more buffers included), and chains that cannot be walked to
//! their end are refused alone, even when a whole frame comes before what is wrong with them.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;

use super::super::chain::Chain;
use super::*;

const INDIRECT: u32 = VIRTIO_RING_F_INDIRECT_DESC;
const EVENT_IDX: u32 = VIRTIO_RING_F_EVENT_IDX;
const IND: u32 = VRING_DESC_F_INDIRECT;
/// A frame's worth of a chain's slot: a header and 100 bytes (tx tests put one there).
const FRAME: u32 = VNET_HDR_LEN as u32 + 100;

/// Where a hostile chain is built: its head, its slot's memory, the flag of its buffers
/// (device-writable on rx), the size of its queue.
struct Ctx<'m> {
    mem: &'m GuestMemoryMmap,
    head: u16,
    base: u64,
    write: u32,
    queue_size: u16,
}

impl Ctx<'_> {
    /// A buffer of `len` bytes at `offset` in the slot, linked to `next` if any.
    fn buf(&self, offset: u64, len: u32, next: Option<u16>) -> RawDescriptor {
        let flags = self.write | next.map_or(0, |_| VRING_DESC_F_NEXT);
        desc(self.base + offset, len, flags, next.unwrap_or(0))
    }

    /// Writes the slot's indirect table `n`; returns its address.
    fn table(&self, n: usize, descs: &[RawDescriptor]) -> u64 {
        let addr = self.base + TABLE_OFFSETS[n];
        write_table(self.mem, addr, descs);
        addr
    }
}

/// Builds a chain in the ring (its tables in memory), and says how its walk must end.
type Build = fn(&Ctx) -> (Vec<RawDescriptor>, ChainError);

/// Chains that cannot be walked to their end. Most hold a whole frame before what is wrong
/// with them: a walk that stopped there quietly (as virtio-queue's own iterator does) would
/// send it, or take it for a buffer.
fn hostile_chains() -> Vec<(&'static str, Build)> {
    vec![
        ("table outside guest memory", |_| {
            let error = ChainError::IndirectTableOutside(OUTSIDE);
            (vec![desc(OUTSIDE, 32, IND, 0)], error)
        }),
        ("table across the end of guest memory", |_| {
            let at = MEM_SIZE as u64 - 16;
            (
                vec![desc(at, 32, IND, 0)],
                ChainError::IndirectTableOutside(at),
            )
        }),
        ("table of 17 bytes", |c| {
            let table = c.table(0, &[c.buf(0, FRAME, None), c.buf(0, 0, None)]);
            let max = c.queue_size;
            let error = ChainError::IndirectTableLen { len: 17, max };
            (vec![desc(table, 17, IND, 0)], error)
        }),
        ("empty table", |c| {
            let table = c.table(0, &[c.buf(0, FRAME, None)]);
            let max = c.queue_size;
            (
                vec![desc(table, 0, IND, 0)],
                ChainError::IndirectTableLen { len: 0, max },
            )
        }),
        ("table of more entries than the queue", |c| {
            let table = c.table(0, &[c.buf(0, FRAME, None)]);
            let len = 16 * (u32::from(c.queue_size) + 1);
            let max = c.queue_size;
            (
                vec![desc(table, len, IND, 0)],
                ChainError::IndirectTableLen { len, max },
            )
        }),
        ("indirect descriptor inside a table", |c| {
            let inner = c.table(1, &[c.buf(12, 100, None)]);
            let table = c.table(0, &[c.buf(0, 12, Some(1)), desc(inner, 16, IND, 0)]);
            (vec![desc(table, 32, IND, 0)], ChainError::NestedIndirect)
        }),
        ("table whose only entry is indirect", |c| {
            let inner = c.table(1, &[c.buf(0, FRAME, None)]);
            let table = c.table(0, &[desc(inner, 16, IND, 0)]);
            (vec![desc(table, 16, IND, 0)], ChainError::NestedIndirect)
        }),
        ("next outside the table", |c| {
            let table = c.table(0, &[c.buf(0, FRAME, Some(2)), c.buf(0, 0, None)]);
            let error = ChainError::IndexOutside {
                index: 2,
                entries: 2,
            };
            (vec![desc(table, 32, IND, 0)], error)
        }),
        ("loop inside the table", |c| {
            let half = FRAME / 2;
            let table = c.table(
                0,
                &[
                    c.buf(0, half, Some(1)),
                    c.buf(u64::from(half), half, Some(0)),
                ],
            );
            (vec![desc(table, 32, IND, 0)], ChainError::Loop(2))
        }),
        ("indirect descriptor with NEXT", |c| {
            let table = c.table(0, &[c.buf(0, FRAME, None)]);
            let ring = vec![
                desc(table, 16, IND | VRING_DESC_F_NEXT, c.head + 1),
                c.buf(0, 0, None),
            ];
            (ring, ChainError::IndirectWithNext)
        }),
        ("a frame in the ring, then a table outside memory", |c| {
            let ring = vec![c.buf(0, FRAME, Some(c.head + 1)), desc(OUTSIDE, 16, IND, 0)];
            (ring, ChainError::IndirectTableOutside(OUTSIDE))
        }),
    ]
}

/// A TCP/IPv4 segment of `len` bytes to segment, checksum to fill in.
fn tso_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut out = frame(len, seed);
    out[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    out[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    for (at, value) in [(2, 66u16), (4, 1448), (6, 34), (8, 16)] {
        out[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }
    out
}

#[test]
fn indirect_descriptors_are_offered() {
    let (device, _handle) = Net::new(SLOT).unwrap();
    assert_ne!(device.device_features() & bit(INDIRECT), 0);
}

#[test]
fn the_walk_follows_one_table_after_ring_descriptors() {
    let mem = test_memory();
    let queues = driver_queues(&mem);
    let mut queue = queues.device_queues().remove(TX_QUEUE);
    let base = BUF_BASES[TX_QUEUE];
    let table = base + TABLE_OFFSETS[0];
    // Two in the ring, then a table of a queue's worth of entries (the largest allowed),
    // its chain two long.
    let mut entries = vec![
        desc(base + 0x300, 3, VRING_DESC_F_NEXT, 5),
        desc(0, 0, 0, 0),
    ];
    entries.resize(usize::from(TX_QUEUE_SIZE), desc(0, 0, 0, 0));
    entries[5] = desc(base + 0x400, 4, 0, 0);
    write_table(&mem, table, &entries);
    queues.store(
        TX_QUEUE,
        0,
        &[
            desc(base + 0x100, 1, VRING_DESC_F_NEXT, 1),
            desc(base + 0x200, 2, VRING_DESC_F_NEXT, 2),
            desc(table, 16 * u32::from(TX_QUEUE_SIZE), IND, 0),
        ],
    );
    queues.publish(TX_QUEUE, 0);
    queues.publish(TX_QUEUE, 0);
    let chain = Chain::pop(&mut queue, &mem, true).unwrap();
    assert_eq!(chain.head(), 0);
    let walked: Vec<(u64, u32)> = chain
        .descriptors(&mem)
        .map(|desc| desc.map(|desc| (desc.addr().0, desc.len())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        walked,
        vec![
            (base + 0x100, 1),
            (base + 0x200, 2),
            (base + 0x300, 3),
            (base + 0x400, 4)
        ]
    );
    // Walked again, the same; without the feature, refused where the table starts.
    assert_eq!(chain.descriptors(&mem).count(), 4);
    let chain = Chain::pop(&mut queue, &mem, false).unwrap();
    let walked: Vec<_> = chain.descriptors(&mem).collect();
    assert_eq!(walked.len(), 3);
    assert_eq!(
        walked[2].as_ref().err(),
        Some(&ChainError::IndirectNotNegotiated)
    );
}

#[test]
fn the_walk_of_a_hostile_chain_ends_with_its_error() {
    let mem = test_memory();
    let queues = driver_queues(&mem);
    let mut queue = queues.device_queues().remove(TX_QUEUE);
    for (i, (what, build)) in hostile_chains().into_iter().enumerate() {
        let head = i as u16 * DESCS_PER_SLOT;
        let ctx = Ctx {
            mem: &mem,
            head,
            base: BUF_BASES[TX_QUEUE] + i as u64 * SLOT_SIZE,
            write: 0,
            queue_size: TX_QUEUE_SIZE,
        };
        let (descs, error) = build(&ctx);
        queues.store(TX_QUEUE, head, &descs);
        queues.publish(TX_QUEUE, head);
        let chain = Chain::pop(&mut queue, &mem, true).unwrap();
        let walked: Vec<_> = chain.descriptors(&mem).collect();
        let (last, before) = walked.split_last().expect(what);
        assert_eq!(last.as_ref().err(), Some(&error), "{what}");
        assert!(before.iter().all(Result::is_ok), "{what}");
    }
    // A head outside the ring.
    queues.publish(TX_QUEUE, TX_QUEUE_SIZE);
    let chain = Chain::pop(&mut queue, &mem, true).unwrap();
    let walked: Vec<_> = chain.descriptors(&mem).collect();
    let error = ChainError::IndexOutside {
        index: TX_QUEUE_SIZE,
        entries: TX_QUEUE_SIZE,
    };
    assert_eq!(walked.len(), 1);
    assert_eq!(walked[0].as_ref().err(), Some(&error));
}

#[test]
fn tx_frames_come_through_tables() {
    let mem = test_memory();
    let features =
        bit(INDIRECT) | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(EVENT_IDX);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    // The header split in two, the frame in two uneven parts, all in the table.
    let sent = frame(3000, 1);
    let head = guest.push_indirect(TX_QUEUE, 0, &[ro(5), ro(7), ro(1000), ro(2000)], &sent);
    guest.kick(TX_QUEUE);
    assert_eq!(guest.take_used(TX_QUEUE), vec![(head, 0)]);
    assert_eq!(recv_now(&peer).unwrap(), sent);
    // Two in the ring, then a table.
    let sent = frame(988, 2);
    guest.push_indirect(TX_QUEUE, 2, &[ro(12), ro(88), ro(500), ro(400)], &sent);
    guest.kick(TX_QUEUE);
    assert_eq!(recv_now(&peer).unwrap(), sent);
    // A 64 KiB TSO frame as Linux queues it: header, linear part, 16 pages; one ring entry.
    let tso = tso_frame(MAX_FRAME_LEN, 3);
    let mut segs = vec![ro(VNET_HDR_LEN as u32), ro(14)];
    segs.extend([ro(4096); 16]);
    let avail_before = guest.queues.avail_idx(TX_QUEUE);
    guest.push_indirect(TX_QUEUE, 0, &segs, &tso);
    assert_eq!(
        guest.queues.avail_idx(TX_QUEUE),
        avail_before.wrapping_add(1)
    );
    guest.kick(TX_QUEUE);
    assert_eq!(guest.take_used(TX_QUEUE).len(), 2);
    assert_eq!(recv_now(&peer).unwrap(), tso);
    assert_eq!(recv_now(&peer), None);
    let stats = guest.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_dropped, stats.bad_chains),
        (3, 0, 0)
    );
}

#[test]
fn tx_hostile_chains_are_dropped_alone() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_features(&mem, bit(INDIRECT));
    let cases = hostile_chains();
    for &(what, build) in &cases {
        let bad = guest.push_raw(TX_QUEUE, |head, base| {
            mem.write_slice(&frame(100, 1), GuestAddress(base)).unwrap();
            let ctx = Ctx {
                mem: &mem,
                head,
                base,
                write: 0,
                queue_size: TX_QUEUE_SIZE,
            };
            build(&ctx).0
        });
        let good = frame(60, 2);
        let next = guest.push_indirect(TX_QUEUE, 0, &[ro(VNET_HDR_LEN as u32), ro(60)], &good);
        guest.kick(TX_QUEUE);
        assert_eq!(
            guest.take_used(TX_QUEUE),
            vec![(bad, 0), (next, 0)],
            "{what}"
        );
        assert_eq!(recv_now(&peer).as_deref(), Some(&good[..]), "{what}");
        assert_eq!(recv_now(&peer), None, "{what}");
    }
    let n = cases.len() as u64;
    let stats = guest.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_dropped, stats.bad_chains),
        (n, n, n)
    );
}

#[test]
fn rx_frames_land_in_chains_through_tables() {
    let mem = test_memory();
    let features = bit(INDIRECT) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    // Linux's "big packets" (TSO without mergeable buffers): the header, the rest of a page,
    // then 16 pages, all in one table.
    let mut segs = vec![wo(VNET_HDR_LEN as u32), wo(4096 - VNET_HDR_LEN as u32)];
    segs.extend([wo(4096); 16]);
    guest.push_indirect(RX_QUEUE, 0, &segs, &[]);
    guest.kick(RX_QUEUE);
    let mut sent = frame(60_000, 1);
    sent[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    sent[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    guest.assert_delivered(&peer, &sent);
    // Two in the ring, then a table.
    guest.push_indirect(RX_QUEUE, 2, &[wo(12), wo(700), wo(700), wo(700)], &[]);
    guest.kick(RX_QUEUE);
    guest.assert_delivered(&peer, &frame(2000, 2));
    // A frame larger than the table's buffers is dropped, the chain returned unused.
    let small = guest.push_indirect(RX_QUEUE, 0, &[wo(50), wo(50)], &[]);
    guest.kick(RX_QUEUE);
    peer.send(&frame(200, 3)).unwrap();
    guest.pump();
    assert_eq!(guest.take_used(RX_QUEUE), vec![(small, 0)]);
    let stats = guest.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_dropped, stats.bad_chains),
        (2, 1, 0)
    );
}

#[test]
fn rx_hostile_chains_are_returned_alone() {
    let mem = test_memory();
    let cases = hostile_chains();
    for mergeable in [false, true] {
        let mut features = bit(INDIRECT);
        if mergeable {
            features |= bit(VIRTIO_NET_F_MRG_RXBUF);
        }
        let (mut guest, peer) = TestGuest::with_features(&mem, features);
        for (round, &(what, build)) in cases.iter().enumerate() {
            let bad = guest.push_raw(RX_QUEUE, |head, base| {
                let ctx = Ctx {
                    mem: &mem,
                    head,
                    base,
                    write: VRING_DESC_F_WRITE,
                    queue_size: RX_QUEUE_SIZE,
                };
                build(&ctx).0
            });
            let good = guest.push_indirect(RX_QUEUE, 0, &[wo(12), wo(2000)], &[]);
            guest.kick(RX_QUEUE);
            let sent = frame(1000, round as u8);
            peer.send(&sent).unwrap();
            guest.pump();
            let used = guest.take_used(RX_QUEUE);
            assert_eq!(
                used,
                vec![(bad, 0), (good, sent.len() as u32)],
                "{what} (mergeable: {mergeable})"
            );
            assert_eq!(guest.read_rx(good, used[1].1), as_received(&sent), "{what}");
        }
        let n = cases.len() as u64;
        let stats = guest.stats();
        assert_eq!(
            (stats.rx_frames, stats.rx_dropped, stats.bad_chains),
            (n, 0, n)
        );
    }
}

#[test]
fn a_merged_frame_waits_on_indirect_chains_and_goes_first() {
    let mem = test_memory();
    let features = bit(INDIRECT) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(EVENT_IDX);
    let (mut guest, peer) = TestGuest::with_features(&mem, features);
    // 1000 bytes each: through a table, and one in the ring then a table.
    let first = guest.push_indirect(RX_QUEUE, 0, &[wo(400), wo(600)], &[]);
    let second = guest.push_indirect(RX_QUEUE, 1, &[wo(500), wo(500)], &[]);
    guest.kick(RX_QUEUE);
    let large = frame(3000, 4);
    peer.send(&large).unwrap();
    guest.pump();
    // Too few: nothing used, the queue's position back over both chains, the frame waits.
    assert!(guest.take_used(RX_QUEUE).is_empty());
    assert_eq!(guest.dev().rx_pending, Some(large.len()));
    assert_eq!(guest.dev().active.as_ref().unwrap().rx.next_avail(), 0);
    assert_eq!(guest.tap_interest(), Some(EventSet::empty()));

    // A bad chain (returned before the frame), then enough: one through a table, one direct.
    let bad = guest.push_raw(RX_QUEUE, |head, base| {
        let ctx = Ctx {
            mem: &mem,
            head,
            base,
            write: VRING_DESC_F_WRITE,
            queue_size: RX_QUEUE_SIZE,
        };
        let (_, nested) = hostile_chains()
            .into_iter()
            .find(|(what, _)| *what == "indirect descriptor inside a table")
            .unwrap();
        nested(&ctx).0
    });
    let third = guest.push_indirect(RX_QUEUE, 0, &[wo(1000)], &[]);
    let fourth = guest.push_chain(RX_QUEUE, &[wo(1000)], &[]);
    guest.kick(RX_QUEUE);
    let used = guest.take_used(RX_QUEUE);
    assert_eq!(
        used,
        vec![
            (bad, 0),
            (first, 1000),
            (second, 1000),
            (third, 1000),
            (fourth, 12)
        ]
    );
    let mut got = Vec::new();
    for &(head, len) in &used[1..] {
        got.extend(guest.read_rx(head, len));
    }
    assert_eq!(got, as_received_in(&large, 4));
    assert_eq!(guest.dev().rx_pending, None);
    let stats = guest.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_dropped, stats.bad_chains),
        (1, 0, 1)
    );
}

#[test]
fn indirect_chains_without_the_feature_are_refused() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    let sent = frame(100, 5);
    let bad = guest.push_indirect(TX_QUEUE, 0, &[ro(FRAME)], &sent);
    let good = guest.push_chain(TX_QUEUE, &[ro(FRAME)], &sent);
    guest.kick(TX_QUEUE);
    assert_eq!(guest.take_used(TX_QUEUE), vec![(bad, 0), (good, 0)]);
    assert_eq!(recv_now(&peer).unwrap(), sent);
    assert_eq!(recv_now(&peer), None);

    let bad = guest.push_indirect(RX_QUEUE, 0, &[wo(2048)], &[]);
    let good = guest.post_rx(&[wo(2048)]);
    guest.kick(RX_QUEUE);
    let sent = frame(500, 6);
    peer.send(&sent).unwrap();
    guest.pump();
    assert_eq!(
        guest.take_used(RX_QUEUE),
        vec![(bad, 0), (good, sent.len() as u32)]
    );
    assert_eq!(guest.stats().bad_chains, 2);
}

#[test]
fn a_full_1024_entry_tx_ring_drains() {
    let mem = test_memory();
    let mut guest = TestGuest::with_event_manager(&mem);
    let peer = guest.attach_tap();
    assert_eq!(TX_QUEUE_SIZE, 1024);
    let sent = frame(60, 7);
    let buf = BUF_BASES[TX_QUEUE];
    mem.write_slice(&sent, GuestAddress(buf)).unwrap();
    for head in 0..TX_QUEUE_SIZE {
        guest
            .queues
            .store(TX_QUEUE, head, &[desc(buf, sent.len() as u32, 0, 0)]);
        guest.queues.publish(TX_QUEUE, head);
    }
    // More than a turn's worth: the device comes back through its queue event.
    guest.kick(TX_QUEUE);
    let used = guest.queues.take_used(TX_QUEUE);
    let expected: Vec<(u16, u32)> = (0..TX_QUEUE_SIZE).map(|head| (head, 0)).collect();
    assert_eq!(used, expected);
    let stats = guest.stats();
    assert_eq!(stats.tx_frames + stats.tx_dropped, u64::from(TX_QUEUE_SIZE));
    let mut received = 0;
    while let Some(got) = recv_now(&peer) {
        assert_eq!(got, sent);
        received += 1;
    }
    assert_eq!(received, stats.tx_frames);
}
