//! Tests of the virtio-net device against a fake guest driver: descriptor chains built in
//! test memory (the queues laid out by `MockSplitQueue`), frames read back from the used ring,
//! and a datagram socket pair standing in for the tap (it keeps frame boundaries). The tap's
//! readiness is polled in place of the event loop, or a real `EventManager` drives the device.
//!
//! `tx.rs` covers guest to tap, `rx.rs` tap to guest, `backend.rs` the handle, the event
//! loop and the config space; `notify.rs` the event indexes, `offload.rs` the offloads (the
//! headers each way and the tap's `TUNSETOFFLOAD`), `mergeable.rs` mergeable rx buffers and
//! the frame that waits for them, `indirect.rs` chains through indirect tables (and hostile
//! ones).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::Queue;
use virtio_queue::desc::RawDescriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::backend::OffloadControl;
use super::event_handler::EventSource;
use super::*;
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::test_utils::{
    CountingInterrupt, DriverQueues, FakeWatcher, desc, settle,
};
use crate::devices::virtio::watcher::FdWatcher;

mod backend;
mod indirect;
mod mergeable;
mod notify;
mod offload;
mod rx;
mod tx;
mod vhost;

const SLOT: u32 = 3;
const MEM_SIZE: usize = 32 << 20;
const QUEUE_ADDRS: [u64; NUM_QUEUES] = [0x0, 0x1_0000];
const BUF_BASES: [u64; NUM_QUEUES] = [0x10_0000, 0x100_0000];
/// Guest memory per chain: enough for the largest frame and then some.
const SLOT_SIZE: u64 = 0x2_0000;
/// Descriptors per chain, at most.
const DESCS_PER_SLOT: u16 = 4;
/// Chains in flight per queue.
const SLOTS: u16 = RX_QUEUE_SIZE / DESCS_PER_SLOT;
/// Where in a chain's slot its indirect tables go (after its data; the first is large enough
/// for a tx queue's worth of entries and one more).
const TABLE_OFFSETS: [u64; 2] = [0x1_8000, 0x1_c800];
/// An address past the end of guest memory.
const OUTSIDE: u64 = MEM_SIZE as u64 + 0x1000;

fn test_memory() -> GuestMemoryMmap {
    crate::devices::virtio::test_utils::test_memory(MEM_SIZE)
}

/// The driver's queues, as large as the device allows (as Linux sets them up).
fn driver_queues(mem: &GuestMemoryMmap) -> DriverQueues<'_> {
    let mut layout = [(0, 0); NUM_QUEUES];
    layout[RX_QUEUE] = (QUEUE_ADDRS[RX_QUEUE], RX_QUEUE_SIZE);
    layout[TX_QUEUE] = (QUEUE_ADDRS[TX_QUEUE], TX_QUEUE_SIZE);
    DriverQueues::with_sizes(mem, &layout)
}

/// The tap's stand-in: the device's end (left blocking: `attach` must make it non-blocking,
/// or reading an empty socket would hang the tests) and the host's end.
fn tap_pair() -> (OwnedFd, UnixDatagram) {
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    (OwnedFd::from(ours), theirs)
}

/// A vnet header as the guest sends it without offloads, with `fill` in the fields that do
/// not matter (hdr_len, gso_size, csum_*, num_buffers).
fn vnet_hdr(fill: u8) -> [u8; VNET_HDR_LEN] {
    let mut hdr = [fill; VNET_HDR_LEN];
    hdr[0] = 0; // flags
    hdr[1] = 0; // gso_type: VIRTIO_NET_HDR_GSO_NONE
    hdr
}

/// Header plus an Ethernet-ish frame of `len` bytes, easy to check for order.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vnet_hdr(0).to_vec();
    out.extend((0..len).map(|i| (i % 251) as u8 ^ seed));
    out
}

/// Whatever datagram the host end has right now.
fn recv_now(peer: &UnixDatagram) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_BUF_LEN + 16];
    match peer.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("recv: {e}"),
    }
}

