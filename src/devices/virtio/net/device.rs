//! The virtio-net device: features, config space, activation and reset, the tap's offloads,
//! and the swap of its backend and the tap's watch, which the event handler calls on the
//! event-loop thread (vhost-net's part of those is in `vhost.rs`).

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::backend::{OffloadControl, Tap, TunOffloads};
use super::handle::{BackendChange, Counters, Shared, handle_pair};
use super::header::{Negotiated, tap_offloads};
use super::vhost::Vhost;
use super::{
    MAX_BUF_LEN, NUM_QUEUES, NetError, NetHandle, NetStats, RX_QUEUE, RX_QUEUE_SIZE, TX_QUEUE,
    TX_QUEUE_SIZE,
};
use crate::devices::virtio::watcher::FdWatcher;
use crate::devices::virtio::{
    ActivateError, Interrupt, TYPE_NET, VIRTIO_F_VERSION_1, VirtioDevice, activation_queues,
};
use crate::vmm::GuestMemory;

/// Maximum size of each queue, in queue index order (see [`RX_QUEUE_SIZE`],
/// [`TX_QUEUE_SIZE`]).
const QUEUE_MAX_SIZES: [u16; NUM_QUEUES] = {
    let mut sizes = [0; NUM_QUEUES];
    sizes[RX_QUEUE] = RX_QUEUE_SIZE;
    sizes[TX_QUEUE] = TX_QUEUE_SIZE;
    sizes
};
/// Everything the device offers: event indexes, indirect descriptors, the offloads of a tap
/// (checksums, TCP segmentation and its ECN bit, both ways), mergeable rx buffers, the MAC and
/// the link status. No UFO/USO, no control queue.
pub(super) const FEATURES: u64 = VIRTIO_F_VERSION_1
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_ECN)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_HOST_ECN)
    | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_NET_F_STATUS);
/// The offloads of [`FEATURES`]: what a NIC without them
/// ([`Net::with_offloads`]`(slot, false)`) does not offer.
pub(super) const OFFLOAD_FEATURES: u64 = (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_ECN)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_HOST_ECN);
/// Size of the config space: `mac[6]`, then `status` (le16).
const CONFIG_SIZE: usize = 8;

/// How a [`Net`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetOptions {
    /// Offer a tap's checksum and segmentation offloads (see [`Net::with_offloads`]).
    pub offloads: bool,
    /// Let vhost-net carry the frames when the backend is a tap it can drive (see `vhost.rs`);
    /// off, the device always moves them itself.
    pub vhost: bool,
}

impl Default for NetOptions {
    /// Offloads and vhost-net.
    fn default() -> Self {
        NetOptions {
            offloads: true,
            vhost: true,
        }
    }
}

/// What the device works with once the driver has set it up.
pub(super) struct ActiveQueues {
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn Interrupt>,
    pub(super) rx: Queue,
    pub(super) tx: Queue,
}

/// The tap descriptor as registered with the event loop, and the events it is watched for
/// (empty: registered, but quiet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watched {
    pub(super) fd: RawFd,
    pub(super) events: EventSet,
}

/// A virtio-net device whose frames go to a host tap (see the module docs).
pub struct Net {
    slot: u32,
    mac: [u8; 6],
    /// What the device offers: [`FEATURES`], without [`OFFLOAD_FEATURES`] when its backend
    /// cannot take them.
    features: u64,
    pub(super) acked_features: u64,
    /// What the accepted features allow (all off until the driver accepts some).
    pub(super) negotiated: Negotiated,
    /// Sets the tap's offloads (`TUNSETOFFLOAD`; replaced in tests).
    pub(super) offload_control: Box<dyn OffloadControl>,
    pub(super) queue_events: Vec<EventFd>,
    pub(super) shared: Arc<Shared>,
    pub(super) active: Option<ActiveQueues>,
    pub(super) backend: Option<Tap>,
    /// What the event loop watches of the tap, as last applied.
    pub(super) watched: Option<Watched>,
    /// The rx queue had no buffer left last time: the tap is not watched until the guest
    /// adds some (it notifies the rx queue then).
    pub(super) rx_starved: bool,
    /// One tx frame, gathered from its chain (allocated once).
    pub(super) tx_buf: Vec<u8>,
    /// One rx frame, read from the tap (allocated once).
    pub(super) rx_buf: Vec<u8>,
    /// The frame in `rx_buf` (its length, header included) is waiting for rx buffers: it is
    /// delivered before anything else is read from the tap.
    pub(super) rx_pending: Option<usize>,
    /// The chains one rx frame is spread over, while it is (allocated once, a queue's worth).
    pub(super) rx_chains: Vec<super::rx::ChainUse>,
    /// vhost-net's state: whether it may run, and runs, the queues.
    pub(super) vhost: Vhost,
    pub(super) errors_seen: u32,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("slot", &self.slot)
            .field("active", &self.active.is_some())
            .field("attached", &self.attached())
            .field("vhost", &self.vhost_running())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// The NIC of virtio-net slot `slot`, with its placeholder MAC and no tap yet, and the
    /// handle that attaches one.
    pub fn new(slot: u32) -> io::Result<(Net, NetHandle)> {
        Self::with_offloads(slot, true)
    }

