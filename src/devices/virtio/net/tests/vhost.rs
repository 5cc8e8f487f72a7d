//! vhost-net without the kernel's: the pure parts (features, memory table, ring addresses,
//! where the device resumes), what a backend must be, and the device against a fake
//! vhost-net that records every request: set-up, quiet kicks, calls relayed as interrupts,
//! backend swaps, reset, and each fallback (no `/dev/vhost-net`, a missing feature, a backend
//! refused after one queue started, a backend vhost-net cannot drive).

use std::fs::File;
use std::os::fd::AsRawFd;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{GuestMemory as _, GuestMemoryRegion as _};
use vmm_sys_util::eventfd::EventFd;

use super::super::vhost::{
    RING_FEATURES, VhostDevice, VhostHost, is_vnet_tap, memory_table, resume_queue, vhost_features,
    vring_config,
};
use super::*;
use crate::devices::virtio::{Interrupt as _, VIRTIO_F_VERSION_1};
use crate::vmm::GuestMemory;

/// What vhost-net offers (as Linux's does: the ring features, `VHOST_NET_F_VIRTIO_NET_HDR`,
/// `VHOST_F_LOG_ALL`, `NOTIFY_ON_EMPTY`).
const KERNEL_FEATURES: u64 = RING_FEATURES | (1 << 27) | (1 << 26) | (1 << 24);

/// One request made of the fake vhost-net.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Open,
    Owner,
    GetFeatures,
    Features(u64),
    /// (guest address, size, host address) per region.
    MemTable(Vec<(u64, u64, u64)>),
    Num(usize, u16),
    /// Descriptor table, available ring, used ring.
    Addr(usize, u64, u64, u64),
    Base(usize, u16),
    GetBase(usize),
    Call(usize, RawFd),
    Kick(usize, RawFd),
    Backend(usize, Option<RawFd>),
    Closed,
}

/// What the fake vhost-net has been asked, and how it answers.
struct FakeState {
    ops: Vec<Op>,
    offered: u64,
    /// Requests that fail (with `EPERM`; `Open` with `ENOENT`).
    fails: Box<dyn Fn(&Op) -> bool + Send>,
    /// Backends it drives.
    drives: Vec<RawFd>,
    /// Where it says each queue stopped, if not where it was told to start.
    bases: [Option<u16>; NUM_QUEUES],
}

/// A fake vhost-net host; clones share their state.
#[derive(Clone)]
struct FakeVhost(Arc<Mutex<FakeState>>);

impl FakeVhost {
    fn new() -> Self {
        FakeVhost(Arc::new(Mutex::new(FakeState {
            ops: Vec::new(),
            offered: KERNEL_FEATURES,
            fails: Box::new(|_| false),
            drives: Vec::new(),
            bases: [None; NUM_QUEUES],
        })))
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn failing(self, fails: impl Fn(&Op) -> bool + Send + 'static) -> Self {
        self.state().fails = Box::new(fails);
        self
    }

    /// The requests made since the last call.
    fn take_ops(&self) -> Vec<Op> {
        std::mem::take(&mut self.state().ops)
    }

    /// Records `op`; fails it if told to.
    fn record(&self, op: Op) -> ::vhost::Result<()> {
        let mut state = self.state();
        let fails = (state.fails)(&op);
        state.ops.push(op);
        if fails {
            return Err(::vhost::Error::IoctlError(io::Error::from_raw_os_error(
                libc::EPERM,
            )));
        }
        Ok(())
    }
}

impl VhostHost for FakeVhost {
    fn open(&self, _mem: &GuestMemory) -> Result<Box<dyn VhostDevice>, VhostError> {
        self.record(Op::Open)
            .map_err(|_| VhostError::Open(io::Error::from_raw_os_error(libc::ENOENT)))?;
        Ok(Box::new(self.clone()))
    }

