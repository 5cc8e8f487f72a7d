//! The virtio-vsock device: features, config space, activation, and the processing of the tx
//! and rx queues (descriptor chains to packets and back), which the event handler calls.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::muxer::VsockMuxer;
use super::{
    HostRequest, MAX_PKT_PAYLOAD, NUM_QUEUES, QUEUE_SIZE, TX_QUEUE, VsockError, VsockHandle,
    VsockHeader, handle_pair,
};
use crate::devices::virtio::watcher::FdWatcher;
use crate::devices::virtio::{
    ActivateError, Interrupt, TYPE_VSOCK, VIRTIO_F_VERSION_1, VirtioDevice, activation_queues,
};
use crate::vmm::GuestMemory;

/// Maximum size of each queue (rx, tx, event).
const QUEUE_MAX_SIZES: [u16; NUM_QUEUES] = [QUEUE_SIZE; NUM_QUEUES];
/// Tx chains handled per queue event before the device lets other events run.
const MAX_TX_BATCH: usize = 4 * QUEUE_SIZE as usize;

/// What the device works with once the driver has set it up.
struct ActiveQueues {
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    rx: Queue,
    tx: Queue,
    /// The event queue: the device never posts events, it only keeps the queue.
    _event: Queue,
}

/// A virtio-vsock device whose connections end in this process (see the module docs).
pub struct Vsock {
    guest_cid: u64,
    acked_features: u64,
    queue_events: Vec<EventFd>,
    pub(super) wake: Arc<EventFd>,
    requests: Receiver<HostRequest>,
    pub(super) timer: TimerFd,
    armed_deadline: Option<Instant>,
    active: Option<ActiveQueues>,
    pub(super) muxer: VsockMuxer,
    errors_seen: u32,
    /// Where a tx packet's payload is copied out of guest memory.
    tx_buf: Vec<u8>,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("guest_cid", &self.guest_cid)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Vsock {
    /// A device for the guest `guest_cid` and the handle other threads use to open and accept
    /// its connections. Fails for the reserved CIDs (0, 1, 2 and `u32::MAX` and above).
    pub fn new(guest_cid: u64) -> io::Result<(Vsock, VsockHandle)> {
        if guest_cid <= super::HOST_CID || guest_cid >= u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("vsock guest cid {guest_cid} is reserved"),
            ));
        }
        let queue_events = (0..NUM_QUEUES)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        let (parts, handle) = handle_pair()?;
        let timer = TimerFd::new().map_err(io::Error::from)?;
        let device = Vsock {
            guest_cid,
            acked_features: 0,
            queue_events,
            wake: parts.wake,
            requests: parts.requests,
            timer,
            armed_deadline: None,
            active: None,
            muxer: VsockMuxer::new(guest_cid, parts.listeners),
            errors_seen: 0,
            tx_buf: vec![0; MAX_PKT_PAYLOAD as usize],
        };
        Ok((device, handle))
    }

    /// The guest's context id.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Whether the driver has activated the device.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Takes the requests other threads queued through the [`VsockHandle`].
    pub(super) fn process_host_requests(&mut self) {
        while let Ok(request) = self.requests.try_recv() {
            self.muxer.handle_host_request(request);
        }
    }

    /// Hands every packet the guest queued on tx to the muxer, then answers on rx.
    pub(super) fn process_tx(&mut self, now: Instant) {
        let Self {
            active,
            muxer,
            errors_seen,
            queue_events,
            tx_buf,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return;
        };
        let mut used = 0;
        while let Some(chain) = active.tx.pop_descriptor_chain(&active.mem) {
            let head = chain.head_index();
            // The header and the payload may span any number of readable descriptors (Linux
            // sends large writes as several); the reader checks each against guest memory.
            match read_tx_packet(&active.mem, chain, tx_buf) {
                Ok((hdr, len)) => {
                    let payload = tx_buf.get(..len).unwrap_or_default();
                    muxer.handle_guest_packet(&hdr, payload, now);
                }
                Err(err) => log_error(errors_seen, &err),
            }
            // Nothing is written to tx buffers: the used length is 0, good chain or bad.
            if let Err(err) = active.tx.add_used(&active.mem, head, 0) {
                log_error(errors_seen, &VsockError::Queue(err));
            }
            used += 1;
            if used == MAX_TX_BATCH {
                // A guest refilling the queue as fast as we drain it must not starve the rest
                // of the event loop: come back through the queue event.
                if let Some(event) = queue_events.get(TX_QUEUE)
                    && let Err(err) = event.write(1)
                {
                    log_error(errors_seen, &VsockError::EventLoop(err));
                }
                break;
            }
        }
        if used > 0 {
            notify_guest(&mut active.tx, &active.mem, &*active.interrupt, errors_seen);
        }
        self.process_rx(now);
    }

    /// Fills the guest's rx buffers with what the muxer has for it.
    pub(super) fn process_rx(&mut self, now: Instant) {
        let Self {
            active,
            muxer,
            errors_seen,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return;
        };
        let mut used_any = false;
        while muxer.has_rx_work() {
            let Some(mut chain) = active.rx.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            // Any data buffer size is accepted: no more than MAX_PKT_PAYLOAD is written.
            let used_len = match VsockPacket::from_rx_virtq_chain(&active.mem, &mut chain, u32::MAX)
            {
                Ok(mut pkt) => match muxer.fill_rx_packet(&mut pkt, now) {
                    // A buffer without room for data that nobody could use (the pending work
                    // is data): give it back empty rather than stall the queue on it.
                    Ok(None) if pkt.data_slice().is_none_or(|data| data.is_empty()) => Some(0),
                    Ok(filled) => filled,
                    Err(err) => {
                        log_error(errors_seen, &err);
                        Some(0)
                    }
                },
                Err(err) => {
                    log_error(errors_seen, &VsockError::Chain(err));
                    Some(0)
                }
            };
            let Some(used_len) = used_len else {
                // Nothing to send after all: leave the buffer to the guest.
                active.rx.go_to_previous_position();
                break;
            };
            if let Err(err) = active.rx.add_used(&active.mem, head, used_len) {
                log_error(errors_seen, &VsockError::Queue(err));
            }
            used_any = true;
        }
        if used_any {
            notify_guest(&mut active.rx, &active.mem, &*active.interrupt, errors_seen);
        }
    }

    /// Times out connections whose deadline has passed.
    pub(super) fn process_deadlines(&mut self, now: Instant) {
        self.muxer.expire(now);
        // The timer fired (or may have): it must be set again even if the deadline is the same.
        self.armed_deadline = None;
        self.arm_timer(now, true);
    }

    /// Sets the timer to the earliest connection deadline, if it changed.
    pub(super) fn arm_timer(&mut self, now: Instant, force: bool) {
        let next = self.muxer.next_deadline();
        if next == self.armed_deadline && !force {
            return;
        }
        let result = match next {
            // A zero duration would disarm the timer: fire in a millisecond instead.
            Some(deadline) => self.timer.reset(
                deadline
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
                None,
            ),
            None => self.timer.clear(),
        };
        match result {
            Ok(()) => self.armed_deadline = next,
            Err(err) => log_error(
                &mut self.errors_seen,
                &VsockError::EventLoop(io::Error::from(err)),
            ),
        }
    }

    /// Applies the connections' epoll interests through `watcher`.
    pub(super) fn sync_interests(&mut self, watcher: &mut dyn FdWatcher) {
        for err in self.muxer.sync_interests(watcher) {
            log_error(&mut self.errors_seen, &err);
        }
    }

    /// The event signalled when the driver notifies queue `index`.
    pub(super) fn queue_event(&self, index: usize) -> Option<&EventFd> {
        self.queue_events.get(index)
    }
}

