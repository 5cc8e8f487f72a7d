//! vhost-net: the host kernel moves the frames between the guest's queues and the tap, and the
//! device only sets it up, relays its interrupts, and takes the queues back when it stops.
//!
//! **When.** vhost-net runs a device's queues while the driver has activated it and the
//! attached backend is a tap it can drive (a tun character device with `IFF_TAP`,
//! `IFF_NO_PI`, `IFF_VNET_HDR` and a vnet header of [`VNET_HDR_LEN`] bytes, as
//! `network::tap` makes them), unless the VM was built without it (`RUNVM_VHOST_NET=0`) or it
//! failed on this device before. Any other backend (passt's datagram socket, the tests' socket
//! pairs) is served by the device itself, without a word: vhost-net drives taps only. The
//! event loop starts it (before it handles any event, so a queue the driver has just
//! activated is not touched by the device first) and swaps its backend; a reset stops it on
//! the vCPU thread.
//!
//! **Set-up** (`VhostSession::open`, then the backend): `/dev/vhost-net`, `VHOST_SET_OWNER`
//! (the kernel's worker thread, `vhost-<pid>`, is this process's), the features
//! ([`vhost_features`]: the ring features the driver accepted, each of which vhost-net must
//! offer; the offloads, the MAC and the link status are the device's and the tap's business,
//! not vhost's), the memory table (every region of guest memory, [`memory_table`]), then per
//! queue its size, its rings' guest addresses ([`vring_config`]: each ring inside one region
//! of guest memory, or vhost-net is not used), the index where the device stopped taking
//! chains (`VHOST_SET_VRING_BASE`), the call and the kick eventfds, and last
//! `VHOST_NET_SET_BACKEND` with the tap for each queue. A frame the device had read and was
//! holding for rx buffers is dropped then (counted in `rx_dropped`).
//!
//! **Notifications.** The kick of each queue is the queue's own event, the KVM ioeventfd on
//! QueueNotify: while vhost-net runs the event loop keeps it registered with an empty
//! interest (vhost-net is woken by every write; the device must not look at the queues), and
//! stops watching the tap. The call of both queues is KVM's irqfd of the device, which the
//! transport hands out for that (`Interrupt::direct_eventfd`): vhost-net then interrupts the
//! guest without waking the VMM, and since Linux's virtio_mmio driver looks at the rings only
//! when the transport's interrupt status says a buffer was used, the transport keeps that bit
//! set from then on (the driver then looks at both rings at every interrupt of the device,
//! which costs it nothing when one has nothing new). Where the interrupt has no such eventfd
//! (the tests'), the call of each queue is an eventfd of the device's, always watched, which
//! the device answers with `Interrupt::trigger(INT_VRING)`. vhost-net follows the event
//! indexes itself.
//!
//! **Backend changes while it runs.** A new tap takes over the rings in place
//! (`VHOST_NET_SET_BACKEND` with its descriptor); detaching sets the backend to -1: the rings
//! wait, and the guest's tx frames stay queued (rather than dropped) until a tap comes. A
//! backend vhost-net cannot drive stops it (below) and the device serves that backend itself.
//!
//! **Stopping** (a backend it cannot drive, a failure after it started): the backend is set to
//! -1 on each queue (the kernel finishes what it was doing), `VHOST_GET_VRING_BASE` says
//! where it stopped taking chains, the vhost descriptor is closed (the kernel stops polling
//! the kicks), and the device resumes from there ([`resume_queue`]; the used index is read
//! back from the used ring), looking at both queues at once. A reset stops it the same way
//! and forgets the queues.
//!
//! **Failures.** Anything that fails (no `/dev/vhost-net`, `EPERM`, a feature vhost-net lacks,
//! a ring outside guest memory, an ioctl refused) leaves the device on its own data path for
//! the rest of its life, with one line through its error log (`virtio-net: slot N: vhost-net
//! not used ...`); nothing of it is fatal.
//!
//! **Security.** With vhost-net the kernel reads the descriptor chains and frames and checks
//! them against the memory table; the device still checks what it hands over: ring addresses
//! and sizes must lie inside one region of guest memory, and only the ring features the
//! driver accepted are set.
//!
//! **Counters.** Frames vhost-net moves are not seen by the device: [`NetStats`] counts only
//! what the device itself moved (see there).
//!
//! [`NetStats`]: super::NetStats

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::vhost::vhost_kern::net::Net as KernelNet;
use ::vhost::{VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, GuestAddress, GuestMemory as _, GuestMemoryRegion as _};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::device::{Net, log_error};
use super::handle::Counters;
use super::{NUM_QUEUES, NetError, RX_QUEUE, TX_QUEUE, VNET_HDR_LEN};
use crate::devices::virtio::watcher::FdWatcher;
use crate::devices::virtio::{INT_VRING, VIRTIO_F_VERSION_1};
use crate::vmm::GuestMemory;

