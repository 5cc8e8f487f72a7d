//! Tap to guest: for each rx chain the guest made available, one frame (header included) read
//! from the tap and scattered into the chain's device-writable descriptors.
//!
//! A frame is only read once a chain is there to take it, and the chain is checked first (a
//! bad chain is returned unused without costing a frame). A frame larger than its chain is
//! dropped and the chain returned unused. When the queue runs dry the device marks itself
//! starved, and the event handler stops watching the tap until the guest notifies the rx queue.

use std::io;

use vm_memory::{Bytes, GuestMemory as _};

use super::device::{Net, log_error, notify_guest};
use super::handle::Counters;
use super::{MAX_RX_FRAMES_PER_EVENT, NetError, VNET_HDR_LEN};
use crate::vmm::GuestMemory;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};

/// Where `num_buffers` sits in `virtio_net_hdr_v1` (le16).
const NUM_BUFFERS_OFFSET: usize = 10;

impl Net {
    /// Moves frames from the tap to the guest's rx buffers, at most
    /// [`MAX_RX_FRAMES_PER_EVENT`] chains per call (the tap stays watched: a level-triggered
    /// epoll calls again), then interrupts the guest if it wants to be told. Does nothing
    /// before activation, without a tap, or once the tap failed.
    pub(super) fn process_rx(&mut self) {
        let Self {
            active,
            backend,
            shared,
            rx_buf,
            rx_starved,
            errors_seen,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return;
        };
        let Some(tap) = backend.as_mut().filter(|tap| !tap.failed()) else {
            return;
        };
        let counters = &shared.counters;
        let mem = &active.mem;
        let mut used_any = false;
        for _ in 0..MAX_RX_FRAMES_PER_EVENT {
            let Some(chain) = active.rx.pop_descriptor_chain(mem) else {
                *rx_starved = true;
                break;
            };
            let head = chain.head_index();
            let used_len = match rx_capacity(mem, chain.clone()) {
                Err(err) => {
                    Counters::add(&counters.bad_chains, 1);
                    log_error(errors_seen, &err);
                    0
                }
                Ok(capacity) => match tap.read_frame(rx_buf) {
                    Ok(0) => {
                        // End of file (a socket shut down; a tap never reads 0 bytes).
                        active.rx.go_to_previous_position();
                        tap.mark_failed();
                        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                        log_error(errors_seen, &NetError::Backend(eof));
                        break;
                    }
                    Ok(len) if len < VNET_HDR_LEN => {
                        // Not a frame (the tap always sends the header): skip it, keep the
                        // chain for the next one.
                        Counters::add(&counters.rx_dropped, 1);
                        active.rx.go_to_previous_position();
                        continue;
                    }
                    Ok(len) if len > capacity => {
                        Counters::add(&counters.rx_dropped, 1);
                        0
                    }
                    Ok(len) => deliver(mem, chain, rx_buf, len, counters, errors_seen),
                    Err(err) => {
                        // Nothing to read (or the tap broke): the chain stays the guest's.
                        active.rx.go_to_previous_position();
                        if err.kind() != io::ErrorKind::WouldBlock {
                            tap.mark_failed();
                            log_error(errors_seen, &NetError::Backend(err));
                        }
                        break;
                    }
                },
            };
            if let Err(err) = active.rx.add_used(mem, head, used_len) {
                log_error(errors_seen, &NetError::Queue(err));
            }
            used_any = true;
        }
        if used_any {
            notify_guest(&mut active.rx, mem, &*active.interrupt, errors_seen);
        }
    }
}

/// Writes the frame at the start of `buf` (`len` bytes, header included, known to fit) into
/// `chain`; returns the used length (0 if the chain turned out not to hold it).
fn deliver(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    buf: &mut [u8],
    len: usize,
    counters: &Counters,
    errors_seen: &mut u32,
) -> u32 {
    // MRG_RXBUF is not negotiated: every frame is in exactly one buffer.
    if let Some(num_buffers) = buf.get_mut(NUM_BUFFERS_OFFSET..VNET_HDR_LEN) {
        num_buffers.copy_from_slice(&1u16.to_le_bytes());
    }
    let frame = buf.get(..len).unwrap_or_default();
    match write_rx_frame(mem, chain, frame) {
        Ok(()) => {
            Counters::add(&counters.rx_frames, 1);
            Counters::add(&counters.rx_bytes, len.saturating_sub(VNET_HDR_LEN) as u64);
            // `len` is at most MAX_BUF_LEN.
            u32::try_from(len).unwrap_or(0)
        }
        Err(err) => {
            Counters::add(&counters.rx_dropped, 1);
            Counters::add(&counters.bad_chains, 1);
            log_error(errors_seen, &err);
            0
        }
    }
}

/// The bytes the rx chain `chain` can take: the sum of its descriptors, which must all be
/// device-writable and inside guest memory.
pub(super) fn rx_capacity(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> Result<usize, NetError> {
    let mut capacity = 0usize;
    for desc in chain {
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

/// Scatters `frame` over the descriptors of `chain`, in order. Checked again while writing:
/// the guest may have changed the chain since [`rx_capacity`] looked at it.
pub(super) fn write_rx_frame(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    frame: &[u8],
) -> Result<(), NetError> {
    let mut rest = frame;
    for desc in chain {
        if rest.is_empty() {
            break;
        }
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
