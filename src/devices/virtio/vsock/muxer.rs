//! The vsock muxer: routes guest packets to connections by (local port, guest port), accepts
//! guest connections for the listeners, opens host-initiated ones, and picks what goes into
//! the next rx buffer.
//!
//! RX scheduling: resets that belong to no connection wait in a bounded queue and go first;
//! then connections take turns (round robin over `rx_ready`), one packet each. A connection
//! is in `rx_ready` at most once, so the pending rx work is bounded by the number of
//! connections plus [`MAX_PENDING_RESETS`].
//!
//! The muxer does not own the event loop: it records which connection sockets need their
//! epoll interest refreshed, and [`VsockMuxer::sync_interests`] applies that through a
//! [`FdWatcher`]. A socket leaves epoll before it is closed, so a file descriptor number
//! is never reused while the event loop still watches it.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use virtio_vsock::packet::VsockPacket;
use vm_memory::Bytes;
use vmm_sys_util::epoll::EventSet;

use super::connection::{ConnStatus, RxOutcome, VsockConnection};
use super::{
    CONN_BUF_ALLOC, CONNECT_TIMEOUT, EPHEMERAL_PORT_START, HOST_CID, HostRequest, ListenerMap,
    MAX_CONNECTIONS, MAX_PENDING_RESETS, MAX_PKT_PAYLOAD, OP_REQUEST, OP_RST, PKT_HEADER_SIZE,
    TYPE_STREAM, VsockError, VsockHeader, lock_listeners,
};
use crate::devices::virtio::watcher::FdWatcher;

/// Identifies a connection: our port and the guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ConnKey {
    /// The host-side port.
    pub(super) local_port: u32,
    /// The guest-side port.
    pub(super) peer_port: u32,
}

/// Connections, listeners and pending rx work of one device.
#[derive(Debug)]
pub(super) struct VsockMuxer {
    guest_cid: u64,
    listeners: Arc<ListenerMap>,
    connections: HashMap<ConnKey, VsockConnection>,
    by_fd: HashMap<RawFd, ConnKey>,
    /// Resets for the guest that belong to no (remaining) connection.
    resets: VecDeque<VsockHeader>,
    /// Connections with something for the rx queue, in turn order.
    rx_ready: VecDeque<ConnKey>,
    /// Connections whose epoll interest may have changed.
    interest_dirty: Vec<ConnKey>,
    /// Sockets of forgotten connections, kept open until the event loop stops watching them;
    /// the flag tells whether it watches them.
    retired: Vec<(UnixStream, bool)>,
    next_ephemeral_port: u32,
    /// One packet's payload, either way.
    scratch: Vec<u8>,
}

impl VsockMuxer {
    /// A muxer for the guest `guest_cid`, accepting for `listeners`.
    pub(super) fn new(guest_cid: u64, listeners: Arc<ListenerMap>) -> Self {
        Self {
            guest_cid,
            listeners,
            connections: HashMap::new(),
            by_fd: HashMap::new(),
            resets: VecDeque::new(),
            rx_ready: VecDeque::new(),
            interest_dirty: Vec::new(),
            retired: Vec::new(),
            next_ephemeral_port: EPHEMERAL_PORT_START,
            scratch: vec![0; MAX_PKT_PAYLOAD as usize],
        }
    }

    /// Handles one packet from the tx queue; `data` is its payload, if any.
    pub(super) fn handle_guest_packet(&mut self, hdr: &VsockHeader, data: &[u8], now: Instant) {
        if hdr.src_cid != self.guest_cid {
            // Spoofed: there is nobody to answer.
            return;
        }
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            // Another destination or socket type: refuse, so a connect fails fast. Such a RST
            // does not match any of our connections in the guest, so ours stay.
            if hdr.op != OP_RST {
                self.push_reset(reply_reset(hdr, self.guest_cid));
            }
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        let Some(conn) = self.connections.get_mut(&key) else {
            match hdr.op {
                OP_REQUEST => self.accept_guest_connection(key, hdr),
                OP_RST => {}
                _ => self.push_reset(reply_reset(hdr, self.guest_cid)),
            }
            return;
        };
        let payload = if hdr.op == super::OP_RW { data } else { &[] };
        let status = conn.handle_guest_packet(hdr, payload, now);
        self.apply(key, status);
    }

    /// A REQUEST for a port: hand a new stream to its listener, or refuse.
    fn accept_guest_connection(&mut self, key: ConnKey, hdr: &VsockHeader) {
        let refuse = |muxer: &mut Self| muxer.push_reset(reply_reset(hdr, muxer.guest_cid));
        if self.connections.len() >= MAX_CONNECTIONS {
            return refuse(self);
        }
        let Some(listener) = lock_listeners(&self.listeners)
            .get(&key.local_port)
            .cloned()
        else {
            return refuse(self);
        };
        let Ok((ours, theirs)) = UnixStream::pair() else {
            return refuse(self);
        };
        if ours.set_nonblocking(true).is_err() || listener.try_send(theirs).is_err() {
            // A full backlog, or the listener is being dropped.
            return refuse(self);
        }
        self.insert(key, VsockConnection::new_guest_initiated(ours, hdr));
    }

