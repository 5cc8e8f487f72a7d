//! Test doubles shared by the device tests: guest memory, the driver's side of the queues
//! (laid out by `MockSplitQueue`), an interrupt that counts, a stand-in for the event loop's
//! watch list, and readiness polled in place of epoll.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use event_manager::{EventManager, MutEventSubscriber};
use virtio_bindings::bindings::virtio_ring::VRING_USED_F_NO_NOTIFY;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::watcher::FdWatcher;
use super::{ActivateError, INT_VRING, Interrupt, VirtioDevice};

/// Guest memory of `size` bytes from address 0.
pub(crate) fn test_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

/// A split-ring descriptor.
pub(crate) fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
}

/// Counts the used-ring interrupts a device raises (any other status fails the test); with
/// [`CountingInterrupt::with_direct`], it also hands out an eventfd for direct use.
#[derive(Default)]
pub(crate) struct CountingInterrupt(AtomicUsize, Option<vmm_sys_util::eventfd::EventFd>);

impl CountingInterrupt {
    /// One whose [`Interrupt::direct_eventfd`] is a new eventfd.
    pub(crate) fn with_direct() -> Self {
        let fd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        CountingInterrupt(AtomicUsize::new(0), Some(fd))
    }

    /// The interrupts raised so far.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Interrupt for CountingInterrupt {
    fn trigger(&self, status: u32) -> io::Result<()> {
        assert_eq!(status, INT_VRING);
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn direct_eventfd(&self) -> Option<&vmm_sys_util::eventfd::EventFd> {
        self.1.as_ref()
    }
}

/// The guest driver's side of a device's queues, in guest memory `mem`.
///
/// `MockSplitQueue` lays out the descriptor table and the available ring; its used ring is
/// not used: the mock places it `size` bytes after the start of the available ring's entries
/// (a length in entries taken for one in bytes), over the second half of that ring, which
/// a queue filled past half would corrupt. Each queue's used ring goes right after its
/// available ring instead (4-byte aligned), as a driver lays it out.
pub(crate) struct DriverQueues<'a> {
    mem: &'a GuestMemoryMmap,
    /// Per queue, its size.
    sizes: Vec<u16>,
    queues: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
    /// Per queue, where its used ring is.
    used_addrs: Vec<GuestAddress>,
    /// Per queue, the used ring entries read so far.
    used_seen: Vec<u16>,
}

impl<'a> DriverQueues<'a> {
    /// Queues of `size` entries, one at each of `addrs`, nothing published yet.
    pub(crate) fn new(mem: &'a GuestMemoryMmap, addrs: &[u64], size: u16) -> Self {
        let layout: Vec<(u64, u16)> = addrs.iter().map(|&addr| (addr, size)).collect();
        Self::with_sizes(mem, &layout)
    }

    /// Queues at each of `layout`'s addresses, of its size, nothing published yet.
    pub(crate) fn with_sizes(mem: &'a GuestMemoryMmap, layout: &[(u64, u16)]) -> Self {
        let queues: Vec<_> = layout
            .iter()
            .map(|&(addr, size)| MockSplitQueue::create(mem, GuestAddress(addr), size))
            .collect();
        let used_addrs: Vec<GuestAddress> = queues
            .iter()
            .zip(layout)
            .map(|(queue, &(_, size))| {
                // flags, idx, the ring, used_event.
                let avail_len = 6 + 2 * u64::from(size);
                let used = queue
                    .avail_addr()
                    .unchecked_add(avail_len)
                    .checked_align_up(4)
                    .unwrap();
                // flags, idx.
                mem.write_obj([0u16; 2], used).unwrap();
                used
            })
            .collect();
        DriverQueues {
            mem,
            sizes: layout.iter().map(|&(_, size)| size).collect(),
            queues,
            used_addrs,
            used_seen: vec![0; layout.len()],
        }
    }

    /// The device's view of the queues, as the transport hands them over on activation.
    pub(crate) fn device_queues(&self) -> Vec<Queue> {
        self.queues
            .iter()
            .zip(&self.used_addrs)
            .map(|(q, used)| {
                let mut queue = q.create_queue::<Queue>().unwrap();
                queue.set_used_ring_address(Some(used.0 as u32), Some((used.0 >> 32) as u32));
                queue
            })
            .collect()
    }

    /// Activates `device` with these queues, interrupting through `interrupt`.
    pub(crate) fn activate(
        &self,
        device: &mut dyn VirtioDevice,
        interrupt: &Arc<CountingInterrupt>,
    ) -> Result<(), ActivateError> {
        let interrupt: Arc<dyn Interrupt> = interrupt.clone();
        device.activate(self.mem.clone(), interrupt, self.device_queues())
    }

    /// Writes `descs` into the descriptor table of `queue` from index `first`.
    pub(crate) fn store(&self, queue: usize, first: u16, descs: &[RawDescriptor]) {
        for (index, raw) in (first..).zip(descs) {
            self.queues[queue].desc_table().store(index, *raw).unwrap();
        }
    }