/// One descriptor of a chain the test guest builds.
#[derive(Debug, Clone, Copy)]
struct Seg {
    len: u32,
    write: bool,
    /// Put the descriptor here instead of in the chain's slot.
    addr: Option<u64>,
}

/// A device-readable descriptor.
fn ro(len: u32) -> Seg {
    Seg {
        len,
        write: false,
        addr: None,
    }
}

/// A device-writable descriptor.
fn wo(len: u32) -> Seg {
    Seg {
        len,
        write: true,
        addr: None,
    }
}

/// The descriptors of buffers `bufs` (address, length, device-writable), linked from index
/// `first` on; the last links to the one after it too if `more`.
fn linked(bufs: &[(u64, u32, bool)], first: u16, more: bool) -> Vec<RawDescriptor> {
    let mut descs = Vec::new();
    for (i, &(addr, len, write)) in bufs.iter().enumerate() {
        let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
        let next = if i + 1 < bufs.len() || more {
            flags |= VRING_DESC_F_NEXT;
            first + i as u16 + 1
        } else {
            0
        };
        descs.push(desc(addr, len, flags, next));
    }
    descs
}

/// Writes the indirect table `descs` at `addr`.
fn write_table(mem: &GuestMemoryMmap, addr: u64, descs: &[RawDescriptor]) {
    for (i, raw) in descs.iter().enumerate() {
        mem.write_obj(*raw, GuestAddress(addr + 16 * i as u64))
            .unwrap();
    }
}

/// A guest driver talking to the device through its queues.
struct TestGuest<'a> {
    mem: &'a GuestMemoryMmap,
    queues: DriverQueues<'a>,
    device: Arc<Mutex<Net>>,
    handle: NetHandle,
    interrupt: Arc<CountingInterrupt>,
    watcher: FakeWatcher,
    /// When set, events go through a real event manager instead of direct calls.
    event_manager: Option<EventManager<Arc<Mutex<Net>>>>,
    /// Chain slots not owned by the device, per queue.
    free_slots: [VecDeque<u16>; NUM_QUEUES],
    /// Where each chain in flight lives: (queue, head) -> its descriptors (address, length).
    layouts: HashMap<(usize, u16), Vec<(u64, u32)>>,
}

