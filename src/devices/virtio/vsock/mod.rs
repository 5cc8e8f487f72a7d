//! virtio-vsock served in userspace (virtio v1.2 §5.10): stream sockets between the guest and
//! code running inside this process.
//!
//! The host end of every connection is one half of a `socketpair`: the device keeps one
//! [`UnixStream`] and hands the other to runvm's code, which reads and writes it like any
//! socket. Guest-initiated connections to a port someone [`VsockHandle::listen`]s on arrive
//! through a [`VsockListener`]; [`VsockHandle::connect`] opens a connection to a guest port.
//!
//! The device is shaped like Firecracker's:
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice) impl and the queue processing
//!   (descriptor chains in, packets out);
//! - `event_handler.rs`: the event-loop side (queue events, the wake-up event of the
//!   [`VsockHandle`]s, a timer, and the connection sockets);
//! - `muxer.rs`: routes packets between the queues and the connections, owns the listeners
//!   and decides which connection fills the next rx buffer;
//! - `connection.rs`: one connection's state machine and credit accounting.
//!
//! The guest is hostile. Every bound is a constant below: payload per packet, connections,
//! bytes buffered per connection (the credit we grant), queued resets.

mod connection;
mod device;
mod event_handler;
mod muxer;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

pub use device::Vsock;

/// The context id of the host.
pub const HOST_CID: u64 = 2;
/// The largest size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Number of queues: rx, tx, event.
pub const NUM_QUEUES: usize = 3;
/// Index of the rx queue (device to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the tx queue (guest to device).
pub const TX_QUEUE: usize = 1;
/// Index of the event queue (unused: the device never reports events).
pub const EVENT_QUEUE: usize = 2;

/// The largest payload of one packet, either way.
pub const MAX_PKT_PAYLOAD: u32 = 64 * 1024;
/// The most connections open at once; beyond it requests are reset.
pub const MAX_CONNECTIONS: usize = 1024;
/// The most resets queued for the guest that belong to no connection; beyond it they are
/// dropped (the guest is then flooding us and not reading).
pub const MAX_PENDING_RESETS: usize = 1024;
/// Bytes of the guest's writes buffered per connection: the `buf_alloc` we advertise. A guest
/// that sends beyond it has ignored our credit and its connection is reset. Worst case, all
/// connections together buffer `MAX_CONNECTIONS * CONN_BUF_ALLOC` (128 MiB).
pub const CONN_BUF_ALLOC: u32 = 128 * 1024;
/// We tell the guest about freed buffer space when the free space it knows of falls below
/// this...
pub const CREDIT_UPDATE_THRESHOLD: u32 = 64 * 1024;
/// ...and we have freed at least this much more since we last told it (or everything).
pub const CREDIT_UPDATE_MIN_GAIN: u32 = 4 * 1024;
/// How long a host-initiated connection waits for the guest's RESPONSE.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection shut down both ways waits for the peer's RST, or for its buffered
/// data to drain, before we reset it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Guest-initiated connections waiting in a listener to be accepted; beyond it they are reset.
pub const ACCEPT_BACKLOG: usize = 128;
/// First local port of host-initiated connections.
pub const EPHEMERAL_PORT_START: u32 = 0x4000_0000;

/// Size of the packet header, `struct virtio_vsock_hdr`.
pub const PKT_HEADER_SIZE: usize = virtio_vsock::packet::PKT_HEADER_SIZE;

/// Socket type of stream sockets, the only type this device serves.
pub const TYPE_STREAM: u16 = 1;
/// Operation: connection request.
pub const OP_REQUEST: u16 = 1;
/// Operation: connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Operation: connection reset (refused, aborted or closed).
pub const OP_RST: u16 = 3;
/// Operation: one or both directions shut down (see the `SHUTDOWN_*` flags).
pub const OP_SHUTDOWN: u16 = 4;
/// Operation: data.
pub const OP_RW: u16 = 5;
/// Operation: the sender's buffer space (`buf_alloc`, `fwd_cnt`) changed.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// Operation: asks the peer for an [`OP_CREDIT_UPDATE`].
pub const OP_CREDIT_REQUEST: u16 = 7;
/// Shutdown flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// Shutdown flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both shutdown flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// Why the device could not serve a descriptor chain or a queue (logged, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The descriptor chain does not hold a well-formed packet.
    #[error("malformed descriptor chain: {0}")]
    Chain(virtio_vsock::packet::Error),
    /// A tx chain is not a header followed by `len` bytes of readable data.
    #[error("malformed tx chain: {0}")]
    TxChain(String),
    /// The queue itself failed (e.g. its used ring is outside guest memory).
    #[error("queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    /// Guest memory of a packet could not be written.
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::VolatileMemoryError),
    /// The guest could not be interrupted.
    #[error("interrupt: {0}")]
    Interrupt(io::Error),
    /// The event loop refused a socket.
    #[error("event loop: {0}")]
    EventLoop(io::Error),
}

/// The fields of one packet header, copied out of (or into) guest memory once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VsockHeader {
    /// Context id of the sender.
    pub src_cid: u64,
    /// Context id of the receiver.
    pub dst_cid: u64,
    /// Port of the sender.
    pub src_port: u32,
    /// Port of the receiver.
    pub dst_port: u32,
    /// Payload bytes following the header.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Operation (`OP_*`).
    pub op: u16,
    /// Operation flags (`SHUTDOWN_*` for [`OP_SHUTDOWN`]).
    pub flags: u32,
    /// Buffer space of the sender for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its buffer for this connection, ever (wrapping).
    pub fwd_cnt: u32,
}