    fn drives(&self, backend: &File) -> bool {
        self.state().drives.contains(&backend.as_raw_fd())
    }
}

impl VhostDevice for FakeVhost {
    fn set_owner(&self) -> ::vhost::Result<()> {
        self.record(Op::Owner)
    }
    fn get_features(&self) -> ::vhost::Result<u64> {
        self.record(Op::GetFeatures)?;
        Ok(self.state().offered)
    }
    fn set_features(&self, features: u64) -> ::vhost::Result<()> {
        self.record(Op::Features(features))
    }
    fn set_mem_table(&self, regions: &[::vhost::VhostUserMemoryRegionInfo]) -> ::vhost::Result<()> {
        let table = regions
            .iter()
            .map(|r| (r.guest_phys_addr, r.memory_size, r.userspace_addr))
            .collect();
        self.record(Op::MemTable(table))
    }
    fn set_vring_num(&self, index: usize, num: u16) -> ::vhost::Result<()> {
        self.record(Op::Num(index, num))
    }
    fn set_vring_addr(&self, index: usize, c: &::vhost::VringConfigData) -> ::vhost::Result<()> {
        let op = Op::Addr(
            index,
            c.desc_table_addr,
            c.avail_ring_addr,
            c.used_ring_addr,
        );
        self.record(op)
    }
    fn set_vring_base(&self, index: usize, base: u16) -> ::vhost::Result<()> {
        self.record(Op::Base(index, base))?;
        let mut state = self.state();
        state.bases[index] = state.bases[index].or(Some(base));
        Ok(())
    }
    fn get_vring_base(&self, index: usize) -> ::vhost::Result<u32> {
        self.record(Op::GetBase(index))?;
        Ok(u32::from(self.state().bases[index].unwrap_or(0)))
    }
    fn set_vring_call(&self, index: usize, call: &EventFd) -> ::vhost::Result<()> {
        self.record(Op::Call(index, call.as_raw_fd()))
    }
    fn set_vring_kick(&self, index: usize, kick: &EventFd) -> ::vhost::Result<()> {
        self.record(Op::Kick(index, kick.as_raw_fd()))
    }
    fn set_backend(&self, index: usize, backend: Option<&File>) -> ::vhost::Result<()> {
        self.record(Op::Backend(index, backend.map(File::as_raw_fd)))
    }
}

/// The fake device is dropped when the device closes its instance; the host (same state)
/// lives on in the test.
impl Drop for FakeVhost {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) > 1 {
            self.state().ops.push(Op::Closed);
        }
    }
}

/// What the driver accepts in these tests: every ring feature and some that are not.
const ACKED: u64 = VIRTIO_F_VERSION_1
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_MAC);

/// A device whose driver accepted [`ACKED`], with `fake` as its vhost-net, activated, no tap
/// yet.
fn guest_with<'a>(mem: &'a GuestMemoryMmap, fake: &FakeVhost) -> TestGuest<'a> {
    let mut guest = inactive_with(mem, fake);
    guest.dev().ack_features(ACKED);
    guest.activate();
    guest
}

/// The same, not activated. The socket pairs take any offloads (`errors_seen` then counts
/// vhost's line only).
fn inactive_with<'a>(mem: &'a GuestMemoryMmap, fake: &FakeVhost) -> TestGuest<'a> {
    let guest = TestGuest::inactive(mem);
    {
        let mut dev = guest.dev();
        dev.vhost.host = Box::new(fake.clone());
        dev.offload_control = Box::new(OffloadLog::default());
    }
    guest
}

/// Registers the queue events with the fake event loop, as `init` does with the real one, so
/// that the device can quiet them while vhost-net runs (the fake loop then also reports them
/// as ready: no `pump` in those tests).
fn register_kicks(guest: &mut TestGuest) {
    let (kicks, _) = kick_and_call_fds(guest);
    for fd in kicks {
        guest.watcher.watched.insert(fd, EventSet::IN);
    }
}

/// Attaches a socket pair that `fake` drives as if it were a tap (or not); returns the host's
/// end and the device's descriptor.
fn attach(guest: &mut TestGuest, fake: &FakeVhost, drivable: bool) -> (UnixDatagram, RawFd) {
    let (tap, peer) = tap_pair();
    let fd = tap.as_raw_fd();
    if drivable {
        fake.state().drives.push(fd);
    }
    guest.handle.attach(tap).unwrap();
    guest.wake();
    (peer, fd)
}

