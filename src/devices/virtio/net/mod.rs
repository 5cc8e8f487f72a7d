//! virtio-net (virtio v1.2 §5.1): one guest NIC whose frames go to and come from a host tap.
//!
//! **Features.** [`VIRTIO_F_VERSION_1`](super::VIRTIO_F_VERSION_1), `VIRTIO_RING_F_EVENT_IDX`,
//! `VIRTIO_RING_F_INDIRECT_DESC`, `VIRTIO_NET_F_MAC` and `VIRTIO_NET_F_STATUS`; the offloads
//! a tap can do: `CSUM`, `HOST_TSO4`, `HOST_TSO6`, `HOST_ECN` (guest to tap), `GUEST_CSUM`,
//! `GUEST_TSO4`, `GUEST_TSO6`, `GUEST_ECN` (tap to guest); and `MRG_RXBUF`. No UFO/USO, no
//! control queue.
//! The config space holds the placeholder MAC of its slot ([`guest_init::netspec::slot_mac`];
//! the guest sets the real one itself) and a link status that is always up.
//!
//! The host end is a tap opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and a vnet header
//! size of [`VNET_HDR_LEN`], handed over at run time through the [`NetHandle`]. Guest and tap
//! use the same 12-byte `virtio_net_hdr_v1`, so header and frame are copied as they are, in
//! both directions, once checked (`header.rs`): tx headers may ask for exactly the offloads
//! the guest negotiated, with offsets inside the frame; rx headers may carry only what the
//! guest accepted. The tap is told with `TUNSETOFFLOAD` which offloads it may use (the
//! `GUEST_*` features), whenever it is attached and whenever the driver activates or resets
//! the device; a tap that refuses sends plain frames, which every guest takes. While no tap is
//! attached, tx frames are dropped and nothing is received.
//!
//! **Notifications** follow the event indexes when negotiated: the device asks for tx kicks
//! only once it has drained the queue, for rx kicks only once it ran out of buffers, and
//! interrupts the guest only when the driver's `used_event` says so (see `tx.rs`, `rx.rs`).
//!
//! **Indirect descriptors** let a chain live in a table of its own and take one entry of the
//! ring: a 64 KiB TSO frame that Linux gathers from up to `MAX_SKB_FRAGS + 2` buffers takes
//! that many otherwise. Both queues take them (`chain.rs` walks every chain, through a table
//! or not, and refuses those it cannot walk to their end). The tx queue is also larger than
//! the rx queue (see [`TX_QUEUE_SIZE`], [`RX_QUEUE_SIZE`]).
//!
//! **Receive buffers.** With `MRG_RXBUF` a frame (up to [`MAX_BUF_LEN`], a 64 KiB segment from
//! a tap with TSO) spans as many chains as it needs, `num_buffers` in its header saying how
//! many; without it each frame takes one chain (the guest posts 64 KiB chains when it accepts
//! TSO, MTU-sized ones otherwise: larger frames are dropped). A frame that finds too few
//! buffers waits in the device until the guest adds some (see `rx.rs`).
//!
//! The device is shaped like the other virtio devices:
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice) impl and the backend swap;
//! - `chain.rs`: the descriptors of a chain, through an indirect table or not, checked;
//! - `header.rs`: the vnet header, what each direction may carry, the tap's offload flags;
//! - `tx.rs`: guest to tap (descriptor chains gathered into one frame, then one `write`);
//! - `rx.rs`: tap to guest (one `read` per frame, scattered into one chain or several);
//! - `backend.rs`: the tap itself (non-blocking reads and writes, its offloads);
//! - `handle.rs`: [`NetHandle`], how other threads attach a tap, and the [`NetStats`] counters;
//! - `event_handler.rs`: the event-loop side (queue events, the handle's wake-up event, the
//!   tap, vhost-net's calls), including when the tap is watched (see there);
//! - `vhost.rs`: the kernel's vhost-net carrying the frames instead (below).
//!
//! **vhost-net.** Once the driver has activated the device and the backend is a tap, the
//! device hands the rings to the kernel's vhost-net (`/dev/vhost-net`): the kernel then moves
//! the frames between the queues and the tap, woken by the queues' own KVM ioeventfds, and
//! interrupts the guest through the device's KVM irqfd: the device does nothing per frame. A
//! backend that is no tap (passt's socket),
//! `RUNVM_VHOST_NET=0` when the VM is built ([`NetOptions::vhost`]), or any failure of
//! vhost-net (logged once) leaves the data path described here to the device. See `vhost.rs`.
//!
//! **Security.** Everything in the queues comes from a hostile guest: descriptor addresses and
//! lengths are checked against guest memory, a chain must end inside its table (no loops; at
//! most one indirect table, of at most a queue's worth of entries, inside guest memory), a
//! frame is bounded by [`MAX_BUF_LEN`], a bad chain fails (and is returned with length 0)
//! alone, a tx header asks for nothing that was not negotiated, and the device never blocks:
//! a tap that cannot take a frame loses it, a frame waiting for rx buffers stops the device
//! reading the tap. Errors are logged, [`MAX_LOGGED_ERRORS`](super::MAX_LOGGED_ERRORS) at
//! most. Under vhost-net the kernel checks the chains; the device checks that the rings it
//! hands over lie inside guest memory.

mod backend;
mod chain;
mod device;
mod event_handler;
mod handle;
mod header;
mod rx;
#[cfg(test)]
mod tests;
mod tx;
mod vhost;