    /// As [`Net::new`]; without `offloads`, the device offers no checksum or segmentation
    /// offload, for a backend that keeps frame boundaries but is no tap (passt's socket, in
    /// the end): every frame then goes either way whole, checksummed, with an empty header,
    /// and `TUNSETOFFLOAD` is never tried.
    pub fn with_offloads(slot: u32, offloads: bool) -> io::Result<(Net, NetHandle)> {
        Self::with_options(
            slot,
            NetOptions {
                offloads,
                ..NetOptions::default()
            },
        )
    }

    /// The NIC of virtio-net slot `slot`, built as `options` says.
    pub fn with_options(slot: u32, options: NetOptions) -> io::Result<(Net, NetHandle)> {
        let NetOptions { offloads, vhost } = options;
        let queue_events = (0..NUM_QUEUES)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        let (shared, handle) = handle_pair()?;
        let device = Net {
            slot,
            mac: guest_init::netspec::slot_mac(slot),
            features: if offloads {
                FEATURES
            } else {
                FEATURES & !OFFLOAD_FEATURES
            },
            acked_features: 0,
            negotiated: Negotiated::default(),
            offload_control: Box::new(TunOffloads),
            queue_events,
            shared,
            active: None,
            backend: None,
            watched: None,
            rx_starved: false,
            tx_buf: vec![0; MAX_BUF_LEN],
            rx_buf: vec![0; MAX_BUF_LEN],
            rx_pending: None,
            rx_chains: Vec::with_capacity(usize::from(RX_QUEUE_SIZE)),
            vhost: Vhost::new(vhost)?,
            errors_seen: 0,
        };
        Ok((device, handle))
    }

    /// The virtio-net slot.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The MAC in the config space.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether the driver has activated the device.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Whether a tap is attached (the event loop has applied the handle's last change).
    pub fn attached(&self) -> bool {
        self.backend.is_some()
    }

    /// The device's counters right now.
    pub fn stats(&self) -> NetStats {
        self.shared.counters.snapshot()
    }

    /// The event signalled when the driver notifies queue `index`.
    pub(super) fn queue_event(&self, index: usize) -> Option<&EventFd> {
        self.queue_events.get(index)
    }

    /// Applies the backend change the handle left, if any.
    pub(super) fn apply_pending(&mut self, watcher: &mut dyn FdWatcher) {
        match self.shared.take_pending() {
            Some(BackendChange::Attach(fd)) => self.set_backend(Some(Tap::new(fd)), watcher),
            Some(BackendChange::Detach) => self.set_backend(None, watcher),
            None => {}
        }
    }

    /// Replaces the backend: the old tap leaves the event loop before it is closed (its
    /// number may come back with the next one), then the new one is watched.
    pub(super) fn set_backend(&mut self, tap: Option<Tap>, watcher: &mut dyn FdWatcher) {
        if let Some(old) = self.watched.take()
            && let Err(err) = watcher.unwatch(old.fd)
        {
            log_error(&mut self.errors_seen, &NetError::EventLoop(err));
        }
        self.backend = tap;
        // A new tap is worth a look at the rx queue, whatever the old one found.
        self.rx_starved = false;
        self.sync_offloads();
        self.vhost_backend_changed();
        self.sync_interest(watcher);
    }

    /// Sets the tap's offloads to what the guest accepted ([`tap_offloads`]): none until the
    /// driver accepts features, and after a reset. A tap that refuses is logged once and left
    /// to send plain frames, which every guest takes.
    pub(super) fn sync_offloads(&mut self) {
        if self.features & OFFLOAD_FEATURES == 0 {
            return;
        }
        let flags = tap_offloads(&self.negotiated);
        let Some(tap) = self.backend.as_mut() else {
            return;
        };
        if let Err(source) = tap.set_offloads(&mut *self.offload_control, flags) {
            log_error(
                &mut self.errors_seen,
                &NetError::TapOffloads { flags, source },
            );
        }
    }

    /// What the event loop should watch of the tap: readability while the device is active
    /// and the guest has rx buffers; nothing (but still registered) otherwise; not the tap at
    /// all once it failed, or while vhost-net reads it.
    fn wanted_watch(&self) -> Option<Watched> {
        if self.vhost_running() {
            return None;
        }
        let tap = self.backend.as_ref().filter(|tap| !tap.failed())?;
        let events = if self.active.is_some() && !self.rx_starved {
            EventSet::IN
        } else {
            EventSet::empty()
        };
        Some(Watched {
            fd: tap.raw_fd(),
            events,
        })
    }