/// The queue events' descriptors and the call eventfds', in queue order.
fn kick_and_call_fds(guest: &TestGuest) -> (Vec<RawFd>, Vec<RawFd>) {
    let dev = guest.dev();
    let kicks = dev.queue_events().iter().map(|e| e.as_raw_fd()).collect();
    let calls = dev.vhost.calls.iter().map(|e| e.as_raw_fd()).collect();
    (kicks, calls)
}

/// The set-up requests for the test guest's queues, from `Owner` to the backends.
fn setup_ops(guest: &TestGuest, tap: RawFd, bases: [u16; NUM_QUEUES]) -> Vec<Op> {
    let (kicks, calls) = kick_and_call_fds(guest);
    let mut ops = vec![
        Op::Open,
        Op::Owner,
        Op::GetFeatures,
        Op::Features(ACKED & RING_FEATURES),
    ];
    let region = guest.mem.iter().next().unwrap();
    let host = guest.mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    ops.push(Op::MemTable(vec![(0, region.len(), host)]));
    for (index, queue) in guest.queues.device_queues().iter().enumerate() {
        ops.extend([
            Op::Num(index, queue.size()),
            Op::Addr(
                index,
                queue.desc_table(),
                queue.avail_ring(),
                queue.used_ring(),
            ),
            Op::Base(index, bases[index]),
            Op::Call(index, calls[index]),
            Op::Kick(index, kicks[index]),
        ]);
    }
    ops.extend([Op::Backend(0, Some(tap)), Op::Backend(1, Some(tap))]);
    ops
}

/// The stop sequence: no backend, where each queue stopped, closed.
fn stop_ops() -> Vec<Op> {
    vec![
        Op::Backend(0, None),
        Op::Backend(1, None),
        Op::GetBase(0),
        Op::GetBase(1),
        Op::Closed,
    ]
}

#[test]
fn only_ring_features_go_to_vhost_and_each_must_be_offered() {
    assert_eq!(
        vhost_features(ACKED, KERNEL_FEATURES).unwrap(),
        ACKED & RING_FEATURES
    );
    // Nothing accepted, nothing asked (VHOST_NET_F_VIRTIO_NET_HDR never: the tap carries the
    // header).
    assert_eq!(
        vhost_features(VIRTIO_F_VERSION_1, KERNEL_FEATURES).unwrap(),
        VIRTIO_F_VERSION_1
    );
    let no_mrg = KERNEL_FEATURES & !(1 << VIRTIO_NET_F_MRG_RXBUF);
    assert!(matches!(
        vhost_features(ACKED, no_mrg),
        Err(VhostError::MissingFeatures(m)) if m == 1 << VIRTIO_NET_F_MRG_RXBUF
    ));
    // An offload vhost does not know of is not its business.
    assert_eq!(vhost_features(1 << VIRTIO_NET_F_CSUM, 0).unwrap(), 0);
}

#[test]
fn the_memory_table_maps_every_region_where_it_is() {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x4_0000), 0x2_0000),
    ])
    .unwrap();
    let table: Vec<(u64, u64, u64)> = memory_table(&mem)
        .unwrap()
        .iter()
        .map(|r| (r.guest_phys_addr, r.memory_size, r.userspace_addr))
        .collect();
    let host = |addr| mem.get_host_address(GuestAddress(addr)).unwrap() as u64;
    assert_eq!(
        table,
        [(0, 0x1_0000, host(0)), (0x4_0000, 0x2_0000, host(0x4_0000))]
    );
}

