//! Tap to guest: one frame (header included) read from the tap, its header checked against
//! what the guest accepted, then scattered into the guest's rx chains: one chain, or with
//! mergeable rx buffers as many as it needs, `num_buffers` in its header saying how many.
//! Chains may go through an indirect table: the ring holds their heads all the same, and the
//! queue's position (which the device rewinds, below) counts heads, not descriptors.
//!
//! A frame is only read while the guest has a usable chain (bad chains at the front of the
//! queue are returned unused first, without costing a frame). Once read, the frame is the
//! device's *pending* frame until it is placed: if the queue runs out of chains midway, the
//! chains taken so far are put back (the queue's position rewound; what was written into
//! them does not count until they are used) and the frame waits, whole, for the guest to add
//! buffers. It goes first when it does; meanwhile the device is *starved*: the tap is not
//! watched and nothing more is read. Without mergeable buffers, a frame larger than its chain
//! is dropped and the chain returned unused; with them, a frame larger than the whole queue
//! can hold is dropped.
//!
//! While it has buffers the device does not want to hear about new ones (notifications off;
//! with event indexes that is the default); when it starves it asks for the next one
//! ([`rearm_notification`]), and looks once more before it sleeps.

use std::io;

use vm_memory::{Bytes, GuestMemory as _};

use super::backend::Tap;
use super::chain::Chain;
use super::device::{Net, log_error, notify_guest, rearm_notification};
use super::handle::Counters;
use super::header::{Negotiated, check_rx, set_num_buffers};
use super::{MAX_RX_FRAMES_PER_EVENT, NetError, RX_QUEUE, VNET_HDR_LEN};
use crate::vmm::GuestMemory;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

/// One chain a frame is being spread over: its head, and the bytes of the frame written into
/// it, or `None` for a bad chain met after the frame's first (returned unused with the frame).
pub(super) type ChainUse = (u16, Option<u32>);

/// What became of the pending frame.
enum Placement {
    /// Delivered, or dropped because it can never fit: the frame is gone.
    Done,
    /// Too few chains for now: the frame stays pending. `seen` is where the available ring
    /// ended, the queue's position is back where the frame started.
    NoRoom { seen: u16 },
}

/// What one read of the tap gave.
enum TapRead {
    /// A frame of this length, header included and checked: now the pending frame.
    Frame(usize),
    /// A datagram that is no frame, or a frame the guest cannot take: dropped.
    Skipped,
    /// Nothing to read now (or the tap broke, or was shut down).
    Nothing,
}

/// The guest memory and rx queue one call works on, and where it reports.
struct RxQueue<'a> {
    mem: &'a GuestMemory,
    queue: &'a mut Queue,
    counters: &'a Counters,
    errors_seen: &'a mut u32,
    /// The driver accepted indirect descriptors.
    indirect: bool,
}