    /// Handles a request from a [`VsockHandle`](super::VsockHandle).
    pub(super) fn handle_host_request(&mut self, request: HostRequest) {
        match request {
            HostRequest::Connect {
                peer_port,
                stream,
                requested_at,
            } => {
                // Without room or a port, dropping the stream tells the caller (end of file).
                if self.connections.len() >= MAX_CONNECTIONS {
                    return;
                }
                let Some(local_port) = self.allocate_local_port(peer_port) else {
                    return;
                };
                if stream.set_nonblocking(true).is_err() {
                    return;
                }
                let deadline = requested_at + CONNECT_TIMEOUT;
                let key = ConnKey {
                    local_port,
                    peer_port,
                };
                self.insert(key, VsockConnection::new_host_initiated(stream, deadline));
            }
        }
    }

    /// A local port for a connection to `peer_port`: neither listened on nor in use with it.
    fn allocate_local_port(&mut self, peer_port: u32) -> Option<u32> {
        let listeners = Arc::clone(&self.listeners);
        let listeners = lock_listeners(&listeners);
        // Each candidate is distinct and each taken one is a connection or a listener, so
        // this many tries always find a free port if there is one.
        let tries = self.connections.len() + listeners.len() + 1;
        for _ in 0..tries {
            let port = self.next_ephemeral_port;
            self.next_ephemeral_port = port.checked_add(1).unwrap_or(EPHEMERAL_PORT_START);
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !listeners.contains_key(&port) && !self.connections.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    fn insert(&mut self, key: ConnKey, conn: VsockConnection) {
        self.by_fd.insert(conn.fd(), key);
        self.connections.insert(key, conn);
        self.apply(key, ConnStatus::Alive);
    }

    /// Handles readiness of a connection socket (`fd` as the event loop reported it).
    pub(super) fn handle_host_event(&mut self, fd: RawFd, events: EventSet) {
        let Some(&key) = self.by_fd.get(&fd) else {
            return;
        };
        let Some(conn) = self.connections.get_mut(&key) else {
            return;
        };
        let status = conn.handle_host_event(events);
        self.apply(key, status);
    }

    /// Acts on a connection's status after an event.
    fn apply(&mut self, key: ConnKey, status: ConnStatus) {
        match status {
            ConnStatus::Alive => {
                self.schedule_rx(key);
                self.mark_interest_dirty(key);
            }
            ConnStatus::Closed => self.remove(key),
            ConnStatus::Reset => self.reset_connection(key),
        }
    }

    fn schedule_rx(&mut self, key: ConnKey) {
        if let Some(conn) = self.connections.get_mut(&key)
            && conn.wants_rx()
            && !conn.queued_for_rx
        {
            conn.queued_for_rx = true;
            self.rx_ready.push_back(key);
        }
    }

    fn mark_interest_dirty(&mut self, key: ConnKey) {
        if let Some(conn) = self.connections.get_mut(&key)
            && !conn.interest_dirty
        {
            conn.interest_dirty = true;
            self.interest_dirty.push(key);
        }
    }

    /// Sends the guest a RST for the connection and forgets it.
    fn reset_connection(&mut self, key: ConnKey) {
        if self.connections.contains_key(&key) {
            self.push_reset(VsockHeader {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: key.local_port,
                dst_port: key.peer_port,
                type_: TYPE_STREAM,
                op: OP_RST,
                ..VsockHeader::default()
            });
        }
        self.remove(key);
    }

    /// Forgets a connection; its socket closes once the event loop stops watching it.
    fn remove(&mut self, key: ConnKey) {
        if let Some(conn) = self.connections.remove(&key) {
            self.by_fd.remove(&conn.fd());
            let registered = conn.registered.is_some();
            self.retired.push((conn.into_stream(), registered));
        }
    }

    fn push_reset(&mut self, hdr: VsockHeader) {
        // A guest that floods us without reading its rx queue loses its resets.
        if self.resets.len() < MAX_PENDING_RESETS {
            self.resets.push_back(hdr);
        }
    }

    /// Whether there may be something for the rx queue.
    pub(super) fn has_rx_work(&self) -> bool {
        !self.resets.is_empty() || !self.rx_ready.is_empty()
    }

    /// Fills one rx buffer (already checked by `virtio_vsock`) with the next packet; returns
    /// the bytes written (the used length), or `None` when there was nothing to send.
    pub(super) fn fill_rx_packet(
        &mut self,
        pkt: &mut VsockPacket<'_, ()>,
        now: Instant,
    ) -> Result<Option<u32>, VsockError> {
        let capacity = pkt
            .data_slice()
            .map_or(0, |data| data.len())
            .min(self.scratch.len());
        // Each connection gets one turn per call, so a connection that cannot use this buffer
        // (say, it has no payload room) does not spin.
        let mut turns = self.rx_ready.len();
        loop {
            if let Some(hdr) = self.resets.pop_front() {
                pkt.set_header_from_raw(&hdr.to_bytes())
                    .map_err(VsockError::Chain)?;
                return Ok(Some(PKT_HEADER_SIZE as u32));
            }
            if turns == 0 {
                return Ok(None);
            }
            turns -= 1;
            let Some(key) = self.rx_ready.pop_front() else {
                return Ok(None);
            };
            let Some(conn) = self.connections.get_mut(&key) else {
                continue;
            };
            conn.queued_for_rx = false;
            let buf = self.scratch.get_mut(..capacity).unwrap_or_default();
            let (op, flags, len) = match conn.next_rx(buf, now) {
                RxOutcome::Packet { op, flags, len } => (op, flags, len),
                RxOutcome::Nothing => {
                    self.apply(key, ConnStatus::Alive);
                    continue;
                }
                RxOutcome::Reset => {
                    self.reset_connection(key);
                    continue;
                }
            };
            let hdr = VsockHeader {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: key.local_port,
                dst_port: key.peer_port,
                len,
                type_: TYPE_STREAM,
                op,
                flags,
                buf_alloc: CONN_BUF_ALLOC,
                fwd_cnt: conn.fwd_cnt(),
            };
            let payload = self.scratch.get(..len as usize).unwrap_or_default();
            let written = pkt
                .set_header_from_raw(&hdr.to_bytes())
                .map_err(VsockError::Chain)
                .and_then(|()| match pkt.data_slice() {
                    Some(data) if !payload.is_empty() => {
                        data.write_slice(payload, 0).map_err(VsockError::Memory)
                    }
                    _ => Ok(()),
                });
            if let Err(err) = written {
                // The connection's state moved on, but the guest never got the packet.
                self.reset_connection(key);
                return Err(err);
            }
            self.apply(key, ConnStatus::Alive);
            return Ok(Some(PKT_HEADER_SIZE as u32 + len));
        }
    }

    /// Times out connections whose deadline has passed.
    pub(super) fn expire(&mut self, now: Instant) {
        let expired: Vec<ConnKey> = self
            .connections
            .iter()
            .filter(|(_, conn)| conn.deadline().is_some_and(|deadline| deadline <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            if let Some(conn) = self.connections.get_mut(&key) {
                let status = conn.on_deadline(now);
                self.apply(key, status);
            }
        }
    }

    /// The earliest deadline of any connection.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.connections
            .values()
            .filter_map(VsockConnection::deadline)
            .min()
    }

    /// Brings the event loop's watch list up to date; connections it refuses are reset.
    pub(super) fn sync_interests(&mut self, watcher: &mut dyn FdWatcher) -> Vec<VsockError> {
        let mut errors = Vec::new();
        for key in std::mem::take(&mut self.interest_dirty) {
            let Some(conn) = self.connections.get_mut(&key) else {
                continue;
            };
            conn.interest_dirty = false;
            let wanted = conn.interest();
            let fd = conn.fd();
            let result = match (conn.registered, wanted) {
                (None, Some(events)) => watcher.watch(fd, events),
                (Some(old), Some(events)) if old != events => watcher.rewatch(fd, events),
                (Some(_), None) => watcher.unwatch(fd),
                _ => Ok(()),
            };
            match result {
                Ok(()) => conn.registered = wanted,
                Err(err) => {
                    errors.push(VsockError::EventLoop(err));
                    self.reset_connection(key);
                }
            }
        }
        for (stream, registered) in self.retired.drain(..) {
            if registered {
                // Failing means it is not watched: either way it can be closed now.
                let _ = watcher.unwatch(stream.as_raw_fd());
            }
        }
        errors
    }

    /// Drops every connection (the driver reset the device); listeners stay.
    pub(super) fn reset(&mut self) {
        for (_, conn) in self.connections.drain() {
            let registered = conn.registered.is_some();
            self.retired.push((conn.into_stream(), registered));
        }
        self.by_fd.clear();
        self.resets.clear();
        self.rx_ready.clear();
        self.interest_dirty.clear();
    }

    /// Number of open connections.
    #[cfg(test)]
    pub(super) fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// The connection with this key.
    #[cfg(test)]
    pub(super) fn connection(&self, key: ConnKey) -> Option<&VsockConnection> {
        self.connections.get(&key)
    }
}

/// The RST answering `hdr`, addressed back to the guest.
fn reply_reset(hdr: &VsockHeader, guest_cid: u64) -> VsockHeader {
    VsockHeader {
        src_cid: hdr.dst_cid,
        dst_cid: guest_cid,
        src_port: hdr.dst_port,
        dst_port: hdr.src_port,
        type_: hdr.type_,
        op: OP_RST,
        ..VsockHeader::default()
    }
}