/// Interrupts the guest for `queue` if it wants to be told.
fn notify_guest(
    queue: &mut Queue,
    mem: &GuestMemory,
    interrupt: &dyn Interrupt,
    errors_seen: &mut u32,
) {
    if let Err(err) = super::super::notify_used(queue, mem, interrupt) {
        log_error(errors_seen, &VsockError::Interrupt(err));
    }
}

fn log_error(errors_seen: &mut u32, err: &VsockError) {
    super::super::log_guest_error("vsock", errors_seen, err);
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_MAX_SIZES
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.device_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        let config = self.guest_cid.to_le_bytes();
        super::super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The config space is read-only.
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
        // In queue index order: RX_QUEUE, TX_QUEUE, EVENT_QUEUE.
        let [rx, tx, event] = activation_queues::<NUM_QUEUES>(self.active.is_some(), queues)?;
        self.active = Some(ActiveQueues {
            mem,
            interrupt,
            rx,
            tx,
            _event: event,
        });
        // Let the event loop send what waited for the queues (e.g. host connects).
        self.wake.write(1)?;
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
        self.muxer.reset();
        // The event loop closes the dropped connections' sockets.
        if let Err(err) = self.wake.write(1) {
            log_error(&mut self.errors_seen, &VsockError::EventLoop(err));
        }
        true
    }
}

/// Reads one tx packet: its header, then `len` payload bytes into `buf`. Refuses chains
/// with write-only descriptors, a payload over [`MAX_PKT_PAYLOAD`], or fewer readable bytes
/// than the header claims.
fn read_tx_packet(
    mem: &GuestMemory,
    chain: virtio_queue::DescriptorChain<&GuestMemory>,
    buf: &mut [u8],
) -> Result<(VsockHeader, usize), VsockError> {
    use std::io::Read;
    let bad = |m: &str| VsockError::TxChain(m.to_owned());
    if chain.clone().any(|d| d.is_write_only()) {
        return Err(bad("write-only descriptor in a tx chain"));
    }
    let mut reader = chain
        .reader(mem)
        .map_err(|e| VsockError::TxChain(e.to_string()))?;
    let mut raw = [0u8; super::PKT_HEADER_SIZE];
    reader
        .read_exact(&mut raw)
        .map_err(|_| bad("shorter than a packet header"))?;
    let hdr = VsockHeader::from_bytes(&raw);
    let len = hdr.len as usize;
    if hdr.len > MAX_PKT_PAYLOAD || len > buf.len() {
        return Err(VsockError::TxChain(format!(
            "payload of {len} bytes is too large"
        )));
    }
    if reader.available_bytes() < len {
        return Err(bad("the header claims more payload than the chain holds"));
    }
    let payload = buf.get_mut(..len).ok_or_else(|| bad("payload buffer"))?;
    reader
        .read_exact(payload)
        .map_err(|_| bad("payload outside guest memory"))?;
    Ok((hdr, len))
}