impl Net {
    /// Moves frames from the tap to the guest's rx buffers, the pending frame first, at most
    /// [`MAX_RX_FRAMES_PER_EVENT`] per call (the tap stays watched: a level-triggered epoll
    /// calls again), then interrupts the guest if it wants to be told. Does nothing before
    /// activation; reads nothing without a tap, or once the tap failed.
    pub(super) fn process_rx(&mut self) {
        let Self {
            active,
            backend,
            shared,
            queue_events,
            rx_buf,
            rx_pending,
            rx_chains,
            rx_starved,
            negotiated,
            errors_seen,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return;
        };
        let mut tap = backend.as_mut().filter(|tap| !tap.failed());
        if tap.is_none() && rx_pending.is_none() {
            return;
        }
        let mut rx = RxQueue {
            mem: &active.mem,
            queue: &mut active.rx,
            counters: &shared.counters,
            errors_seen,
            indirect: negotiated.indirect_desc,
        };
        let used_before = rx.queue.next_used();
        // The device is reading: the driver need not say it added buffers until it runs out.
        rx.disable_notification();
        for _ in 0..MAX_RX_FRAMES_PER_EVENT {
            let len = match *rx_pending {
                Some(len) => len,
                None => {
                    let Some(tap) = tap.as_deref_mut() else {
                        break;
                    };
                    if !rx.return_bad_chains(negotiated.mergeable_rx) {
                        // Out of buffers: ask for a notification, unless some just came.
                        let seen = rx.queue.next_avail();
                        if rx.rearm(seen) {
                            continue;
                        }
                        *rx_starved = true;
                        break;
                    }
                    match read_frame(tap, rx_buf, negotiated, rx.counters, rx.errors_seen) {
                        TapRead::Frame(len) => {
                            *rx_pending = Some(len);
                            len
                        }
                        TapRead::Skipped => continue,
                        TapRead::Nothing => break,
                    }
                }
            };
            let frame = rx_buf.get_mut(..len).unwrap_or_default();
            let placement = if negotiated.mergeable_rx {
                rx.place_merged(frame, rx_chains)
            } else {
                rx.place_whole(frame)
            };
            match placement {
                Placement::Done => *rx_pending = None,
                Placement::NoRoom { seen } => {
                    if rx.rearm(seen) {
                        continue;
                    }
                    *rx_starved = true;
                    break;
                }
            }
        }
        if rx_pending.is_some()
            && !*rx_starved
            && let Some(event) = queue_events.get(RX_QUEUE)
            && let Err(err) = event.write(1)
        {
            // Out of turns with a frame still pending and buffers to put it in: come back
            // through the queue event (the tap may have nothing more to wake us up).
            log_error(rx.errors_seen, &NetError::EventLoop(err));
        }
        if rx.queue.next_used() != used_before {
            notify_guest(rx.queue, rx.mem, &*active.interrupt, rx.errors_seen);
        }
    }
}

/// Reads one frame from `tap` into `buf` and checks its header against what the guest
/// accepted (`negotiated`).
fn read_frame(
    tap: &mut Tap,
    buf: &mut [u8],
    negotiated: &Negotiated,
    counters: &Counters,
    errors_seen: &mut u32,
) -> TapRead {
    match tap.read_frame(buf) {
        Ok(0) => {
            // End of file (a socket shut down; a tap never reads 0 bytes).
            tap.mark_failed();
            let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
            log_error(errors_seen, &NetError::Backend(eof));
            TapRead::Nothing
        }
        Ok(len) => {
            // Shorter than a header: not a frame (the tap always sends the header).
            let Some(hdr) = buf
                .first_chunk_mut::<VNET_HDR_LEN>()
                .filter(|_| len >= VNET_HDR_LEN)
            else {
                Counters::add(&counters.rx_dropped, 1);
                return TapRead::Skipped;
            };
            match check_rx(hdr, negotiated) {
                Ok(()) => TapRead::Frame(len),
                Err(err) => {
                    Counters::add(&counters.rx_dropped, 1);
                    Counters::add(&counters.rx_bad_header, 1);
                    log_error(errors_seen, &NetError::RxHeader(err));
                    TapRead::Skipped
                }
            }
        }
        Err(err) => {
            if err.kind() != io::ErrorKind::WouldBlock {
                tap.mark_failed();
                log_error(errors_seen, &NetError::Backend(err));
            }
            TapRead::Nothing
        }
    }
}

