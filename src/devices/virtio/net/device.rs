//! The virtio-net device: features, config space, activation and reset, and the swap of its
//! backend and the tap's watch, which the event handler calls on the event-loop thread.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::backend::Tap;
use super::handle::{BackendChange, Shared, handle_pair};
use super::{MAX_BUF_LEN, NUM_QUEUES, NetError, NetHandle, NetStats, QUEUE_SIZE};
use crate::devices::virtio::watcher::FdWatcher;
use crate::devices::virtio::{
    ActivateError, Interrupt, TYPE_NET, VIRTIO_F_VERSION_1, VirtioDevice, activation_queues,
};
use crate::vmm::GuestMemory;

/// Maximum size of each queue (rx, tx).
const QUEUE_MAX_SIZES: [u16; NUM_QUEUES] = [QUEUE_SIZE; NUM_QUEUES];
/// Everything the device offers: no offloads, no mergeable rx buffers, no control queue.
const FEATURES: u64 = VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS);
/// Size of the config space: `mac[6]`, then `status` (le16).
const CONFIG_SIZE: usize = 8;

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
    acked_features: u64,
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
    pub(super) errors_seen: u32,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("slot", &self.slot)
            .field("active", &self.active.is_some())
            .field("attached", &self.attached())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// The NIC of virtio-net slot `slot`, with its placeholder MAC and no tap yet, and the
    /// handle that attaches one.
    pub fn new(slot: u32) -> io::Result<(Net, NetHandle)> {
        let queue_events = (0..NUM_QUEUES)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        let (shared, handle) = handle_pair()?;
        let device = Net {
            slot,
            mac: guest_init::netspec::slot_mac(slot),
            acked_features: 0,
            queue_events,
            shared,
            active: None,
            backend: None,
            watched: None,
            rx_starved: false,
            tx_buf: vec![0; MAX_BUF_LEN],
            rx_buf: vec![0; MAX_BUF_LEN],
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
        self.sync_interest(watcher);
    }

    /// What the event loop should watch of the tap: readability while the device is active
    /// and the guest has rx buffers; nothing (but still registered) otherwise; not the tap at
    /// all once it failed.
    fn wanted_watch(&self) -> Option<Watched> {
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
        FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.device_features();
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
        let [rx, tx] = activation_queues::<NUM_QUEUES>(self.active.is_some(), queues)?;
        self.active = Some(ActiveQueues {
            mem,
            interrupt,
            rx,
            tx,
        });
        self.rx_starved = false;
        // Buffers and frames the driver queued before it finished activating are waiting;
        // the rx event also starts watching the tap.
        for event in &self.queue_events {
            event.write(1)?;
        }
        Ok(())
    }

    /// Forgets the queues and the negotiated features. The tap stays attached (it belongs
    /// to the host's configuration, not to the driver): the wake-up event lets the event
    /// loop stop watching it until the driver activates the device again.
    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
        self.rx_starved = false;
        if let Err(err) = self.shared.wake.write(1) {
            log_error(&mut self.errors_seen, &NetError::EventLoop(err));
        }
        true
    }
}
