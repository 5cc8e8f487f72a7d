//! Tests of the vsock device against a fake guest driver: descriptor chains built in test
//! memory (the queues laid out by `MockSplitQueue`), packets read back from the used ring, and
//! host sockets polled in place of the event loop (or a real `EventManager` in one test).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::event_handler::EventSource;
use super::*;
use crate::devices::virtio::test_utils::{
    CountingInterrupt, DriverQueues, FakeWatcher, desc, settle,
};
use crate::devices::virtio::{Interrupt, VirtioDevice};

mod flows;
mod hostile;

const GUEST_CID: u64 = 3;
const MEM_SIZE: usize = 32 << 20;
const QUEUE_ADDRS: [u64; NUM_QUEUES] = [0x0, 0x1_0000, 0x2_0000];
const RX_BUF_BASE: u64 = 0x10_0000;
const TX_BUF_BASE: u64 = 0x100_0000;
/// Guest memory per chain: a header at the start, data from `DATA_OFFSET`.
const SLOT_SIZE: u64 = 0x1_1000;
const DATA_OFFSET: u64 = 0x100;
/// Chains in flight per queue: two descriptors each.
const SLOTS: u16 = QUEUE_SIZE / 2;
/// Default rx data buffer, as Linux posts.
const RX_BUF: u32 = 4096;
/// Default guest buffer space per connection.
const GUEST_BUF_ALLOC: u32 = 256 * 1024;

/// One packet the device put on the rx queue.
#[derive(Debug, Clone)]
struct RxPacket {
    hdr: VsockHeader,
    data: Vec<u8>,
}

fn parse_header(bytes: &[u8; PKT_HEADER_SIZE]) -> VsockHeader {
    VsockHeader::from_bytes(bytes)
}

fn test_memory() -> GuestMemoryMmap {
    crate::devices::virtio::test_utils::test_memory(MEM_SIZE)
}

/// A guest driver talking to the device through its queues.
struct TestGuest<'a> {
    mem: &'a GuestMemoryMmap,
    queues: DriverQueues<'a>,
    device: Arc<Mutex<Vsock>>,
    handle: VsockHandle,
    interrupt: Arc<CountingInterrupt>,
    watcher: FakeWatcher,
    /// When set, events go through a real event manager instead of direct calls.
    event_manager: Option<EventManager<Arc<Mutex<Vsock>>>>,
    /// Descriptor slots (pairs) not owned by the device, per queue (rx, tx).
    free_slots: [VecDeque<u16>; 2],
    /// Every tx chain the device returned: (head, used length).
    tx_used: Vec<(u16, u32)>,
}