#[test]
fn rings_must_lie_inside_one_region() {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x1_0000), 0x1_0000),
    ])
    .unwrap();
    // 256 entries: a 4 KiB descriptor table, a 518-byte available ring, a 2054-byte used one.
    let queue = |desc: u64, avail: u64, used: u64| {
        let mut q = Queue::new(256).unwrap();
        q.set_size(256);
        q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        q
    };
    let config = vring_config(1, &queue(0x1000, 0x2000, 0x3000), &mem).unwrap();
    assert_eq!(
        (
            config.queue_size,
            config.desc_table_addr,
            config.avail_ring_addr,
            config.used_ring_addr
        ),
        (256, 0x1000, 0x2000, 0x3000)
    );
    assert_eq!(config.log_addr, None);
    // Right up to the end of a region is fine; past it (into the next, contiguous one) is
    // not: vhost-net translates the start only. (The queue keeps only aligned addresses.)
    assert!(vring_config(0, &queue(0x1_0000 - 4096, 0x2000, 0x3000), &mem).is_ok());
    let err = vring_config(0, &queue(0x1000, 0x2000, 0x1_0000 - 2052), &mem)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            VhostError::RingOutsideMemory {
                queue: 0,
                area: "used ring",
                ..
            }
        ),
        "{err}"
    );
    // Outside guest memory altogether.
    let err = vring_config(1, &queue(0x3_0000, 0x2000, 0x3000), &mem)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            VhostError::RingOutsideMemory {
                queue: 1,
                area: "descriptor table",
                ..
            }
        ),
        "{err}"
    );
    let err = vring_config(1, &queue(0x1000, 0x1_fffe, 0x3000), &mem)
        .err()
        .unwrap();
    assert!(matches!(
        err,
        VhostError::RingOutsideMemory {
            area: "available ring",
            ..
        }
    ));
}

#[test]
fn a_queue_resumes_where_vhost_left_it() {
    let mem = test_memory();
    let queues = driver_queues(&mem);
    let mut queue = queues.device_queues().remove(TX_QUEUE);
    // vhost-net used 5 chains (the used index says so) and took 7.
    mem.write_obj(5u16, GuestAddress(queue.used_ring() + 2))
        .unwrap();
    resume_queue(&mut queue, &mem, Some(7)).unwrap();
    assert_eq!((queue.next_avail(), queue.next_used()), (7, 5));
    // Without its word, the used index is where it stopped taking them.
    resume_queue(&mut queue, &mem, None).unwrap();
    assert_eq!((queue.next_avail(), queue.next_used()), (5, 5));
}

#[test]
fn only_taps_with_a_vnet_header_are_for_vhost() {
    let (ours, _theirs) = UnixDatagram::pair().unwrap();
    assert!(!is_vnet_tap(&File::from(OwnedFd::from(ours))));
    assert!(!is_vnet_tap(&File::open("/dev/null").unwrap()));
    assert!(!is_vnet_tap(&File::open("/proc/self/status").unwrap()));
}

#[test]
fn vhost_interrupts_through_the_transports_eventfd_when_there_is_one() {
    let mem = test_memory();
    let fake = FakeVhost::new();
    let mut guest = inactive_with(&mem, &fake);
    guest.interrupt = Arc::new(CountingInterrupt::with_direct());
    guest.dev().ack_features(ACKED);
    guest.activate();
    register_kicks(&mut guest);
    let direct = guest.interrupt.direct_eventfd().unwrap().as_raw_fd();
    let (_peer, tap) = attach(&mut guest, &fake, true);
    // Both queues' calls are that eventfd, not the device's own.
    let (_, calls) = kick_and_call_fds(&guest);
    let expected: Vec<Op> = setup_ops(&guest, tap, [0, 0])
        .into_iter()
        .map(|op| match op {
            Op::Call(index, fd) => {
                assert_eq!(fd, calls[index]);
                Op::Call(index, direct)
            }
            other => other,
        })
        .collect();
    assert_eq!(fake.take_ops(), expected);
    assert!(guest.dev().vhost_running());
}