use std::io;

pub use chain::ChainError;
pub use device::{Net, NetOptions};
pub use handle::{NetHandle, NetStats};
pub use header::HeaderError;
pub use vhost::VhostError;

/// The largest size of the rx queue. The guest keeps it full of buffers (with mergeable
/// buffers, up to a page each): 256 of them already hold a dozen 64 KiB frames, the device
/// reads the tap only as fast as it finds buffers, and a deeper ring would pin more guest
/// memory per NIC for nothing.
pub const RX_QUEUE_SIZE: u16 = 256;
/// The largest size of the tx queue. With indirect descriptors a frame takes one entry when
/// Linux can allocate its table (`GFP_ATOMIC`); when it cannot, or for a driver without
/// them, a 64 KiB TSO frame takes up to `MAX_SKB_FRAGS + 2` (19) entries, and Linux stops
/// the queue once fewer than that are free: 1024 entries keep some 53 such frames in flight,
/// against 13 in 256, and four times as many small frames. The mmio transport offers any
/// power of two up to this (virtio-queue takes up to 32768) and Linux's `virtio_mmio` sets
/// up what `QueueNumMax` says (halving it only if the allocation fails). It costs the guest
/// some tens of KiB (rings and per-entry state), the device nothing: it keeps no state per
/// entry, and drains at most [`MAX_TX_CHAINS_PER_EVENT`] per turn whatever the size.
pub const TX_QUEUE_SIZE: u16 = 1024;
/// Number of queues: rx and tx (no control queue, one pair).
pub const NUM_QUEUES: usize = 2;
/// Index of the rx queue (tap to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the tx queue (guest to tap).
pub const TX_QUEUE: usize = 1;

/// Size of `struct virtio_net_hdr_v1`, in front of every frame (the guest's and the tap's).
pub const VNET_HDR_LEN: usize = 12;
/// The largest frame after the header: the 65535-byte maximum MTU, an Ethernet header and a
/// VLAN tag; a TSO frame (at most 64 KiB of IP) fits too.
pub const MAX_FRAME_LEN: usize = 65550;
/// The largest header plus frame, either way: a larger tx chain is dropped, and rx reads at
/// most this much.
pub const MAX_BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Frames received per wake-up of the tap, so that the event loop stays fair.
pub const MAX_RX_FRAMES_PER_EVENT: usize = RX_QUEUE_SIZE as usize;
/// Tx chains handled per queue event before the device lets other events run (a quarter of
/// a full tx queue: the same turn as the rx side's).
pub const MAX_TX_CHAINS_PER_EVENT: usize = 256;

/// Why the device could not serve a descriptor chain, a frame or a queue (logged, never
/// fatal).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A tx chain holds a device-writable descriptor.
    #[error("write-only descriptor in a tx chain")]
    WriteOnlyTx,
    /// An rx chain holds a device-readable descriptor.
    #[error("read-only descriptor in an rx chain")]
    ReadOnlyRx,
    /// A tx chain is shorter than the vnet header.
    #[error("tx chain of {0} bytes is shorter than the {VNET_HDR_LEN}-byte header")]
    TxTooShort(usize),
    /// A tx chain is longer than [`MAX_BUF_LEN`].
    #[error("tx chain is longer than {MAX_BUF_LEN} bytes")]
    TxTooLarge,
    /// A tx header asks for what was not negotiated, or points outside its frame.
    #[error("tx header refused: {0}")]
    TxHeader(#[source] HeaderError),
    /// A frame from the tap carries offloads the guest did not accept.
    #[error("rx header refused: {0}")]
    RxHeader(#[source] HeaderError),
    /// With mergeable rx buffers, a chain too small for the vnet header.
    #[error("rx chain of {0} bytes is shorter than the {VNET_HDR_LEN}-byte header")]
    RxChainTooShort(usize),
    /// A frame needs more buffers than the rx queue can ever hold at once.
    #[error("a {0}-byte frame does not fit in the whole rx queue")]
    RxQueueTooSmall(usize),
    /// A chain cannot be walked to its end (see `chain.rs`).
    #[error("bad chain: {0}")]
    Chain(#[from] ChainError),
    /// A descriptor points outside guest memory.
    #[error("descriptor outside guest memory")]
    OutOfMemory,
    /// An rx chain no longer holds the frame it was checked for (the guest changed it).
    #[error("rx chain changed while the device filled it")]
    RxChainChanged,
    /// Guest memory could not be read or written.
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// The queue itself failed (e.g. its used ring is outside guest memory).
    #[error("queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    /// The guest could not be interrupted.
    #[error("interrupt: {0}")]
    Interrupt(#[source] io::Error),
    /// The event loop refused a change of what it watches.
    #[error("event loop: {0}")]
    EventLoop(#[source] io::Error),
    /// The tap failed: reading it, writing it, or it reported an error or a hang-up.
    #[error("tap: {0}")]
    Backend(#[source] io::Error),
    /// vhost-net could not carry the frames: the device moves them itself from now on.
    #[error("slot {slot}: vhost-net not used, the VMM moves the frames: {source}")]
    Vhost {
        /// The device's slot.
        slot: u32,
        /// Why.
        #[source]
        source: VhostError,
    },
    /// The tap refused `TUNSETOFFLOAD`: its frames stay plain.
    #[error("the tap refused offloads {flags:#x} ({source}); its frames stay plain")]
    TapOffloads {
        /// The `TUN_F_*` flags asked for.
        flags: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
}