impl<'a> TestGuest<'a> {
    /// An activated device with the guest CID 3.
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        let (device, handle) = Vsock::new(GUEST_CID).unwrap();
        let mut guest = TestGuest {
            mem,
            queues: DriverQueues::new(mem, &QUEUE_ADDRS, QUEUE_SIZE),
            device: Arc::new(Mutex::new(device)),
            handle,
            interrupt: Arc::new(CountingInterrupt::default()),
            watcher: FakeWatcher::default(),
            event_manager: None,
            free_slots: [(0..SLOTS).collect(), (0..SLOTS).collect()],
            tx_used: Vec::new(),
        };
        guest.activate();
        guest
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
    }

    fn dev(&self) -> MutexGuard<'_, Vsock> {
        self.device.lock().unwrap()
    }

    /// Delivers one event to the device, as the event loop would.
    fn event(&mut self, source: EventSource, events: EventSet) {
        if self.event_manager.is_some() {
            self.settle();
            return;
        }
        let mut device = self.device.lock().unwrap();
        device.handle_event(source, events, Instant::now(), &mut self.watcher);
    }

    /// Notifies queue `index`.
    fn kick(&mut self, index: usize) {
        if self.event_manager.is_some() {
            self.dev().queue_events()[index].write(1).unwrap();
        }
        self.event(EventSource::Queue(index), EventSet::IN);
    }

    /// Delivers a timer event as if `by` had passed.
    fn advance_time(&mut self, by: Duration) {
        let mut device = self.device.lock().unwrap();
        device.handle_event(
            EventSource::Timer,
            EventSet::IN,
            Instant::now() + by,
            &mut self.watcher,
        );
    }

    /// Lets the device see the handle's requests.
    fn wake(&mut self) {
        self.event(EventSource::Wake, EventSet::IN);
    }

    /// Runs the event manager until it has nothing left to do.
    fn settle(&mut self) {
        if let Some(manager) = self.event_manager.as_mut() {
            settle(manager);
        }
    }

    /// Delivers socket readiness until there is none (the fake event loop).
    fn pump(&mut self) {
        if self.event_manager.is_some() {
            self.settle();
            return;
        }
        for _ in 0..1000 {
            let ready = self.watcher.ready();
            if ready.is_empty() {
                return;
            }
            for (fd, events) in ready {
                if self.watcher.watched.contains_key(&fd) {
                    self.event(EventSource::Socket(fd), events);
                }
            }
        }
        panic!("socket events do not settle (busy loop)");
    }

    /// Writes the chain `build(head, buffer address)` at a free slot of `queue`, publishes it
    /// and notifies; returns the head index.
    fn push_chain(
        &mut self,
        queue: usize,
        build: impl FnOnce(u16, u64) -> Vec<RawDescriptor>,
    ) -> u16 {
        let slot = self.free_slots[queue]
            .pop_front()
            .expect("a free descriptor slot");
        let head = slot * 2;
        let descs = build(head, Self::slot_addr(queue, head));
        self.queues.store(queue, head, &descs);
        self.queues.publish(queue, head);
        if queue == TX_QUEUE {
            self.kick(TX_QUEUE);
            let used = self.take_used(TX_QUEUE);
            self.tx_used.extend(used);
        }
        head
    }

    fn slot_addr(queue: usize, head: u16) -> u64 {
        let base = if queue == RX_QUEUE {
            RX_BUF_BASE
        } else {
            TX_BUF_BASE
        };
        base + u64::from(head / 2) * SLOT_SIZE
    }

    /// Posts `count` rx buffers with `data_len` bytes of data each, and notifies.
    fn provide_rx(&mut self, count: usize, data_len: u32) {
        for _ in 0..count {
            self.push_chain(RX_QUEUE, |head, addr| {
                let write = VRING_DESC_F_WRITE;
                vec![
                    desc(
                        addr,
                        PKT_HEADER_SIZE as u32,
                        write | VRING_DESC_F_NEXT,
                        head + 1,
                    ),
                    desc(addr + DATA_OFFSET, data_len, write, 0),
                ]
            });
        }
        self.kick(RX_QUEUE);
    }

    /// A header from the guest with the default credit.
    fn hdr(&self, op: u16, src_port: u32, dst_port: u32) -> VsockHeader {
        VsockHeader {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: GUEST_BUF_ALLOC,
            ..VsockHeader::default()
        }
    }

    /// Queues one packet on tx (header and data in two descriptors) and notifies.
    fn send(&mut self, mut hdr: VsockHeader, data: &[u8]) {
        hdr.len = data.len() as u32;
        let mem = self.mem;
        self.push_chain(TX_QUEUE, |head, addr| {
            mem.write_slice(&hdr.to_bytes(), GuestAddress(addr))
                .unwrap();
            if data.is_empty() {
                return vec![desc(addr, PKT_HEADER_SIZE as u32, 0, 0)];
            }
            let data_addr = addr + DATA_OFFSET;
            mem.write_slice(data, GuestAddress(data_addr)).unwrap();
            vec![
                desc(addr, PKT_HEADER_SIZE as u32, VRING_DESC_F_NEXT, head + 1),
                desc(data_addr, data.len() as u32, 0, 0),
            ]
        });
    }

    /// The used ring entries of `queue` not seen yet: (head, len).
    fn take_used(&mut self, queue: usize) -> Vec<(u16, u32)> {
        let used = self.queues.take_used(queue);
        for &(head, _) in &used {
            self.free_slots[queue].push_back(head / 2);
        }
        used
    }

    /// The packets the device wrote to rx buffers since the last call (consumed bad chains,
    /// with length 0, are skipped).
    fn recv(&mut self) -> Vec<RxPacket> {
        let mut out = Vec::new();
        for (head, len) in self.take_used(RX_QUEUE) {
            if len == 0 {
                continue;
            }
            let addr = Self::slot_addr(RX_QUEUE, head);
            let mut raw = [0u8; PKT_HEADER_SIZE];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let hdr = parse_header(&raw);
            assert_eq!(len, PKT_HEADER_SIZE as u32 + hdr.len, "used length");
            let mut data = vec![0u8; hdr.len as usize];
            self.mem
                .read_slice(&mut data, GuestAddress(addr + DATA_OFFSET))
                .unwrap();
            out.push(RxPacket { hdr, data });
        }
        out
    }

    /// Receives exactly one packet.
    fn recv_one(&mut self) -> RxPacket {
        let mut packets = self.recv();
        assert_eq!(packets.len(), 1, "expected one packet, got {packets:?}");
        packets.remove(0)
    }

    /// Opens a guest-initiated connection `guest_port` -> host `port` (listened on by
    /// `listener`); returns the accepted host stream.
    fn connect_from_guest(
        &mut self,
        listener: &VsockListener,
        guest_port: u32,
        port: u32,
    ) -> UnixStream {
        self.provide_rx(1, RX_BUF);
        self.send(self.hdr(OP_REQUEST, guest_port, port), &[]);
        let response = self.recv_one();
        assert_eq!(response.hdr.op, OP_RESPONSE);
        let stream = listener
            .accept_timeout(Duration::from_secs(1))
            .unwrap()
            .expect("an accepted stream");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream
    }

    fn connection_count(&self) -> usize {
        self.dev().muxer.connection_count()
    }
}

/// Reads until end of file (the stream has a read timeout).
fn read_to_eof(stream: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

/// Whatever the stream has right now, without blocking.
fn read_available(stream: &mut UnixStream) -> Vec<u8> {
    stream.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    out
}

/// Bytes that are easy to check for order: `i` mod 251.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn write_all(stream: &mut UnixStream, data: &[u8]) {
    stream.write_all(data).unwrap();
}