    /// Makes the chain at `head` available on `queue` (without notifying).
    pub(crate) fn publish(&self, queue: usize, head: u16) {
        let avail = self.queues[queue].avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % self.sizes[queue]))
            .unwrap()
            .store(head);
        avail.idx().store(idx.wrapping_add(1));
    }

    /// Sets the available index of `queue` (a lying driver's).
    pub(crate) fn set_avail_idx(&self, queue: usize, idx: u16) {
        self.queues[queue].avail().idx().store(idx);
    }

    /// The available index of `queue`: how many chains the driver has published.
    pub(crate) fn avail_idx(&self, queue: usize) -> u16 {
        self.queues[queue].avail().idx().load()
    }

    /// Sets `used_event` of `queue` (with event indexes: interrupt me once the used index
    /// passes it).
    pub(crate) fn set_used_event(&self, queue: usize, used_event: u16) {
        let addr = self.queues[queue]
            .avail_addr()
            .unchecked_add(4 + 2 * u64::from(self.sizes[queue]));
        self.mem.write_obj(used_event, addr).unwrap();
    }

    /// `avail_event` of `queue` (with event indexes: notify me once you publish past it).
    pub(crate) fn avail_event(&self, queue: usize) -> u16 {
        let addr = self.used_addrs[queue].unchecked_add(4 + 8 * u64::from(self.sizes[queue]));
        self.mem.read_obj(addr).unwrap()
    }

    /// The used ring's flags of `queue` (`VRING_USED_F_NO_NOTIFY`: do not notify me).
    pub(crate) fn used_flags(&self, queue: usize) -> u16 {
        self.mem.read_obj(self.used_addrs[queue]).unwrap()
    }

    /// Whether a driver that published chains on `queue` from available index `old` to now
    /// notifies the device, as Linux decides it (`virtqueue_kick_prepare`).
    pub(crate) fn kick_wanted(&self, queue: usize, old: u16, event_idx: bool) -> bool {
        let new = self.avail_idx(queue);
        if event_idx {
            let event = self.avail_event(queue);
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            self.used_flags(queue) & VRING_USED_F_NO_NOTIFY as u16 == 0
        }
    }

    /// Whether a device that moved the used index of `queue` from `old` to now should
    /// interrupt a driver that set `used_event` (with event indexes), as the spec puts it.
    pub(crate) fn interrupt_wanted(&self, queue: usize, old: u16) -> bool {
        let new = self.used_idx(queue);
        let addr = self.queues[queue]
            .avail_addr()
            .unchecked_add(4 + 2 * u64::from(self.sizes[queue]));
        let event: u16 = self.mem.read_obj(addr).unwrap();
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    }

    /// The used index of `queue`.
    fn used_idx(&self, queue: usize) -> u16 {
        let addr = self.used_addrs[queue].unchecked_add(2);
        self.mem.read_obj(addr).unwrap()
    }

    /// The used ring entries of `queue` not read yet: (head, len).
    pub(crate) fn take_used(&mut self, queue: usize) -> Vec<(u16, u32)> {
        let idx = self.used_idx(queue);
        let mut out = Vec::new();
        while self.used_seen[queue] != idx {
            let at = u64::from(self.used_seen[queue] % self.sizes[queue]);
            let addr = self.used_addrs[queue].unchecked_add(4 + 8 * at);
            // struct virtq_used_elem { le32 id; le32 len; }
            let [id, len]: [u32; 2] = self.mem.read_obj(addr).unwrap();
            out.push((id as u16, len));
            self.used_seen[queue] = self.used_seen[queue].wrapping_add(1);
        }
        out
    }
}

/// Stands for the epoll set, and fails like the event manager would on bookkeeping mistakes.
#[derive(Default)]
pub(crate) struct FakeWatcher {
    /// What is watched, and for which events.
    pub(crate) watched: HashMap<RawFd, EventSet>,
}

impl FdWatcher for FakeWatcher {
    fn watch(&mut self, fd: RawFd, events: EventSet) -> io::Result<()> {
        if self.watched.insert(fd, events).is_some() {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        Ok(())
    }

    fn rewatch(&mut self, fd: RawFd, events: EventSet) -> io::Result<()> {
        match self.watched.get_mut(&fd) {
            Some(watched) => *watched = events,
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        }
        Ok(())
    }

    fn unwatch(&mut self, fd: RawFd) -> io::Result<()> {
        self.watched
            .remove(&fd)
            .map(|_| ())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

impl FakeWatcher {
    /// What each watched descriptor is ready for now (those ready for nothing left out).
    pub(crate) fn ready(&self) -> Vec<(RawFd, EventSet)> {
        self.watched
            .iter()
            .map(|(&fd, &interest)| (fd, poll_ready(fd, interest)))
            .filter(|(_, events)| !events.is_empty())
            .collect()
    }
}

/// What `fd` is ready for, as a level-triggered epoll would report it for `interest` (errors
/// and hang-ups always).
fn poll_ready(fd: RawFd, interest: EventSet) -> EventSet {
    let mut events = 0;
    if interest.contains(EventSet::IN) {
        events |= libc::POLLIN;
    }
    if interest.contains(EventSet::OUT) {
        events |= libc::POLLOUT;
    }
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call, and the count is 1.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert!(ready >= 0, "poll: {}", io::Error::last_os_error());
    let mut out = EventSet::empty();
    for (bit, event) in [
        (libc::POLLIN, EventSet::IN),
        (libc::POLLOUT, EventSet::OUT),
        (libc::POLLHUP, EventSet::HANG_UP),
        (libc::POLLERR, EventSet::ERROR),
    ] {
        if pfd.revents & bit != 0 {
            out |= event;
        }
    }
    out
}

/// Runs `manager` until it has nothing left to do (panics if it keeps busy).
pub(crate) fn settle<S: MutEventSubscriber>(manager: &mut EventManager<S>) {
    for _ in 0..1000 {
        if manager.run_with_timeout(20).unwrap() == 0 {
            return;
        }
    }
    panic!("the event loop does not settle");
}