impl<'a> TestGuest<'a> {
    /// An activated device with no tap.
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        let mut guest = Self::inactive(mem);
        guest.activate();
        guest
    }

    /// A device not activated yet, with no tap.
    fn inactive(mem: &'a GuestMemoryMmap) -> Self {
        Self::inactive_with(mem, true)
    }

    /// The same, offering a tap's offloads or not ([`Net::with_offloads`]).
    fn inactive_with(mem: &'a GuestMemoryMmap, offloads: bool) -> Self {
        let (device, handle) = Net::with_offloads(SLOT, offloads).unwrap();
        TestGuest {
            mem,
            queues: driver_queues(mem),
            device: Arc::new(Mutex::new(device)),
            handle,
            interrupt: Arc::new(CountingInterrupt::default()),
            watcher: FakeWatcher::default(),
            event_manager: None,
            free_slots: [(0..SLOTS).collect(), (0..SLOTS).collect()],
            layouts: HashMap::new(),
        }
    }

    /// A device whose driver accepted `features` (`VIRTIO_F_VERSION_1` is added), activated,
    /// with a tap attached; returns the host's end too.
    fn with_features(mem: &'a GuestMemoryMmap, features: u64) -> (Self, UnixDatagram) {
        let mut guest = Self::inactive(mem);
        guest
            .dev()
            .ack_features(features | crate::devices::virtio::VIRTIO_F_VERSION_1);
        guest.activate();
        let peer = guest.attach_tap();
        (guest, peer)
    }

    /// An activated device with a tap attached; returns the host's end too.
    fn with_tap(mem: &'a GuestMemoryMmap) -> (Self, UnixDatagram) {
        let mut guest = Self::new(mem);
        let peer = guest.attach_tap();
        assert!(guest.dev().attached());
        (guest, peer)
    }

    /// The same, with the device driven by a real `EventManager`.
    fn with_event_manager(mem: &'a GuestMemoryMmap) -> Self {
        let mut guest = Self::new(mem);
        let mut manager = EventManager::new().unwrap();
        manager.add_subscriber(Arc::clone(&guest.device));
        guest.event_manager = Some(manager);
        guest.settle();
        guest
    }

    fn activate(&mut self) {
        self.queues
            .activate(&mut *self.dev(), &self.interrupt)
            .unwrap();
        // What the event loop would see right after activation (the queue events it set).
        self.kick(RX_QUEUE);
        self.kick(TX_QUEUE);
    }

    fn dev(&self) -> MutexGuard<'_, Net> {
        self.device.lock().unwrap()
    }

    fn stats(&self) -> NetStats {
        self.handle.stats()
    }

    fn interrupts(&self) -> usize {
        self.interrupt.count()
    }

    /// What the event loop watches of the tap: `None` if it is not registered.
    fn tap_interest(&self) -> Option<EventSet> {
        assert!(self.watcher.watched.len() <= 1, "more than one tap watched");
        self.watcher.watched.values().next().copied()
    }

    /// Delivers one event to the device, as the event loop would.
    fn event(&mut self, source: EventSource, events: EventSet) {
        if self.event_manager.is_some() {
            self.settle();
            return;
        }
        let mut device = self.device.lock().unwrap();
        device.handle_event(source, events, &mut self.watcher);
    }

    /// Notifies queue `index`.
    fn kick(&mut self, index: usize) {
        if self.event_manager.is_some() {
            self.dev().queue_events()[index].write(1).unwrap();
        }
        self.event(EventSource::Queue(index), EventSet::IN);
    }

    /// Lets the device see the handle's change.
    fn wake(&mut self) {
        self.event(EventSource::Wake, EventSet::IN);
    }

    /// Attaches a new tap through the handle and lets the device see it; returns the host's
    /// end.
    fn attach_tap(&mut self) -> UnixDatagram {
        let (tap, peer) = tap_pair();
        self.handle.attach(tap).unwrap();
        self.wake();
        peer
    }

    /// Runs the event manager until it has nothing left to do (panics if it keeps busy).
    fn settle(&mut self) {
        if let Some(manager) = self.event_manager.as_mut() {
            settle(manager);
        }
    }

    /// Delivers tap readiness until there is none (the fake event loop); panics if the device
    /// keeps the loop busy.
    fn pump(&mut self) {
        if self.event_manager.is_some() {
            self.settle();
            return;
        }
        for _ in 0..1000 {
            let Some(&(_, events)) = self.watcher.ready().first() else {
                return;
            };
            self.event(EventSource::Tap, events);
        }
        panic!("tap events do not settle (busy loop)");
    }

    /// Writes the chain `segs` at a free slot of `queue` and publishes it (without notifying);
    /// returns its head. `data` fills the readable descriptors, in order.
    fn push_chain(&mut self, queue: usize, segs: &[Seg], data: &[u8]) -> u16 {
        self.push_shaped(queue, segs, data, segs.len())
    }

    /// The same, with the descriptors from `direct` on in an indirect table (in the chain's
    /// slot, at [`TABLE_OFFSETS`]`[0]`): the ring holds those before it, then one descriptor
    /// that refers to the table.
    fn push_indirect(&mut self, queue: usize, direct: usize, segs: &[Seg], data: &[u8]) -> u16 {
        assert!(direct < segs.len());
        self.push_shaped(queue, segs, data, direct)
    }

    /// Writes `segs`, the first `direct` in the ring and the rest in an indirect table.
    fn push_shaped(&mut self, queue: usize, segs: &[Seg], data: &[u8], direct: usize) -> u16 {
        let slot = self.free_slots[queue]
            .pop_front()
            .expect("a free chain slot");
        let head = slot * DESCS_PER_SLOT;
        let base = BUF_BASES[queue] + u64::from(slot) * SLOT_SIZE;
        let mut addr = base;
        let mut rest = data;
        let mut layout = Vec::new();
        let mut bufs = Vec::new();
        for seg in segs {
            let at = seg.addr.unwrap_or(addr);
            if !seg.write && seg.addr.is_none() {
                let take = rest.len().min(seg.len as usize);
                self.mem
                    .write_slice(&rest[..take], GuestAddress(at))
                    .unwrap();
                rest = &rest[take..];
            }
            bufs.push((at, seg.len, seg.write));
            layout.push((at, seg.len));
            if seg.addr.is_none() {
                addr += u64::from(seg.len);
            }
        }
        let (in_ring, in_table) = bufs.split_at(direct);
        let mut descs = linked(in_ring, head, !in_table.is_empty());
        if !in_table.is_empty() {
            assert!(addr <= base + TABLE_OFFSETS[0], "chain data over its table");
            let table = base + TABLE_OFFSETS[0];
            write_table(self.mem, table, &linked(in_table, 0, false));
            let len = 16 * in_table.len() as u32;
            descs.push(desc(table, len, VRING_DESC_F_INDIRECT, 0));
        }
        assert!(descs.len() <= usize::from(DESCS_PER_SLOT));
        self.queues.store(queue, head, &descs);
        self.queues.publish(queue, head);
        self.layouts.insert((queue, head), layout);
        head
    }

    /// Publishes on `queue` (without notifying) the descriptors `build` makes for a free slot,
    /// given its head and the address of its memory (`SLOT_SIZE` bytes); returns the head.
    /// Nothing is recorded of the chain: the device is expected to refuse it.
    fn push_raw(
        &mut self,
        queue: usize,
        build: impl FnOnce(u16, u64) -> Vec<RawDescriptor>,
    ) -> u16 {
        let slot = self.free_slots[queue]
            .pop_front()
            .expect("a free chain slot");
        let head = slot * DESCS_PER_SLOT;
        let descs = build(head, BUF_BASES[queue] + u64::from(slot) * SLOT_SIZE);
        assert!(descs.len() <= usize::from(DESCS_PER_SLOT));
        self.queues.store(queue, head, &descs);
        self.queues.publish(queue, head);
        head
    }

    /// Queues `data` on tx as one chain over `segs`, notifies, and returns the used entries.
    fn send_chain(&mut self, segs: &[Seg], data: &[u8]) -> Vec<(u16, u32)> {
        self.push_chain(TX_QUEUE, segs, data);
        self.kick(TX_QUEUE);
        self.take_used(TX_QUEUE)
    }

    /// Queues `data` on tx in one readable descriptor; asserts the chain came back unused.
    fn send(&mut self, data: &[u8]) {
        let used = self.send_chain(&[ro(data.len() as u32)], data);
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].1, 0, "tx chains are returned with length 0");
    }

    /// Posts one rx chain over `segs` without notifying; returns its head.
    fn post_rx(&mut self, segs: &[Seg]) -> u16 {
        self.push_chain(RX_QUEUE, segs, &[])
    }

    /// Posts `count` rx buffers of `len` bytes each (one descriptor), and notifies.
    fn provide_rx(&mut self, count: usize, len: u32) {
        for _ in 0..count {
            self.post_rx(&[wo(len)]);
        }
        self.kick(RX_QUEUE);
    }

    /// The used ring entries of `queue` not seen yet: (head, len).
    fn take_used(&mut self, queue: usize) -> Vec<(u16, u32)> {
        let used = self.queues.take_used(queue);
        for &(head, _) in &used {
            self.free_slots[queue].push_back(head / DESCS_PER_SLOT);
        }
        used
    }

    /// The `len` bytes the device wrote into the rx chain `head`.
    fn read_rx(&self, head: u16, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = len as usize;
        for &(addr, seg_len) in &self.layouts[&(RX_QUEUE, head)] {
            let take = rest.min(seg_len as usize);
            let mut part = vec![0u8; take];
            self.mem.read_slice(&mut part, GuestAddress(addr)).unwrap();
            out.extend(part);
            rest -= take;
        }
        assert_eq!(rest, 0, "used length beyond the chain");
        out
    }

    /// The frames delivered since the last call with mergeable rx buffers, each with the
    /// number of chains it took (its `num_buffers`); chains returned empty are skipped.
    fn recv_merged(&mut self) -> Vec<(Vec<u8>, usize)> {
        let used: Vec<(u16, u32)> = self
            .take_used(RX_QUEUE)
            .into_iter()
            .filter(|&(_, len)| len > 0)
            .collect();
        let mut frames = Vec::new();
        let mut rest = used.as_slice();
        while let Some(&(head, len)) = rest.first() {
            let mut frame = self.read_rx(head, len);
            let num_buffers = usize::from(u16::from_le_bytes([frame[10], frame[11]]));
            assert!(
                (1..=rest.len()).contains(&num_buffers),
                "num_buffers {num_buffers} with {} used entries",
                rest.len()
            );
            for &(head, len) in &rest[1..num_buffers] {
                frame.extend(self.read_rx(head, len));
            }
            frames.push((frame, num_buffers));
            rest = &rest[num_buffers..];
        }
        frames
    }

    /// Posts rx chains over `segs` each, `count` of them, then notifies the device only if
    /// it asked for it (as a driver would, with or without `event_idx`); returns whether it
    /// did.
    fn post_rx_as_driver(&mut self, count: usize, segs: &[Seg], event_idx: bool) -> bool {
        let old = self.queues.avail_idx(RX_QUEUE);
        for _ in 0..count {
            self.post_rx(segs);
        }
        let kick = self.queues.kick_wanted(RX_QUEUE, old, event_idx);
        if kick {
            self.kick(RX_QUEUE);
        }
        kick
    }

    /// The frames delivered since the last call (chains returned empty are skipped).
    fn recv(&mut self) -> Vec<Vec<u8>> {
        self.take_used(RX_QUEUE)
            .into_iter()
            .filter(|&(_, len)| len > 0)
            .map(|(head, len)| self.read_rx(head, len))
            .collect()
    }

    /// Sends `sent` from the host's end `peer` and checks that the guest gets it, and only
    /// it.
    fn assert_delivered(&mut self, peer: &UnixDatagram, sent: &[u8]) {
        peer.send(sent).unwrap();
        self.pump();
        assert_eq!(self.recv(), vec![as_received(sent)]);
    }
}

