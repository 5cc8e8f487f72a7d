//! Guest to tap: every chain of the tx queue (in the ring or through an indirect table)
//! gathered into one frame (header included), checked, and written to the tap in one `write`.
//! Nothing is written to tx buffers: every chain goes back with used length 0, sent or
//! dropped.
//!
//! While it drains the queue the device asks the driver not to notify it (with event indexes
//! that is the default: the driver notifies only when it makes available the entry the
//! device named last); once the queue looks empty it asks again, then looks once more, so
//! that a frame queued in between is not left waiting for a notification that never comes.

use vm_memory::Bytes;

use super::backend::Tap;
use super::chain::Chain;
use super::device::{Net, log_error, notify_guest, rearm_notification};
use super::handle::Counters;
use super::header::{Negotiated, check_tx};
use super::{MAX_TX_CHAINS_PER_EVENT, NetError, TX_QUEUE, VNET_HDR_LEN};
use crate::vmm::GuestMemory;
use virtio_queue::QueueT;

impl Net {
    /// Sends every frame the guest queued on tx (at most [`MAX_TX_CHAINS_PER_EVENT`] per
    /// call), with the driver's notifications off meanwhile, then interrupts the guest if it
    /// wants to be told. Does nothing before activation.
    pub(super) fn process_tx(&mut self) {
        let Self {
            active,
            backend,
            shared,
            queue_events,
            tx_buf,
            negotiated,
            errors_seen,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return;
        };
        let counters = &shared.counters;
        let mem = &active.mem;
        let mut used = 0;
        'drain: loop {
            if let Err(err) = active.tx.disable_notification(mem) {
                log_error(errors_seen, &NetError::Queue(err));
            }
            while let Some(chain) = Chain::pop(&mut active.tx, mem, negotiated.indirect_desc) {
                let head = chain.head();
                match read_tx_frame(mem, &chain, tx_buf, negotiated) {
                    Ok(len) => send_frame(
                        backend.as_mut(),
                        tx_buf.get(..len).unwrap_or_default(),
                        counters,
                        errors_seen,
                    ),
                    Err(err) => {
                        Counters::add(&counters.tx_dropped, 1);
                        let counter = match err {
                            NetError::TxHeader(_) => &counters.tx_bad_header,
                            _ => &counters.bad_chains,
                        };
                        Counters::add(counter, 1);
                        log_error(errors_seen, &err);
                    }
                }
                if let Err(err) = active.tx.add_used(mem, head, 0) {
                    log_error(errors_seen, &NetError::Queue(err));
                }
                used += 1;
                if used == MAX_TX_CHAINS_PER_EVENT {
                    // A guest refilling the queue as fast as we drain it must not starve the
                    // rest of the event loop: come back through the queue event (notifications
                    // stay off until then).
                    if let Some(event) = queue_events.get(TX_QUEUE)
                        && let Err(err) = event.write(1)
                    {
                        log_error(errors_seen, &NetError::EventLoop(err));
                    }
                    break 'drain;
                }
            }
            // Ask to be notified again, then look again: a frame queued before the driver saw
            // the request would otherwise wait for the next one.
            let seen = active.tx.next_avail();
            if !rearm_notification(&mut active.tx, mem, seen, errors_seen) {
                break;
            }
        }
        if used > 0 {
            notify_guest(&mut active.tx, &active.mem, &*active.interrupt, errors_seen);
        }
    }
}

/// Writes one checked frame to the tap; without a tap, or when the tap cannot take it now,
/// the frame is dropped (never retried: the guest's TCP retransmits, UDP may lose).
fn send_frame(tap: Option<&mut Tap>, frame: &[u8], counters: &Counters, errors_seen: &mut u32) {
    let Some(tap) = tap else {
        Counters::add(&counters.tx_dropped, 1);
        return;
    };
    match tap.write_frame(frame) {
        Ok(written) if written == frame.len() => {
            Counters::add(&counters.tx_frames, 1);
            Counters::add(
                &counters.tx_bytes,
                frame.len().saturating_sub(VNET_HDR_LEN) as u64,
            );
        }
        Ok(_) => Counters::add(&counters.tx_dropped, 1),
        Err(err) => {
            Counters::add(&counters.tx_dropped, 1);
            // A full tap is back-pressure, not an error worth a line.
            let full = err.kind() == std::io::ErrorKind::WouldBlock
                || err.raw_os_error() == Some(libc::ENOBUFS);
            if !full {
                log_error(errors_seen, &NetError::Backend(err));
            }
        }
    }
}

/// Gathers the tx chain `chain` into `buf` and checks its header; returns the length of
/// header plus frame. Refuses chains that cannot be walked to their end
/// ([`ChainError`](super::ChainError)), with a device-writable descriptor, longer than `buf`
/// (sized [`MAX_BUF_LEN`](super::MAX_BUF_LEN)) or shorter than the header, and frames whose
/// header asks for what was not `negotiated` ([`check_tx`]).
pub(super) fn read_tx_frame(
    mem: &GuestMemory,
    chain: &Chain,
    buf: &mut [u8],
    negotiated: &Negotiated,
) -> Result<usize, NetError> {
    let mut len = 0usize;
    for desc in chain.descriptors(mem) {
        let desc = desc?;
        if desc.is_write_only() {
            return Err(NetError::WriteOnlyTx);
        }
        let end = usize::try_from(desc.len())
            .ok()
            .and_then(|desc_len| len.checked_add(desc_len))
            .ok_or(NetError::TxTooLarge)?;
        let part = buf.get_mut(len..end).ok_or(NetError::TxTooLarge)?;
        mem.read_slice(part, desc.addr())?;
        len = end;
    }
    // The header, already copied out of guest memory: the guest cannot change it any more.
    let hdr = buf
        .first_chunk::<VNET_HDR_LEN>()
        .filter(|_| len >= VNET_HDR_LEN)
        .ok_or(NetError::TxTooShort(len))?;
    check_tx(hdr, len - VNET_HDR_LEN, negotiated).map_err(NetError::TxHeader)?;
    Ok(len)
}