impl RxQueue<'_> {
    fn disable_notification(&mut self) {
        if let Err(err) = self.queue.disable_notification(self.mem) {
            log_error(self.errors_seen, &NetError::Queue(err));
        }
    }

    /// Asks for a notification when the driver adds chains past `seen`; true if it already
    /// has (notifications are then turned off again: the device goes on reading).
    fn rearm(&mut self, seen: u16) -> bool {
        let more = rearm_notification(self.queue, self.mem, seen, self.errors_seen);
        if more {
            self.disable_notification();
        }
        more
    }

    /// Takes the next available chain, if any.
    fn pop(&mut self) -> Option<Chain> {
        Chain::pop(self.queue, self.mem, self.indirect)
    }

    /// Returns `head` to the guest with used length `len`.
    fn add_used(&mut self, head: u16, len: u32) {
        if let Err(err) = self.queue.add_used(self.mem, head, len) {
            log_error(self.errors_seen, &NetError::Queue(err));
        }
    }

    /// Returns a bad chain unused, counted and logged.
    fn return_bad(&mut self, head: u16, err: &NetError) {
        Counters::add(&self.counters.bad_chains, 1);
        log_error(self.errors_seen, err);
        self.add_used(head, 0);
    }

    /// Returns the bad chains at the front of the queue, a queue's worth at most; true if a
    /// usable one follows (it is left available).
    fn return_bad_chains(&mut self, mergeable: bool) -> bool {
        for _ in 0..self.queue.size() {
            let Some(chain) = self.pop() else {
                return false;
            };
            let head = chain.head();
            match usable_capacity(self.mem, &chain, mergeable) {
                Ok(_) => {
                    self.queue.go_to_previous_position();
                    return true;
                }
                Err(err) => self.return_bad(head, &err),
            }
        }
        false
    }

    /// Places `frame` (header included, `num_buffers` set here) in one chain: bad chains
    /// before it are returned unused (a queue's worth at most per call), and a frame larger
    /// than the chain is dropped (the chain returned unused).
    fn place_whole(&mut self, frame: &mut [u8]) -> Placement {
        if let Some(hdr) = frame.first_chunk_mut::<VNET_HDR_LEN>() {
            set_num_buffers(hdr, 1);
        }
        for _ in 0..self.queue.size() {
            let Some(chain) = self.pop() else {
                break;
            };
            let head = chain.head();
            let used_len = match rx_capacity(self.mem, &chain) {
                Err(err) => {
                    self.return_bad(head, &err);
                    continue;
                }
                Ok(capacity) if capacity < frame.len() => {
                    Counters::add(&self.counters.rx_dropped, 1);
                    0
                }
                Ok(_) => match write_rx_frame(self.mem, &chain, frame) {
                    Ok(()) => {
                        self.count_delivered(frame.len());
                        // At most MAX_BUF_LEN.
                        u32::try_from(frame.len()).unwrap_or(0)
                    }
                    Err(err) => {
                        Counters::add(&self.counters.rx_dropped, 1);
                        Counters::add(&self.counters.bad_chains, 1);
                        log_error(self.errors_seen, &err);
                        0
                    }
                },
            };
            self.add_used(head, used_len);
            return Placement::Done;
        }
        let seen = self.queue.next_avail();
        Placement::NoRoom { seen }
    }

    /// Spreads `frame` (header included) over as many chains as it needs, each filled in
    /// turn, and sets `num_buffers` to their number. Bad chains met before the first are
    /// returned at once; bad chains met after it are returned unused just before the frame's
    /// (whose used entries must follow each other). Too few chains: nothing is used, the
    /// queue's position goes back to where the frame started. A frame a queue's worth of
    /// chains cannot hold is dropped. `chains` holds the chains taken (at most a queue's
    /// worth).
    fn place_merged(&mut self, frame: &mut [u8], chains: &mut Vec<ChainUse>) -> Placement {
        chains.clear();
        let Some(hdr) = frame.first_chunk_mut::<VNET_HDR_LEN>() else {
            return Placement::Done;
        };
        set_num_buffers(hdr, 1);
        let mut start = self.queue.next_avail();
        // The chain holding the header, to correct `num_buffers` in once it is known.
        let mut first = None;
        let mut num_buffers = 0u16;
        let mut written = 0;
        let mut popped = 0;
        while written < frame.len() {
            if popped == self.queue.size() {
                // The queue never holds more at once: waiting would wait forever.
                self.queue.set_next_avail(start);
                Counters::add(&self.counters.rx_dropped, 1);
                log_error(self.errors_seen, &NetError::RxQueueTooSmall(frame.len()));
                return Placement::Done;
            }
            let Some(chain) = self.pop() else {
                let seen = self.queue.next_avail();
                self.queue.set_next_avail(start);
                return Placement::NoRoom { seen };
            };
            popped += 1;
            let head = chain.head();
            let filled = usable_capacity(self.mem, &chain, true).and_then(|capacity| {
                let end = written.saturating_add(capacity).min(frame.len());
                let part = frame.get(written..end).unwrap_or_default();
                write_rx_frame(self.mem, &chain, part).map(|()| part.len())
            });
            match filled {
                Ok(len) => {
                    first.get_or_insert(chain);
                    num_buffers = num_buffers.saturating_add(1);
                    // A chain takes at most MAX_BUF_LEN bytes.
                    chains.push((head, Some(u32::try_from(len).unwrap_or(0))));
                    written += len;
                }
                Err(err) if first.is_none() => {
                    // Nothing taken yet: give it back now, and start after it.
                    self.return_bad(head, &err);
                    start = self.queue.next_avail();
                }
                Err(err) => {
                    log_error(self.errors_seen, &err);
                    chains.push((head, None));
                }
            }
        }
        let mut delivered = true;
        if num_buffers > 1 {
            if let Some(hdr) = frame.first_chunk_mut::<VNET_HDR_LEN>() {
                set_num_buffers(hdr, num_buffers);
            }
            let hdr = frame.get(..VNET_HDR_LEN).unwrap_or_default();
            if let Some(first) = first
                && let Err(err) = write_rx_frame(self.mem, &first, hdr)
            {
                // The guest changed the chain under us: the frame is lost.
                Counters::add(&self.counters.rx_dropped, 1);
                Counters::add(&self.counters.bad_chains, 1);
                log_error(self.errors_seen, &err);
                delivered = false;
            }
        }
        for &(head, _) in chains.iter().filter(|(_, used)| used.is_none()) {
            Counters::add(&self.counters.bad_chains, 1);
            self.add_used(head, 0);
        }
        for &(head, used) in chains.iter() {
            if let Some(len) = used {
                self.add_used(head, if delivered { len } else { 0 });
            }
        }
        if delivered {
            self.count_delivered(frame.len());
        }
        Placement::Done
    }

    fn count_delivered(&self, len: usize) {
        Counters::add(&self.counters.rx_frames, 1);
        Counters::add(
            &self.counters.rx_bytes,
            len.saturating_sub(VNET_HDR_LEN) as u64,
        );
    }
}

