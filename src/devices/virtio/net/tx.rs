//! Guest to tap: every chain of the tx queue gathered into one frame (header included),
//! checked, and written to the tap in one `write`. Nothing is written to tx buffers: every
//! chain goes back with used length 0, sent or dropped.

use vm_memory::Bytes;

use super::backend::Tap;
use super::device::{Net, log_error, notify_guest};
use super::handle::Counters;
use super::{MAX_TX_CHAINS_PER_EVENT, NetError, TX_QUEUE, VNET_HDR_LEN};
use crate::vmm::GuestMemory;
use virtio_bindings::virtio_net::VIRTIO_NET_HDR_GSO_NONE;
use virtio_queue::{DescriptorChain, QueueT};

impl Net {
    /// Sends every frame the guest queued on tx (at most [`MAX_TX_CHAINS_PER_EVENT`] per
    /// call), then interrupts the guest if it wants to be told. Does nothing before
    /// activation.
    pub(super) fn process_tx(&mut self) {
        let Self {
            active,
            backend,
            shared,
            queue_events,
            tx_buf,
            errors_seen,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return;
        };
        let counters = &shared.counters;
        let mut used = 0;
        while let Some(chain) = active.tx.pop_descriptor_chain(&active.mem) {
            let head = chain.head_index();
            match read_tx_frame(&active.mem, chain, tx_buf) {
                Ok(len) => send_frame(
                    backend.as_mut(),
                    tx_buf.get(..len).unwrap_or_default(),
                    counters,
                    errors_seen,
                ),
                Err(err) => {
                    Counters::add(&counters.tx_dropped, 1);
                    Counters::add(&counters.bad_chains, 1);
                    log_error(errors_seen, &err);
                }
            }
            if let Err(err) = active.tx.add_used(&active.mem, head, 0) {
                log_error(errors_seen, &NetError::Queue(err));
            }
            used += 1;
            if used == MAX_TX_CHAINS_PER_EVENT {
                // A guest refilling the queue as fast as we drain it must not starve the rest
                // of the event loop: come back through the queue event.
                if let Some(event) = queue_events.get(TX_QUEUE)
                    && let Err(err) = event.write(1)
                {
                    log_error(errors_seen, &NetError::EventLoop(err));
                }
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
/// header plus frame. Refuses chains with a device-writable descriptor, longer than `buf`
/// (sized [`MAX_BUF_LEN`](super::MAX_BUF_LEN)), shorter than the header, or whose header
/// asks for an offload (none is negotiated).
pub(super) fn read_tx_frame(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    buf: &mut [u8],
) -> Result<usize, NetError> {
    let mut len = 0usize;
    for desc in chain {
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
    if len < VNET_HDR_LEN {
        return Err(NetError::TxTooShort(len));
    }
    check_tx_header(buf.get(..VNET_HDR_LEN).unwrap_or_default())?;
    Ok(len)
}

/// Checks a tx `virtio_net_hdr_v1` (already copied out of guest memory): with no offload
/// negotiated, `flags` must be 0 and `gso_type` `VIRTIO_NET_HDR_GSO_NONE`. The other fields
/// only mean something with those set; the tap ignores them.
fn check_tx_header(hdr: &[u8]) -> Result<(), NetError> {
    let flags = hdr.first().copied().unwrap_or(0);
    let gso_type = hdr.get(1).copied().unwrap_or(0);
    if flags != 0 || u32::from(gso_type) != VIRTIO_NET_HDR_GSO_NONE {
        return Err(NetError::Offload { flags, gso_type });
    }
    Ok(())
}