#[test]
fn vhost_runs_the_queues_of_an_active_device_with_a_tap() {
    let mem = test_memory();
    let fake = FakeVhost::new();
    let mut guest = guest_with(&mem, &fake);
    register_kicks(&mut guest);
    assert!(fake.take_ops().is_empty(), "nothing before a tap");
    let (peer, tap) = attach(&mut guest, &fake, true);
    assert_eq!(fake.take_ops(), setup_ops(&guest, tap, [0, 0]));
    assert!(guest.dev().vhost_running());
    // The kicks are vhost's: registered, quiet; the tap is not watched.
    let (kicks, calls) = kick_and_call_fds(&guest);
    for fd in &kicks {
        assert_eq!(guest.watcher.watched.get(fd), Some(&EventSet::empty()));
    }
    assert!(!guest.watcher.watched.contains_key(&tap));

    // The device leaves the queues alone (a kick already reported is read and ignored).
    guest.push_chain(TX_QUEUE, &[ro(100)], &frame(88, 1));
    guest.kick(TX_QUEUE);
    guest.provide_rx(2, 2048);
    peer.send(&frame(60, 2)).unwrap();
    guest.wake();
    assert!(guest.take_used(TX_QUEUE).is_empty());
    assert!(guest.take_used(RX_QUEUE).is_empty());
    assert_eq!(recv_now(&peer), None);
    assert_eq!(guest.stats(), NetStats::default());

    // A call is an interrupt.
    let before = guest.interrupts();
    guest.dev().vhost.calls[RX_QUEUE].write(1).unwrap();
    assert_eq!(
        guest.dev().event_source(calls[RX_QUEUE]),
        EventSource::Call(RX_QUEUE)
    );
    guest.event(EventSource::Call(RX_QUEUE), EventSet::IN);
    assert_eq!(guest.interrupts(), before + 1);
    assert!(
        guest.dev().vhost.calls[RX_QUEUE].read().is_err(),
        "the call was read"
    );

    // Detached: the rings wait. Another tap: it takes over.
    guest.handle.detach().unwrap();
    guest.wake();
    assert_eq!(
        fake.take_ops(),
        [Op::Backend(0, None), Op::Backend(1, None)]
    );
    assert!(guest.dev().vhost_running());
    let (_peer, tap) = attach(&mut guest, &fake, true);
    assert_eq!(
        fake.take_ops(),
        [Op::Backend(0, Some(tap)), Op::Backend(1, Some(tap))]
    );

    // A reset stops it; the event loop then watches the kicks again.
    assert!(guest.dev().reset());
    assert_eq!(fake.take_ops(), stop_ops());
    assert!(!guest.dev().vhost_running());
    guest.wake();
    for fd in &kicks {
        assert_eq!(guest.watcher.watched.get(fd), Some(&EventSet::IN));
    }
    assert_eq!(guest.dev().errors_seen, 0);
}

#[test]
fn vhost_starts_at_activation_when_the_tap_came_first() {
    let mem = test_memory();
    let fake = FakeVhost::new();
    let mut guest = inactive_with(&mem, &fake);
    register_kicks(&mut guest);
    let (_peer, tap) = attach(&mut guest, &fake, true);
    assert!(fake.take_ops().is_empty(), "nothing before activation");
    guest.dev().ack_features(ACKED);
    guest.activate();
    assert_eq!(fake.take_ops(), setup_ops(&guest, tap, [0, 0]));
    assert!(guest.dev().vhost_running());
    assert_eq!(guest.dev().errors_seen, 0);
}

#[test]
fn without_vhost_net_the_device_moves_the_frames_and_says_so_once() {
    let mem = test_memory();
    let fake = FakeVhost::new().failing(|op| *op == Op::Open);
    let mut guest = guest_with(&mem, &fake);
    let (peer, _) = attach(&mut guest, &fake, true);
    assert_eq!(fake.take_ops(), [Op::Open]);
    assert!(!guest.dev().vhost_running());
    assert_eq!(guest.dev().errors_seen, 1, "one line");
    guest.send(&frame(60, 1));
    assert_eq!(recv_now(&peer).unwrap(), frame(60, 1));
    guest.provide_rx(1, 4096);
    guest.assert_delivered(&peer, &frame(70, 2));
    // Not tried again: not on another tap, not after a reset.
    let (_peer, _) = attach(&mut guest, &fake, true);
    assert!(guest.dev().reset());
    guest.dev().ack_features(ACKED);
    guest.activate();
    assert!(fake.take_ops().is_empty());
    assert_eq!(guest.dev().errors_seen, 1);
}

#[test]
fn a_feature_vhost_lacks_leaves_the_frames_to_the_device() {
    let mem = test_memory();
    let fake = FakeVhost::new();
    fake.state().offered = KERNEL_FEATURES & !(1 << VIRTIO_RING_F_EVENT_IDX);
    let mut guest = guest_with(&mem, &fake);
    let (peer, _) = attach(&mut guest, &fake, true);
    assert_eq!(
        fake.take_ops(),
        [Op::Open, Op::Owner, Op::GetFeatures, Op::Closed]
    );
    assert!(!guest.dev().vhost_running());
    assert_eq!(guest.dev().errors_seen, 1);
    guest.send(&frame(60, 1));
    assert_eq!(recv_now(&peer).unwrap(), frame(60, 1));
}