    /// Brings the event loop's watch of the tap in line with [`Net::wanted_watch`].
    pub(super) fn sync_interest(&mut self, watcher: &mut dyn FdWatcher) {
        let wanted = self.wanted_watch();
        if wanted == self.watched {
            return;
        }
        let result = match (self.watched, wanted) {
            (Some(old), Some(new)) if old.fd == new.fd => watcher.rewatch(new.fd, new.events),
            (old, new) => {
                let removed = old.map_or(Ok(()), |old| watcher.unwatch(old.fd));
                removed.and_then(|()| new.map_or(Ok(()), |new| watcher.watch(new.fd, new.events)))
            }
        };
        match result {
            Ok(()) => self.watched = wanted,
            Err(err) => {
                log_error(&mut self.errors_seen, &NetError::EventLoop(err));
                // Unknown state: forget the watch; the next sync tries a fresh one.
                self.watched = None;
            }
        }
    }
}

/// Interrupts the guest for `queue` if it wants to be told.
pub(super) fn notify_guest(
    queue: &mut Queue,
    mem: &GuestMemory,
    interrupt: &dyn Interrupt,
    errors_seen: &mut u32,
) {
    if let Err(err) = super::super::notify_used(queue, mem, interrupt) {
        log_error(errors_seen, &NetError::Interrupt(err));
    }
}

/// Asks the driver to notify `queue` once it makes available chains past `seen` (where the
/// device stopped looking; with event indexes, `avail_event` is set to it), then looks again:
/// true if there already are some, and the device should take them rather than wait. An
/// available index the queue refuses (a driver's bug) counts as none: the next notification
/// is all the device can wait for.
pub(super) fn rearm_notification(
    queue: &mut Queue,
    mem: &GuestMemory,
    seen: u16,
    errors_seen: &mut u32,
) -> bool {
    let resume = queue.next_avail();
    queue.set_next_avail(seen);
    let more = queue.enable_notification(mem);
    queue.set_next_avail(resume);
    match more {
        Ok(false) => false,
        Ok(true) => queue
            .avail_idx(mem, Ordering::Acquire)
            .is_ok_and(|idx| idx.0.wrapping_sub(resume) <= queue.size()),
        Err(err) => {
            log_error(errors_seen, &NetError::Queue(err));
            false
        }
    }
}

/// Logs one of the device's errors (rate-limited).
pub(super) fn log_error(errors_seen: &mut u32, err: &NetError) {
    super::super::log_guest_error("virtio-net", errors_seen, err);
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_MAX_SIZES
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.device_features();
        self.negotiated = Negotiated::from_features(self.acked_features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config { u8 mac[6]; le16 status; ... } (the rest needs features
        // we do not offer).
        let mut config = [0u8; CONFIG_SIZE];
        let (mac, status) = config.split_at_mut(self.mac.len());
        mac.copy_from_slice(&self.mac);
        status.copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        super::super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Read-only with VERSION_1: the guest changes its MAC without telling the device.
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        // In queue index order: RX_QUEUE, TX_QUEUE.
        let [mut rx, mut tx] = activation_queues::<NUM_QUEUES>(self.active.is_some(), queues)?;
        rx.set_event_idx(self.negotiated.event_idx);
        tx.set_event_idx(self.negotiated.event_idx);
        self.active = Some(ActiveQueues {
            mem,
            interrupt,
            rx,
            tx,
        });
        self.rx_starved = false;
        self.sync_offloads();
        // Buffers and frames the driver queued before it finished activating are waiting;
        // the rx event also starts watching the tap.
        for event in &self.queue_events {
            event.write(1)?;
        }
        Ok(())
    }

    /// Stops vhost-net, forgets the queues and the negotiated features, and drops a frame that
    /// was waiting for rx buffers. The tap stays attached (it belongs to the host's
    /// configuration, not to the driver) but loses its offloads: the wake-up event lets the
    /// event loop stop watching it (and watch the queue events again) until the driver
    /// activates the device again.
    fn reset(&mut self) -> bool {
        self.end_vhost();
        self.active = None;
        self.acked_features = 0;
        self.negotiated = Negotiated::default();
        self.rx_starved = false;
        if self.rx_pending.take().is_some() {
            Counters::add(&self.shared.counters.rx_dropped, 1);
        }
        self.sync_offloads();
        if let Err(err) = self.shared.wake.write(1) {
            log_error(&mut self.errors_seen, &NetError::EventLoop(err));
        }
        true
    }
}