/// The features that change how the rings are laid out or walked: vhost-net must do each
/// one the driver accepted. The others the device offers (offloads, MAC, status) are not
/// vhost's: the offloads are between the guest and the tap (`TUNSETOFFLOAD`).
pub(super) const RING_FEATURES: u64 = VIRTIO_F_VERSION_1
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_NET_F_MRG_RXBUF);

/// The tun device's numbers (`/dev/net/tun`: misc major 10, `TUN_MINOR` 200).
const TUN_MAJOR: u32 = 10;
const TUN_MINOR: u32 = 200;

/// Why vhost-net does not run a device's queues (the device serves them itself).
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// `/dev/vhost-net` cannot be opened (no such device, or no permission).
    #[error("cannot open /dev/vhost-net: {0}")]
    Open(#[source] io::Error),
    /// A vhost ioctl failed.
    #[error("{op}: {source}")]
    Ioctl {
        /// Which request.
        op: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// vhost-net lacks ring features the driver accepted.
    #[error("vhost-net lacks the accepted features {0:#x}")]
    MissingFeatures(u64),
    /// A ring does not lie inside one region of guest memory.
    #[error("the {area} of queue {queue} ({len} bytes at {addr:#x}) is not inside guest memory")]
    RingOutsideMemory {
        /// The queue's index.
        queue: usize,
        /// Which ring: descriptor table, available ring, used ring.
        area: &'static str,
        /// Its guest address.
        addr: u64,
        /// Its size in bytes.
        len: u64,
    },
    /// A region of guest memory has no host mapping.
    #[error("guest memory at {0:#x} has no host mapping")]
    Unmapped(u64),
}

/// The error the `vhost` crate wraps (its ioctls and its open are all system calls).
fn os_error(err: ::vhost::Error) -> io::Error {
    match err {
        ::vhost::Error::VhostOpen(e)
        | ::vhost::Error::IoctlError(e)
        | ::vhost::Error::IOError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn ioctl(op: &'static str) -> impl FnOnce(::vhost::Error) -> VhostError {
    move |err| VhostError::Ioctl {
        op,
        source: os_error(err),
    }
}

/// The features to set on vhost-net: the ring features among `acked` (the driver's), all of
/// which vhost-net must offer (`offered`, `VHOST_GET_FEATURES`).
pub(super) fn vhost_features(acked: u64, offered: u64) -> Result<u64, VhostError> {
    let wanted = acked & RING_FEATURES;
    match wanted & !offered {
        0 => Ok(wanted),
        missing => Err(VhostError::MissingFeatures(missing)),
    }
}

/// Every region of guest memory, with where it is mapped here, for `VHOST_SET_MEM_TABLE`.
pub(super) fn memory_table(
    mem: &GuestMemory,
) -> Result<Vec<VhostUserMemoryRegionInfo>, VhostError> {
    mem.iter()
        .map(|region| {
            let start = region.start_addr();
            let host = mem
                .get_host_address(start)
                .map_err(|_| VhostError::Unmapped(start.raw_value()))?;
            Ok(VhostUserMemoryRegionInfo {
                guest_phys_addr: start.raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
                // Anonymous memory: no file behind it (only vhost-user would use one).
                mmap_handle: -1,
                ..Default::default()
            })
        })
        .collect()
}

/// The ring addresses of queue `index` for `VHOST_SET_VRING_ADDR` (guest addresses: the
/// `vhost` crate translates them through the memory it was opened with). Each ring, as large
/// as the queue's size makes it (event index fields included), must lie inside one region of
/// guest memory: vhost-net translates its start only.
pub(super) fn vring_config(
    index: usize,
    queue: &Queue,
    mem: &GuestMemory,
) -> Result<VringConfigData, VhostError> {
    let size = u64::from(queue.size());
    let areas = [
        ("descriptor table", queue.desc_table(), 16 * size),
        // flags, idx, the ring, used_event.
        ("available ring", queue.avail_ring(), 6 + 2 * size),
        // flags, idx, the ring, avail_event.
        ("used ring", queue.used_ring(), 6 + 8 * size),
    ];
    for (area, addr, len) in areas {
        if !inside_one_region(mem, addr, len) {
            return Err(VhostError::RingOutsideMemory {
                queue: index,
                area,
                addr,
                len,
            });
        }
    }
    Ok(VringConfigData {
        queue_max_size: queue.max_size(),
        queue_size: queue.size(),
        flags: 0,
        desc_table_addr: queue.desc_table(),
        used_ring_addr: queue.used_ring(),
        avail_ring_addr: queue.avail_ring(),
        log_addr: None,
    })
}

/// Whether the `len` bytes at guest address `addr` lie inside one region of `mem`.
fn inside_one_region(mem: &GuestMemory, addr: u64, len: u64) -> bool {
    let Some((region, offset)) = mem.to_region_addr(GuestAddress(addr)) else {
        return false;
    };
    offset
        .raw_value()
        .checked_add(len)
        .is_some_and(|end| end <= region.len())
}

/// Puts `queue` back where vhost-net left it: the next chain to take at `base`
/// (`VHOST_GET_VRING_BASE`; without it, the used index: vhost-net returns every chain it
/// takes before it stops), the next used entry at the used ring's index.
pub(super) fn resume_queue(
    queue: &mut Queue,
    mem: &GuestMemory,
    base: Option<u16>,
) -> Result<(), virtio_queue::Error> {
    let used = queue.used_idx(mem, Ordering::Acquire)?.0;
    queue.set_next_used(used);
    queue.set_next_avail(base.unwrap_or(used));
    Ok(())
}

/// Whether `backend` is a tap vhost-net can drive as the device would: a tun descriptor (by
/// its device number, so that the tun requests below go to tun and nothing else) in
/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` mode with a vnet header of [`VNET_HDR_LEN`] bytes.
pub(super) fn is_vnet_tap(backend: &File) -> bool {
    let Ok(meta) = backend.metadata() else {
        return false;
    };
    let rdev = meta.rdev();
    if !meta.file_type().is_char_device()
        || libc::major(rdev) != TUN_MAJOR
        || libc::minor(rdev) != TUN_MINOR
    {
        return false;
    }
    let fd = backend.as_raw_fd();
    // SAFETY: ifreq is plain old data (arrays, integers, a union of those and a pointer we do
    // not use); all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes one ifreq into a live local; `fd` is a tun descriptor (checked
    // above), open for the duration of the call (borrowed from `backend`).
    if unsafe { libc::ioctl(fd, libc::TUNGETIFF, &raw mut req) } != 0 {
        return false;
    }
    // SAFETY: TUNGETIFF filled the union's flags (tun_get_iff); reading a c_short of a union
    // of plain data is valid whatever was written.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    let wanted = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if flags & wanted != wanted {
        return false;
    }
    let mut size: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int into a live local, on the tun descriptor above.
    if unsafe { libc::ioctl(fd, libc::TUNGETVNETHDRSZ, &raw mut size) } != 0 {
        return false;
    }
    usize::try_from(size).is_ok_and(|size| size == VNET_HDR_LEN)
}

/// One vhost-net instance: the requests the device makes of it (the `vhost` crate's traits
/// cannot be made into objects). The kernel's in production, a fake in tests.
pub(super) trait VhostDevice: Send {
    /// `VHOST_SET_OWNER`.
    fn set_owner(&self) -> ::vhost::Result<()>;
    /// `VHOST_GET_FEATURES`.
    fn get_features(&self) -> ::vhost::Result<u64>;
    /// `VHOST_SET_FEATURES`.
    fn set_features(&self, features: u64) -> ::vhost::Result<()>;
    /// `VHOST_SET_MEM_TABLE`.
    fn set_mem_table(&self, regions: &[VhostUserMemoryRegionInfo]) -> ::vhost::Result<()>;
    /// `VHOST_SET_VRING_NUM`.
    fn set_vring_num(&self, index: usize, num: u16) -> ::vhost::Result<()>;
    /// `VHOST_SET_VRING_ADDR`.
    fn set_vring_addr(&self, index: usize, config: &VringConfigData) -> ::vhost::Result<()>;
    /// `VHOST_SET_VRING_BASE`.
    fn set_vring_base(&self, index: usize, base: u16) -> ::vhost::Result<()>;
    /// `VHOST_GET_VRING_BASE`.
    fn get_vring_base(&self, index: usize) -> ::vhost::Result<u32>;
    /// `VHOST_SET_VRING_CALL`.
    fn set_vring_call(&self, index: usize, call: &EventFd) -> ::vhost::Result<()>;
    /// `VHOST_SET_VRING_KICK`.
    fn set_vring_kick(&self, index: usize, kick: &EventFd) -> ::vhost::Result<()>;
    /// `VHOST_NET_SET_BACKEND` (`None`: -1).
    fn set_backend(&self, index: usize, backend: Option<&File>) -> ::vhost::Result<()>;
}

impl VhostDevice for KernelNet<Arc<GuestMemory>> {
    fn set_owner(&self) -> ::vhost::Result<()> {
        ::vhost::VhostBackend::set_owner(self)
    }
    fn get_features(&self) -> ::vhost::Result<u64> {
        ::vhost::VhostBackend::get_features(self)
    }
    fn set_features(&self, features: u64) -> ::vhost::Result<()> {
        ::vhost::VhostBackend::set_features(self, features)
    }
    fn set_mem_table(&self, regions: &[VhostUserMemoryRegionInfo]) -> ::vhost::Result<()> {
        ::vhost::VhostBackend::set_mem_table(self, regions)
    }
    fn set_vring_num(&self, index: usize, num: u16) -> ::vhost::Result<()> {
        ::vhost::VhostBackend::set_vring_num(self, index, num)
    }
    fn set_vring_addr(&self, index: usize, config: &VringConfigData) -> ::vhost::Result<()> {
        ::vhost::VhostBackend::set_vring_addr(self, index, config)
    }
    fn set_vring_base(&self, index: usize, base: u16) -> ::vhost::Result<()> {
        ::vhost::VhostBackend::set_vring_base(self, index, base)
    }
    fn get_vring_base(&self, index: usize) -> ::vhost::Result<u32> {
        ::vhost::VhostBackend::get_vring_base(self, index)
    }
    fn set_vring_call(&self, index: usize, call: &EventFd) -> ::vhost::Result<()> {
        ::vhost::VhostBackend::set_vring_call(self, index, call)
    }
    fn set_vring_kick(&self, index: usize, kick: &EventFd) -> ::vhost::Result<()> {
        ::vhost::VhostBackend::set_vring_kick(self, index, kick)
    }
    fn set_backend(&self, index: usize, backend: Option<&File>) -> ::vhost::Result<()> {
        ::vhost::net::VhostNet::set_backend(self, index, backend)
    }
}

/// Where a device's vhost-net instances come from, and which backends they can drive: the
/// kernel ([`KernelVhost`]) in production, a fake in tests.
pub(super) trait VhostHost: Send {
    /// A new vhost-net instance for guest memory `mem`.
    fn open(&self, mem: &GuestMemory) -> Result<Box<dyn VhostDevice>, VhostError>;
    /// Whether vhost-net can drive `backend`.
    fn drives(&self, backend: &File) -> bool;
}

/// The kernel's vhost-net: `/dev/vhost-net`, driving taps as runvm makes them.
#[derive(Debug, Default)]
pub(super) struct KernelVhost;

impl VhostHost for KernelVhost {
    fn open(&self, mem: &GuestMemory) -> Result<Box<dyn VhostDevice>, VhostError> {
        let net =
            KernelNet::new(Arc::new(mem.clone())).map_err(|e| VhostError::Open(os_error(e)))?;
        Ok(Box::new(net))
    }

    fn drives(&self, backend: &File) -> bool {
        is_vnet_tap(backend)
    }
}

/// vhost-net set up for a device's queues; dropping it closes the instance (the kernel stops
/// everything it was doing).
pub(super) struct VhostSession {
    device: Box<dyn VhostDevice>,
}

impl VhostSession {
    /// Opens a vhost-net instance from `host` and sets it up for `queues` (in queue index
    /// order, with their kick and call eventfds), all but the backend: nothing moves yet.
    pub(super) fn open(
        host: &dyn VhostHost,
        mem: &GuestMemory,
        acked: u64,
        queues: [&Queue; NUM_QUEUES],
        kicks: &[EventFd],
        calls: [&EventFd; NUM_QUEUES],
    ) -> Result<Self, VhostError> {
        let device = host.open(mem)?;
        device.set_owner().map_err(ioctl("VHOST_SET_OWNER"))?;
        let offered = device.get_features().map_err(ioctl("VHOST_GET_FEATURES"))?;
        let features = vhost_features(acked, offered)?;
        device
            .set_features(features)
            .map_err(ioctl("VHOST_SET_FEATURES"))?;
        device
            .set_mem_table(&memory_table(mem)?)
            .map_err(ioctl("VHOST_SET_MEM_TABLE"))?;
        for (index, ((queue, kick), call)) in queues.into_iter().zip(kicks).zip(calls).enumerate() {
            let config = vring_config(index, queue, mem)?;
            device
                .set_vring_num(index, queue.size())
                .map_err(ioctl("VHOST_SET_VRING_NUM"))?;
            device
                .set_vring_addr(index, &config)
                .map_err(ioctl("VHOST_SET_VRING_ADDR"))?;
            device
                .set_vring_base(index, queue.next_avail())
                .map_err(ioctl("VHOST_SET_VRING_BASE"))?;
            device
                .set_vring_call(index, call)
                .map_err(ioctl("VHOST_SET_VRING_CALL"))?;
            device
                .set_vring_kick(index, kick)
                .map_err(ioctl("VHOST_SET_VRING_KICK"))?;
        }
        Ok(VhostSession { device })
    }

    /// Gives both queues `backend` (`None`: -1, the rings wait).
    pub(super) fn set_backend(&self, backend: Option<&File>) -> Result<(), VhostError> {
        for index in 0..NUM_QUEUES {
            self.device
                .set_backend(index, backend)
                .map_err(ioctl("VHOST_NET_SET_BACKEND"))?;
        }
        Ok(())
    }

    /// Stops vhost-net: no backend (the kernel finishes what it was doing), then where each
    /// queue stopped (`None` if the kernel would not say), then the instance is closed.
    pub(super) fn stop(self) -> [Option<u16>; NUM_QUEUES] {
        for index in 0..NUM_QUEUES {
            let _ = self.device.set_backend(index, None);
        }
        let mut bases = [None; NUM_QUEUES];
        for (index, base) in bases.iter_mut().enumerate() {
            *base = self
                .device
                .get_vring_base(index)
                .ok()
                .and_then(|b| u16::try_from(b).ok());
        }
        bases
    }
}

/// A device's vhost-net state.
pub(super) struct Vhost {
    /// vhost-net may run the queues: the VM allows it and it has not failed on this device.
    pub(super) allowed: bool,
    /// Where instances come from.
    pub(super) host: Box<dyn VhostHost>,
    /// The attached backend is one vhost-net can drive (asked once per attach).
    pub(super) drivable: bool,
    /// vhost-net runs the queues.
    pub(super) session: Option<VhostSession>,
    /// Per queue, the eventfd vhost-net signals to interrupt the guest (always watched).
    pub(super) calls: Vec<EventFd>,
    /// The queue events are registered with an empty interest (vhost-net takes the kicks).
    pub(super) kicks_quiet: bool,
}

impl Vhost {
    /// vhost-net for a device, `allowed` or not, from the kernel.
    pub(super) fn new(allowed: bool) -> io::Result<Self> {
        let calls = (0..NUM_QUEUES)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Vhost {
            allowed,
            host: Box::new(KernelVhost),
            drivable: false,
            session: None,
            calls,
            kicks_quiet: false,
        })
    }

    /// Which queue's call eventfd `fd` is.
    pub(super) fn call_index(&self, fd: std::os::fd::RawFd) -> Option<usize> {
        self.calls.iter().position(|call| call.as_raw_fd() == fd)
    }
}

impl Net {
    /// Whether vhost-net runs the queues (the device must not touch them).
    pub(super) fn vhost_running(&self) -> bool {
        self.vhost.session.is_some()
    }

    /// Starts vhost-net if it should run and does not (active, a tap it can drive attached,
    /// allowed), then brings the queue events' watch in line: quiet while it runs.
    pub(super) fn sync_vhost(&mut self, watcher: &mut dyn FdWatcher) {
        let wanted = self.vhost.allowed
            && self.vhost.drivable
            && self.active.is_some()
            && self.backend.as_ref().is_some_and(|tap| !tap.failed());
        if wanted && self.vhost.session.is_none() {
            self.start_vhost();
        }
        self.sync_kicks(watcher);
    }

    /// Sets vhost-net up for the active queues and the attached tap; on failure, the device
    /// goes on alone.
    fn start_vhost(&mut self) {
        let (Some(active), Some(tap)) = (self.active.as_ref(), self.backend.as_ref()) else {
            return;
        };
        // KVM's irqfd where the transport has one: vhost-net then interrupts the guest itself,
        // without waking the VMM to relay each call.
        let calls = match active.interrupt.direct_eventfd() {
            Some(irqfd) => [irqfd; NUM_QUEUES],
            None => [&self.vhost.calls[0], &self.vhost.calls[1]],
        };
        let opened = VhostSession::open(
            &*self.vhost.host,
            &active.mem,
            self.acked_features,
            [&active.rx, &active.tx],
            &self.queue_events,
            calls,
        );
        let session = match opened {
            Ok(session) => session,
            Err(err) => return self.give_up_vhost(err),
        };
        match session.set_backend(Some(tap.file())) {
            Ok(()) => {
                if self.rx_pending.take().is_some() {
                    Counters::add(&self.shared.counters.rx_dropped, 1);
                }
                self.vhost.session = Some(session);
            }
            Err(err) => {
                // One queue may have started: take both back from where the kernel left them.
                self.vhost.session = Some(session);
                self.stop_vhost();
                self.give_up_vhost(err);
            }
        }
    }

    /// Follows a backend change (the new one is in `self.backend`): while vhost-net runs, the
    /// new tap takes over the rings, no tap leaves them waiting, and a backend it cannot
    /// drive stops it.
    pub(super) fn vhost_backend_changed(&mut self) {
        self.vhost.drivable = self.vhost.allowed
            && self
                .backend
                .as_ref()
                .is_some_and(|tap| self.vhost.host.drives(tap.file()));
        let Some(session) = self.vhost.session.as_ref() else {
            return;
        };
        let result = match self.backend.as_ref() {
            None => session.set_backend(None),
            Some(tap) if self.vhost.drivable => session.set_backend(Some(tap.file())),
            Some(_) => {
                self.stop_vhost();
                return;
            }
        };
        if let Err(err) = result {
            self.stop_vhost();
            self.give_up_vhost(err);
        }
    }

    /// Stops vhost-net and takes the queues back where it left them; the device looks at both
    /// at once (its tap is watched again after this event).
    fn stop_vhost(&mut self) {
        let Some(session) = self.vhost.session.take() else {
            return;
        };
        let bases = session.stop();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        for (index, queue) in [(RX_QUEUE, &mut active.rx), (TX_QUEUE, &mut active.tx)] {
            let base = bases.get(index).copied().flatten();
            if let Err(err) = resume_queue(queue, &active.mem, base) {
                log_error(&mut self.errors_seen, &NetError::Queue(err));
            }
        }
        self.rx_starved = false;
        for event in &self.queue_events {
            if let Err(err) = event.write(1) {
                log_error(&mut self.errors_seen, &NetError::EventLoop(err));
            }
        }
    }

    /// Stops vhost-net for a reset (the queues are forgotten).
    pub(super) fn end_vhost(&mut self) {
        if let Some(session) = self.vhost.session.take() {
            session.stop();
        }
    }

    /// vhost-net failed: the device keeps its queues for good, and says so once, in the
    /// `--log` file (a host matter, not the container's: its stderr stays clean).
    fn give_up_vhost(&mut self, err: VhostError) {
        self.vhost.allowed = false;
        let err = NetError::Vhost {
            slot: self.slot(),
            source: err,
        };
        // Counted with the device's other lines (its tests see that it was said once).
        self.errors_seen = self.errors_seen.saturating_add(1);
        crate::cli::log::warning(&format!("virtio-net: {err}"));
    }

    /// Quiets the queue events while vhost-net runs (they stay registered), and watches them
    /// again once it stops.
    fn sync_kicks(&mut self, watcher: &mut dyn FdWatcher) {
        let quiet = self.vhost_running();
        if quiet == self.vhost.kicks_quiet {
            return;
        }
        let events = if quiet {
            EventSet::empty()
        } else {
            EventSet::IN
        };
        let mut result = Ok(());
        for event in &self.queue_events {
            result = result.and(watcher.rewatch(event.as_raw_fd(), events));
        }
        match result {
            Ok(()) => self.vhost.kicks_quiet = quiet,
            Err(err) => log_error(&mut self.errors_seen, &NetError::EventLoop(err)),
        }
    }

    /// vhost-net signalled queue `index`'s call: interrupts the guest.
    pub(super) fn relay_call(&mut self, index: usize) {
        if let Some(call) = self.vhost.calls.get(index) {
            let _ = call.read();
        }
        let Some(active) = self.active.as_ref() else {
            return;
        };
        if let Err(err) = active.interrupt.trigger(INT_VRING) {
            log_error(&mut self.errors_seen, &NetError::Interrupt(err));
        }
    }
}