#[test]
fn vhost_net_off_never_opens_it() {
    let (net, _) = Net::with_options(
        0,
        NetOptions {
            vhost: false,
            ..NetOptions::default()
        },
    )
    .unwrap();
    assert!(!net.vhost.allowed);
    assert!(Net::new(0).unwrap().0.vhost.allowed);

    let mem = test_memory();
    let fake = FakeVhost::new();
    let mut guest = inactive_with(&mem, &fake);
    guest.dev().vhost.allowed = false;
    guest.activate();
    let (peer, _) = attach(&mut guest, &fake, true);
    assert!(fake.take_ops().is_empty());
    guest.send(&frame(60, 1));
    assert_eq!(recv_now(&peer).unwrap(), frame(60, 1));
    assert_eq!(guest.dev().errors_seen, 0);
}

#[test]
fn a_backend_refused_after_one_queue_started_gives_both_back() {
    let mem = test_memory();
    let fake = FakeVhost::new().failing(|op| matches!(op, Op::Backend(1, Some(_))));
    let mut guest = guest_with(&mem, &fake);
    // Two frames through a backend vhost-net does not drive: the tx queue is at 2.
    let (peer_a, _) = attach(&mut guest, &fake, false);
    guest.send(&frame(60, 1));
    guest.send(&frame(60, 2));
    assert_eq!(recv_now(&peer_a).unwrap(), frame(60, 1));
    assert!(fake.take_ops().is_empty());

    let (peer_b, tap) = attach(&mut guest, &fake, true);
    let mut expected = setup_ops(&guest, tap, [0, 2]);
    expected.extend(stop_ops());
    assert_eq!(fake.take_ops(), expected);
    assert!(!guest.dev().vhost_running());
    assert_eq!(guest.dev().errors_seen, 1);
    // The device goes on from where it was, on the new backend.
    guest.send(&frame(60, 3));
    assert_eq!(recv_now(&peer_b).unwrap(), frame(60, 3));
    assert_eq!(guest.stats().tx_frames, 3);
}

#[test]
fn a_backend_vhost_cannot_drive_takes_the_queues_back_where_vhost_left_them() {
    let mem = test_memory();
    let fake = FakeVhost::new();
    let mut guest = guest_with(&mem, &fake);
    register_kicks(&mut guest);
    let (_peer, _) = attach(&mut guest, &fake, true);
    fake.take_ops();
    // vhost-net sends one frame: it takes the chain and returns it used.
    let head = guest.push_chain(TX_QUEUE, &[ro(100)], &frame(88, 1));
    let used_ring = guest.queues.device_queues()[TX_QUEUE].used_ring();
    mem.write_obj([u32::from(head), 0], GuestAddress(used_ring + 4))
        .unwrap();
    mem.write_obj(1u16, GuestAddress(used_ring + 2)).unwrap();
    fake.state().bases[TX_QUEUE] = Some(1);

    // A backend it cannot drive: vhost-net stops, silently, and the device serves it.
    let (peer, _) = attach(&mut guest, &fake, false);
    assert_eq!(fake.take_ops(), stop_ops());
    assert!(!guest.dev().vhost_running());
    assert_eq!(guest.dev().errors_seen, 0);
    let (kicks, _) = kick_and_call_fds(&guest);
    for fd in &kicks {
        assert_eq!(guest.watcher.watched.get(fd), Some(&EventSet::IN));
    }
    // The frame vhost-net sent is not sent again; the next one goes.
    guest.push_chain(TX_QUEUE, &[ro(100)], &frame(88, 2));
    guest.kick(TX_QUEUE);
    assert_eq!(recv_now(&peer).unwrap(), frame(88, 2));
    assert_eq!(recv_now(&peer), None);
    assert_eq!(guest.take_used(TX_QUEUE).len(), 2);
    // And vhost-net comes back with a tap it drives, from there.
    let (_peer, tap) = attach(&mut guest, &fake, true);
    let ops = fake.take_ops();
    assert!(ops.contains(&Op::Base(TX_QUEUE, 2)), "{ops:?}");
    assert!(ops.ends_with(&[Op::Backend(0, Some(tap)), Op::Backend(1, Some(tap))]));
}