impl VsockHeader {
    /// The header in its little-endian wire layout.
    pub fn to_bytes(&self) -> [u8; PKT_HEADER_SIZE] {
        let mut out = [0u8; PKT_HEADER_SIZE];
        let fields: [&[u8]; 10] = [
            &self.src_cid.to_le_bytes(),
            &self.dst_cid.to_le_bytes(),
            &self.src_port.to_le_bytes(),
            &self.dst_port.to_le_bytes(),
            &self.len.to_le_bytes(),
            &self.type_.to_le_bytes(),
            &self.op.to_le_bytes(),
            &self.flags.to_le_bytes(),
            &self.buf_alloc.to_le_bytes(),
            &self.fwd_cnt.to_le_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            let end = at + field.len();
            if let Some(dst) = out.get_mut(at..end) {
                dst.copy_from_slice(field);
            }
            at = end;
        }
        out
    }

    /// Decodes a header the guest queued, from bytes already copied out of guest memory (so
    /// it cannot change under us).
    pub fn from_bytes(b: &[u8; PKT_HEADER_SIZE]) -> Self {
        let u64_at = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The header of a packet the guest queued (already copied out of guest memory by
    /// `virtio_vsock`, so it cannot change under us).
    pub fn from_packet<B: vm_memory::bitmap::BitmapSlice>(
        pkt: &virtio_vsock::packet::VsockPacket<'_, B>,
    ) -> Self {
        Self {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }
}

/// Ports that accept guest-initiated connections, each with the queue of its listener.
type ListenerMap = Mutex<HashMap<u32, SyncSender<UnixStream>>>;

fn lock_listeners(listeners: &ListenerMap) -> MutexGuard<'_, HashMap<u32, SyncSender<UnixStream>>> {
    // The map stays consistent even if a holder panicked: every update is one insert/remove.
    listeners
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What other threads ask of the device's event loop.
#[derive(Debug)]
pub(crate) enum HostRequest {
    /// Open a connection to the guest's `peer_port`, served through `stream`.
    Connect {
        /// The guest port to connect to.
        peer_port: u32,
        /// The device's end of the socket pair.
        stream: UnixStream,
        /// When the caller asked: the connect timeout runs from here.
        requested_at: Instant,
    },
}

/// Opens and accepts connections of a running [`Vsock`] from any thread.
#[derive(Debug, Clone)]
pub struct VsockHandle {
    requests: Sender<HostRequest>,
    wake: Arc<EventFd>,
    listeners: Arc<ListenerMap>,
}

impl VsockHandle {
    /// Accepts guest connections to host port `port` from now on, until the returned listener
    /// is dropped. Fails with `AddrInUse` if someone already listens on `port`.
    pub fn listen(&self, port: u32) -> io::Result<VsockListener> {
        let mut map = lock_listeners(&self.listeners);
        if map.contains_key(&port) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("vsock port {port} is already listened on"),
            ));
        }
        let (sender, incoming) = mpsc::sync_channel(ACCEPT_BACKLOG);
        map.insert(port, sender);
        Ok(VsockListener {
            port,
            incoming,
            listeners: Arc::clone(&self.listeners),
        })
    }

    /// Connects to the guest's port `port`. The stream yields data once the guest accepts; if
    /// the guest refuses, or does not answer within [`CONNECT_TIMEOUT`], the stream is closed
    /// (its reader sees end of file).
    pub fn connect(&self, port: u32) -> io::Result<UnixStream> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let request = HostRequest::Connect {
            peer_port: port,
            stream: ours,
            requested_at: Instant::now(),
        };
        self.requests
            .send(request)
            .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "the vsock device is gone"))?;
        self.wake.write(1)?;
        Ok(theirs)
    }
}

/// Guest-initiated connections to one host port, accepted by the device.
#[derive(Debug)]
pub struct VsockListener {
    port: u32,
    incoming: Receiver<UnixStream>,
    listeners: Arc<ListenerMap>,
}

impl VsockListener {
    /// The host port listened on.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<UnixStream> {
        self.incoming.recv().map_err(|_| device_gone())
    }

    /// Waits at most `timeout` for the next connection; `None` when none came.
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<Option<UnixStream>> {
        match self.incoming.recv_timeout(timeout) {
            Ok(stream) => Ok(Some(stream)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(device_gone()),
        }
    }
}

impl Drop for VsockListener {
    fn drop(&mut self) {
        lock_listeners(&self.listeners).remove(&self.port);
    }
}

fn device_gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the vsock device is gone")
}

/// The state shared between a [`Vsock`] and its handles: how requests reach the event loop.
pub(crate) struct HandleParts {
    pub(crate) requests: Receiver<HostRequest>,
    pub(crate) wake: Arc<EventFd>,
    pub(crate) listeners: Arc<ListenerMap>,
}

/// Creates the channel between a device and its [`VsockHandle`]s.
pub(crate) fn handle_pair() -> io::Result<(HandleParts, VsockHandle)> {
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
    let listeners = Arc::new(Mutex::new(HashMap::new()));
    let (sender, receiver) = mpsc::channel();
    let handle = VsockHandle {
        requests: sender,
        wake: Arc::clone(&wake),
        listeners: Arc::clone(&listeners),
    };
    let parts = HandleParts {
        requests: receiver,
        wake,
        listeners,
    };
    Ok((parts, handle))
}