/// `sent` as the guest must receive it: `num_buffers` set to 1.
fn as_received(sent: &[u8]) -> Vec<u8> {
    as_received_in(sent, 1)
}

/// `sent` as the guest must receive it over `num_buffers` chains.
fn as_received_in(sent: &[u8], num_buffers: u16) -> Vec<u8> {
    let mut out = sent.to_vec();
    out[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    out
}

/// A feature bit.
fn bit(feature: u32) -> u64 {
    1 << feature
}

/// Stands in for `TUNSETOFFLOAD`: records the flags asked for, and refuses them if told to.
#[derive(Clone, Default)]
struct OffloadLog {
    calls: Arc<Mutex<Vec<(RawFd, u32)>>>,
    refuse: bool,
}

impl OffloadLog {
    /// The flags asked for so far.
    fn flags(&self) -> Vec<u32> {
        self.calls.lock().unwrap().iter().map(|&(_, f)| f).collect()
    }
}

impl OffloadControl for OffloadLog {
    fn set_offloads(&mut self, fd: RawFd, flags: u32) -> io::Result<()> {
        self.calls.lock().unwrap().push((fd, flags));
        if self.refuse {
            return Err(io::Error::from_raw_os_error(libc::ENOTTY));
        }
        Ok(())
    }
}
