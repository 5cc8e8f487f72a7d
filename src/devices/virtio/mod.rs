//! virtio devices (virtio 1.x) and their mmio transport.
//!
//! A device implements [`VirtioDevice`]: its features, config space, queue sizes, and what to
//! do once the driver has set it up ([`VirtioDevice::activate`]). The device creates one
//! [`EventFd`] per queue at construction: the VMM registers each as a KVM ioeventfd on the
//! transport's QueueNotify register, and the device's event handler (on the event-loop
//! thread) waits on them. Devices signal the guest through an [`Interrupt`].
//!
//! Everything a device reads from a queue comes from the guest and is hostile: descriptor
//! addresses, lengths and chain shapes are checked, and a bad chain fails that request only.

pub mod fs;
pub mod mmio;
pub mod net;
#[cfg(test)]
mod test_utils;
pub mod vsock;
mod watcher;

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::vmm::GuestMemory;

/// Feature bit: the device complies with virtio 1.x (required for the mmio transport v2).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Device type of virtio-net.
pub const TYPE_NET: u32 = 1;
/// Device type of virtio-vsock.
pub const TYPE_VSOCK: u32 = 19;
/// Device type of virtio-fs.
pub const TYPE_FS: u32 = 26;

/// Interrupt status bit: a used buffer was added to a queue.
pub const INT_VRING: u32 = 0x1;
/// Interrupt status bit: the configuration space changed.
pub const INT_CONFIG: u32 = 0x2;

/// Copies `data.len()` bytes of a device's configuration space `config` from `offset`;
/// bytes past its end (or any offset that overflows) read as 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (at, byte) in data.iter_mut().enumerate() {
        *byte = u64::try_from(at)
            .ok()
            .and_then(|at| offset.checked_add(at))
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// How many errors a device logs before it goes quiet.
pub const MAX_LOGGED_ERRORS: u32 = 16;

/// Logs one of a device's errors (most are the guest's doing), the first
/// [`MAX_LOGGED_ERRORS`] only: a hostile guest cannot flood the host's log.
pub fn log_guest_error(device: &str, errors_seen: &mut u32, err: &dyn std::fmt::Display) {
    *errors_seen = errors_seen.saturating_add(1);
    if *errors_seen <= MAX_LOGGED_ERRORS {
        eprintln!("{device}: {err}");
        if *errors_seen == MAX_LOGGED_ERRORS {
            eprintln!("{device}: further errors are not logged");
        }
    }
}

/// How a device raises its interrupt in the guest.
pub trait Interrupt: Send + Sync {
    /// Sets the `status` bits ([`INT_VRING`], [`INT_CONFIG`]) and signals the guest.
    fn trigger(&self, status: u32) -> std::io::Result<()>;

    /// An eventfd whose every write interrupts the guest for used buffers without the VMM
    /// (KVM's irqfd), for a kernel worker such as vhost-net to signal itself; from then on
    /// the transport reports used buffers ([`INT_VRING`]) in its status at every interrupt.
    /// None where there is no such eventfd (the device then relays with
    /// [`Interrupt::trigger`]).
    fn direct_eventfd(&self) -> Option<&vmm_sys_util::eventfd::EventFd> {
        None
    }
}

/// Interrupts the guest for `queue`'s used ring unless the driver asked not to be told (an
/// unreadable used-event index errs on the side of an interrupt).
pub fn notify_used(
    queue: &mut Queue,
    mem: &GuestMemory,
    interrupt: &dyn Interrupt,
) -> std::io::Result<()> {
    if queue.needs_notification(mem).unwrap_or(true) {
        interrupt.trigger(INT_VRING)?;
    }
    Ok(())
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not set up the queues the device needs.
    #[error("expected {expected} queues, the driver set up {got}")]
    QueueCount {
        /// Queues the device needs.
        expected: usize,
        /// Queues the driver made ready.
        got: usize,
    },
    /// The device's own resources failed (an eventfd, a socket).
    #[error("device set-up failed: {0}")]
    Io(#[from] std::io::Error),
    /// The device is already active.
    #[error("the device is already active")]
    AlreadyActive,
}

/// The queues a [`VirtioDevice::activate`] call brings, as the `N` the device needs (in queue
/// index order); `active` says whether the device already is.
pub fn activation_queues<const N: usize>(
    active: bool,
    queues: Vec<Queue>,
) -> Result<[Queue; N], ActivateError> {
    if active {
        return Err(ActivateError::AlreadyActive);
    }
    let got = queues.len();
    <[Queue; N]>::try_from(queues).map_err(|_| ActivateError::QueueCount { expected: N, got })
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device type ([`TYPE_VSOCK`], ...).
    fn device_type(&self) -> u32;

    /// The largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// The features the device offers (including [`VIRTIO_F_VERSION_1`]).
    fn device_features(&self) -> u64;

    /// The features the driver accepted: a subset of [`VirtioDevice::device_features`],
    /// checked by the transport before it calls this.
    fn ack_features(&mut self, features: u64);

    /// Reads the device's configuration space at `offset`. Bytes beyond its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device's configuration space; devices whose config is read-only ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// One event per queue, signalled when the driver notifies that queue.
    fn queue_events(&self) -> &[EventFd];

    /// Starts the device with the queues the driver set up (valid and ready, checked by the
    /// transport) and the guest memory they live in.
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError>;

    /// Resets the device after the driver wrote 0 to the status register. Returns false
    /// when the device cannot be reset (it then needs the VM to restart).
    fn reset(&mut self) -> bool {
        false
    }
}