/// What the rx chain `chain` can take ([`rx_capacity`]); with mergeable buffers at least a
/// header's worth (virtio v1.2 §5.1.6.3.1), or it is refused.
fn usable_capacity(mem: &GuestMemory, chain: &Chain, mergeable: bool) -> Result<usize, NetError> {
    let capacity = rx_capacity(mem, chain)?;
    if mergeable && capacity < VNET_HDR_LEN {
        return Err(NetError::RxChainTooShort(capacity));
    }
    Ok(capacity)
}

/// The bytes the rx chain `chain` can take: the sum of its descriptors, which must all be
/// device-writable and inside guest memory, the chain walked to its end
/// ([`ChainError`](super::ChainError)).
pub(super) fn rx_capacity(mem: &GuestMemory, chain: &Chain) -> Result<usize, NetError> {
    let mut capacity = 0usize;
    for desc in chain.descriptors(mem) {
        let desc = desc?;
        if !desc.is_write_only() {
            return Err(NetError::ReadOnlyRx);
        }
        let len = usize::try_from(desc.len()).map_err(|_| NetError::OutOfMemory)?;
        if !mem.check_range(desc.addr(), len) {
            return Err(NetError::OutOfMemory);
        }
        capacity = capacity.saturating_add(len);
    }
    Ok(capacity)
}

/// Scatters `frame` over the descriptors of `chain`, in order, from its start. Checked again
/// while writing: the guest may have changed the chain since [`rx_capacity`] looked at it.
/// The walk stops once the frame is written: what follows was checked by [`rx_capacity`],
/// and the guest alone would suffer from its change.
pub(super) fn write_rx_frame(
    mem: &GuestMemory,
    chain: &Chain,
    frame: &[u8],
) -> Result<(), NetError> {
    let mut rest = frame;
    for desc in chain.descriptors(mem) {
        if rest.is_empty() {
            break;
        }
        let desc = desc?;
        if !desc.is_write_only() {
            return Err(NetError::ReadOnlyRx);
        }
        let take = usize::try_from(desc.len())
            .unwrap_or(usize::MAX)
            .min(rest.len());
        let (part, later) = rest.split_at(take);
        mem.write_slice(part, desc.addr())?;
        rest = later;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(NetError::RxChainChanged)
    }
}
