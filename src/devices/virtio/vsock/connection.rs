//! One stream connection between a guest port and a host socket: its state machine (virtio
//! v1.2 §5.10.6) and its credit-based flow control, both ways.
//!
//! Host to guest: we never send more payload than the guest's credit, `peer_buf_alloc -
//! (tx_cnt - peer_fwd_cnt)`, taken from the last header the guest sent on this connection. We
//! read the host socket straight into the guest's rx buffer, so nothing is buffered this way.
//! When the credit is gone while the host has data, we ask once with CREDIT_REQUEST.
//!
//! Guest to host: we grant [`CONN_BUF_ALLOC`] bytes and count `fwd_cnt`, the bytes we wrote
//! to (or discarded for) the host socket. What the socket does not take at once waits in
//! `to_host`, which therefore never holds more than the credit we granted: a guest that sends
//! beyond `CONN_BUF_ALLOC - (rx_cnt - last fwd_cnt we told it)` gets a RST. We send a
//! CREDIT_UPDATE when the free space the guest knows of runs low and we have freed more.
//!
//! The connection never touches the queues: the muxer asks it for its next rx packet
//! ([`VsockConnection::next_rx`]) and hands it each guest packet
//! ([`VsockConnection::handle_guest_packet`]) and socket event.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use super::{
    CLOSE_TIMEOUT, CONN_BUF_ALLOC, CREDIT_UPDATE_MIN_GAIN, CREDIT_UPDATE_THRESHOLD,
    MAX_PKT_PAYLOAD, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, VsockHeader,
};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    /// Host-initiated, waiting for the guest's RESPONSE; `request_sent` once our REQUEST is in
    /// the rx queue.
    Connecting {
        /// Whether the guest has been sent the REQUEST.
        request_sent: bool,
    },
    /// Open; each direction may still be shut down on its own.
    Established,
    /// We sent SHUTDOWN with both flags and wait for the guest's RST.
    Closing,
    /// The guest shut down both directions; we flush what we buffered for the host, then RST.
    Draining,
}

/// What the muxer must do with a connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnStatus {
    /// Keep it.
    Alive,
    /// Forget it without telling the guest (it reset, or never heard of it).
    Closed,
    /// Send the guest a RST for it and forget it.
    Reset,
}

/// What a connection wants to put in one rx buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RxOutcome {
    /// A packet: header fields beyond the addresses and credit, and `len` bytes of payload
    /// already in the buffer the muxer passed.
    Packet {
        /// Operation.
        op: u16,
        /// Operation flags.
        flags: u32,
        /// Payload bytes.
        len: u32,
    },
    /// Nothing to send after all.
    Nothing,
    /// The host socket failed: reset the connection.
    Reset,
}

/// One connection; keyed by the muxer on (local port, guest port).
#[derive(Debug)]
pub(super) struct VsockConnection {
    stream: UnixStream,
    state: ConnState,
    deadline: Option<Instant>,

    // Host to guest.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    tx_cnt: Wrapping<u32>,
    /// The host socket may have data (or end of file) for the guest.
    host_readable: bool,
    /// The host socket hung up: reading it ends in end of file, soon.
    host_hung_up: bool,
    /// We asked for credit and have not been given any since.
    credit_request_sent: bool,

    // Guest to host.
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    to_host: VecDeque<u8>,

    // Control.
    response_pending: bool,
    credit_update_pending: bool,
    /// `SHUTDOWN_*` flags of our side: RCV once the host stopped reading, SEND once the host
    /// stopped writing.
    local_shutdown: u32,
    local_shutdown_sent: u32,
    /// `SHUTDOWN_*` flags the guest sent.
    peer_shutdown: u32,
    host_write_shut: bool,

    // Muxer bookkeeping.
    /// The connection is in the muxer's rx queue.
    pub(super) queued_for_rx: bool,
    /// The connection is in the muxer's list of epoll interests to refresh.
    pub(super) interest_dirty: bool,
    /// What the event loop currently watches on the socket (`None`: not registered).
    pub(super) registered: Option<EventSet>,
}

impl VsockConnection {
    fn new(stream: UnixStream, state: ConnState) -> Self {
        Self {
            stream,
            state,
            deadline: None,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            host_readable: false,
            host_hung_up: false,
            credit_request_sent: false,
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            to_host: VecDeque::new(),
            response_pending: false,
            credit_update_pending: false,
            local_shutdown: 0,
            local_shutdown_sent: 0,
            peer_shutdown: 0,
            host_write_shut: false,
            queued_for_rx: false,
            interest_dirty: false,
            registered: None,
        }
    }

    /// A connection the guest asked for (its REQUEST carried its credit); we answer RESPONSE.
    pub(super) fn new_guest_initiated(stream: UnixStream, request: &VsockHeader) -> Self {
        let mut conn = Self::new(stream, ConnState::Established);
        conn.update_peer_credit(request.buf_alloc, request.fwd_cnt);
        conn.response_pending = true;
        conn
    }

    /// A connection the host asked for: we send REQUEST and give up at `deadline`.
    pub(super) fn new_host_initiated(stream: UnixStream, deadline: Instant) -> Self {
        let mut conn = Self::new(
            stream,
            ConnState::Connecting {
                request_sent: false,
            },
        );
        conn.deadline = Some(deadline);
        conn
    }

    /// The device's end of the socket pair.
    pub(super) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Gives up the socket (the connection is over).
    pub(super) fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// Where the connection is in its life.
    #[cfg(test)]
    pub(super) fn state(&self) -> ConnState {
        self.state
    }

    /// When the connection times out, if it is waiting for something.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Our `fwd_cnt`, for the header of a packet to the guest.
    pub(super) fn fwd_cnt(&self) -> u32 {
        self.fwd_cnt.0
    }

    /// Bytes the guest may still be sent.
    pub(super) fn peer_credit(&self) -> u32 {
        // A guest claiming to have consumed more than we sent makes this wrap to a huge value,
        // which leaves it no credit: it only stalls itself.
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_request_sent = false;
        }
    }

    /// Whether host data may still flow to the guest.
    fn can_send_data(&self) -> bool {
        self.state == ConnState::Established
            && self.local_shutdown & SHUTDOWN_SEND == 0
            && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Handles a packet the guest sent on this connection; `data` is its payload (empty unless
    /// the op is RW).
    pub(super) fn handle_guest_packet(
        &mut self,
        hdr: &VsockHeader,
        data: &[u8],
        now: Instant,
    ) -> ConnStatus {
        match hdr.op {
            OP_RST => return ConnStatus::Closed,
            // A second REQUEST for a live connection: the guest lost track of it.
            OP_REQUEST => return ConnStatus::Reset,
            _ => {}
        }
        self.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        if let ConnState::Connecting { request_sent } = self.state {
            if hdr.op == OP_RESPONSE && request_sent {
                self.state = ConnState::Established;
                self.deadline = None;
                return ConnStatus::Alive;
            }
            return ConnStatus::Reset;
        }
        match hdr.op {
            OP_RW => self.receive(data),
            OP_SHUTDOWN => self.on_peer_shutdown(hdr.flags, now),
            OP_CREDIT_UPDATE => ConnStatus::Alive,
            OP_CREDIT_REQUEST => {
                self.credit_update_pending = true;
                ConnStatus::Alive
            }
            // A RESPONSE outside of connecting, or an op the spec does not define.
            _ => ConnStatus::Reset,
        }
    }

    /// Takes the guest's data for the host: straight into the socket, the rest into `to_host`.
    fn receive(&mut self, data: &[u8]) -> ConnStatus {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            // Data after the guest said it would send no more.
            return ConnStatus::Reset;
        }
        let Ok(len) = u32::try_from(data.len()) else {
            return ConnStatus::Reset;
        };
        // The most the guest may have unacknowledged: what we granted, counted from the last
        // fwd_cnt we told it (it cannot know of a later one).
        let unacknowledged = (self.rx_cnt - self.last_fwd_cnt_sent).0;
        if len > CONN_BUF_ALLOC.saturating_sub(unacknowledged) {
            return ConnStatus::Reset;
        }
        self.rx_cnt += len;
        if self.state != ConnState::Established || self.local_shutdown & SHUTDOWN_RCV != 0 {
            // Nobody reads any more: discard, but keep the accounting.
            self.fwd_cnt += len;
            return ConnStatus::Alive;
        }
        let mut rest = data;
        if self.to_host.is_empty() {
            match send_nosignal(&self.stream, rest) {
                Ok(written) => {
                    rest = rest.get(written..).unwrap_or_default();
                    self.fwd_cnt += u32::try_from(written).unwrap_or(len);
                }
                Err(err) if is_transient(&err) => {}
                Err(_) => {
                    self.fwd_cnt += len;
                    rest = &[];
                    self.host_stopped_receiving();
                }
            }
        }
        self.to_host.extend(rest);
        self.maybe_offer_credit();
        ConnStatus::Alive
    }

    /// Writes what `to_host` holds to the host socket, as far as it takes it.
    fn flush_to_host(&mut self) -> ConnStatus {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match send_nosignal(&self.stream, front) {
                Ok(0) => break,
                Ok(written) => {
                    let written = written.min(front.len());
                    self.to_host.drain(..written);
                    self.fwd_cnt += u32::try_from(written).unwrap_or(0);
                }
                Err(err) if is_transient(&err) => break,
                Err(_) => self.host_stopped_receiving(),
            }
        }
        if self.to_host.is_empty() {
            self.shut_host_write_if_done();
            if self.state == ConnState::Draining {
                return ConnStatus::Reset;
            }
        }
        self.maybe_offer_credit();
        ConnStatus::Alive
    }

    /// Once the guest sent its last byte and the host has it all, the host reads end of file.
    fn shut_host_write_if_done(&mut self) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0
            && self.to_host.is_empty()
            && !self.host_write_shut
        {
            // An error means the socket is already shut or gone: nothing to do either way.
            let _ = self.stream.shutdown(Shutdown::Write);
            self.host_write_shut = true;
        }
    }

    /// The host will read no more: drop what waits for it and tell the guest (SHUTDOWN RCV).
    fn host_stopped_receiving(&mut self) {
        let dropped = self.to_host.len();
        self.to_host.clear();
        self.fwd_cnt += u32::try_from(dropped).unwrap_or(0);
        self.local_shutdown |= SHUTDOWN_RCV;
    }

    /// Schedules a CREDIT_UPDATE if the guest may be starved of credit we have freed.
    fn maybe_offer_credit(&mut self) {
        if self.state != ConnState::Established || self.peer_shutdown & SHUTDOWN_SEND != 0 {
            return;
        }
        let unacknowledged = (self.rx_cnt - self.last_fwd_cnt_sent).0;
        let free_known_to_guest = CONN_BUF_ALLOC.saturating_sub(unacknowledged);
        let freed_since_told = (self.fwd_cnt - self.last_fwd_cnt_sent).0;
        let drained = self.rx_cnt == self.fwd_cnt;
        if free_known_to_guest < CREDIT_UPDATE_THRESHOLD
            && (freed_since_told >= CREDIT_UPDATE_MIN_GAIN || (drained && freed_since_told > 0))
        {
            self.credit_update_pending = true;
        }
    }

    fn on_peer_shutdown(&mut self, flags: u32, now: Instant) -> ConnStatus {
        self.peer_shutdown |= flags & SHUTDOWN_BOTH;
        if self.peer_shutdown & SHUTDOWN_RCV != 0 {
            // The host's writes now fail, as the guest reads no more. Errors: already shut.
            let _ = self.stream.shutdown(Shutdown::Read);
            self.host_readable = false;
        }
        self.shut_host_write_if_done();
        if self.peer_shutdown == SHUTDOWN_BOTH {
            if self.to_host.is_empty() {
                return ConnStatus::Reset;
            }
            self.state = ConnState::Draining;
            self.deadline = Some(now + CLOSE_TIMEOUT);
        }
        ConnStatus::Alive
    }

    /// Handles readiness (or hang-up) of the host socket; spurious events are harmless.
    pub(super) fn handle_host_event(&mut self, events: EventSet) -> ConnStatus {
        let hangup = events.intersects(EventSet::HANG_UP | EventSet::ERROR);
        match self.state {
            ConnState::Connecting { request_sent } => {
                // The host gave up before the guest answered.
                return match (hangup, request_sent) {
                    (false, _) => ConnStatus::Alive,
                    (true, true) => ConnStatus::Reset,
                    (true, false) => ConnStatus::Closed,
                };
            }
            ConnState::Closing => return ConnStatus::Alive,
            ConnState::Established | ConnState::Draining => {}
        }
        if events.contains(EventSet::OUT) || hangup {
            let status = self.flush_to_host();
            if status != ConnStatus::Alive {
                return status;
            }
        }
        if (events.contains(EventSet::IN) || hangup) && self.can_send_data() {
            self.host_readable = true;
        }
        if hangup {
            self.host_hung_up = true;
            // The host closed (or both directions are shut): it reads no more. What it wrote
            // before is still read to end of file, after which we also shut SEND.
            self.host_stopped_receiving();
            if !self.can_send_data() {
                self.local_shutdown |= SHUTDOWN_SEND;
            }
        }
        ConnStatus::Alive
    }

    /// Whether the connection has something for the guest's rx queue.
    pub(super) fn wants_rx(&self) -> bool {
        match self.state {
            ConnState::Connecting { request_sent } => !request_sent,
            _ => {
                self.response_pending
                    || self.credit_update_pending
                    || self.local_shutdown != self.local_shutdown_sent
                    || (self.can_send_data()
                        && self.host_readable
                        && (self.peer_credit() > 0 || !self.credit_request_sent))
            }
        }
    }

    /// Produces the next packet for the guest; payload goes into `buf` (the rx buffer's data
    /// capacity, at most [`MAX_PKT_PAYLOAD`] is used).
    pub(super) fn next_rx(&mut self, buf: &mut [u8], now: Instant) -> RxOutcome {
        match self.state {
            ConnState::Connecting {
                request_sent: false,
            } => {
                self.state = ConnState::Connecting { request_sent: true };
                return self.packet(OP_REQUEST, 0, 0);
            }
            ConnState::Connecting { request_sent: true } => return RxOutcome::Nothing,
            _ => {}
        }
        if self.response_pending {
            self.response_pending = false;
            return self.packet(OP_RESPONSE, 0, 0);
        }
        if self.can_send_data() && self.host_readable {
            let credit = self.peer_credit();
            if credit == 0 {
                if !self.credit_request_sent {
                    self.credit_request_sent = true;
                    return self.packet(OP_CREDIT_REQUEST, 0, 0);
                }
            } else {
                let want = usize::try_from(credit.min(MAX_PKT_PAYLOAD))
                    .unwrap_or(0)
                    .min(buf.len());
                if let Some(dst) = buf.get_mut(..want).filter(|dst| !dst.is_empty()) {
                    match (&self.stream).read(dst) {
                        Ok(0) => {
                            self.host_readable = false;
                            self.local_shutdown |= SHUTDOWN_SEND;
                        }
                        Ok(read) => {
                            if read < want && !self.host_hung_up {
                                // Probably drained; epoll says when there is more. After a
                                // hang-up we read on to end of file instead, so one SHUTDOWN
                                // carries both flags.
                                self.host_readable = false;
                            }
                            let len = u32::try_from(read.min(want)).unwrap_or(0);
                            self.tx_cnt += len;
                            return self.packet(OP_RW, 0, len);
                        }
                        Err(err) if is_transient(&err) => self.host_readable = false,
                        Err(_) => return RxOutcome::Reset,
                    }
                }
            }
        }
        if self.local_shutdown != self.local_shutdown_sent {
            self.local_shutdown_sent = self.local_shutdown;
            if self.local_shutdown == SHUTDOWN_BOTH && self.state == ConnState::Established {
                self.state = ConnState::Closing;
                self.deadline = Some(now + CLOSE_TIMEOUT);
            }
            return self.packet(OP_SHUTDOWN, self.local_shutdown, 0);
        }
        if self.credit_update_pending {
            return self.packet(OP_CREDIT_UPDATE, 0, 0);
        }
        RxOutcome::Nothing
    }

    /// Every packet carries our `fwd_cnt`, which makes a pending CREDIT_UPDATE redundant.
    fn packet(&mut self, op: u16, flags: u32, len: u32) -> RxOutcome {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.credit_update_pending = false;
        RxOutcome::Packet { op, flags, len }
    }

    /// What the event loop should watch on the host socket (`None`: nothing, unregister).
    pub(super) fn interest(&self) -> Option<EventSet> {
        match self.state {
            // Only hang-ups, which epoll always reports: the host giving up.
            ConnState::Connecting { .. } => Some(EventSet::empty()),
            ConnState::Closing => None,
            ConnState::Established | ConnState::Draining => {
                let mut events = EventSet::empty();
                if self.can_send_data() && !self.host_readable {
                    events |= EventSet::IN;
                }
                if !self.to_host.is_empty() {
                    events |= EventSet::OUT;
                }
                let watch_hangup = self.local_shutdown & SHUTDOWN_RCV == 0;
                if events.is_empty() && !watch_hangup {
                    None
                } else {
                    Some(events)
                }
            }
        }
    }

    /// Acts on the deadline if it has passed.
    pub(super) fn on_deadline(&mut self, now: Instant) -> ConnStatus {
        match self.deadline {
            Some(deadline) if deadline <= now => self.deadline = None,
            _ => return ConnStatus::Alive,
        }
        match self.state {
            ConnState::Connecting { request_sent: true } => ConnStatus::Reset,
            ConnState::Connecting {
                request_sent: false,
            } => ConnStatus::Closed,
            ConnState::Closing | ConnState::Draining => ConnStatus::Reset,
            ConnState::Established => ConnStatus::Alive,
        }
    }

    /// Bytes waiting for the host socket.
    #[cfg(test)]
    pub(super) fn buffered_for_host(&self) -> usize {
        self.to_host.len()
    }
}

/// Errors after which the socket is merely not ready.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Writes to a socket without blocking and without SIGPIPE when the peer is gone.
fn send_nosignal(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, initialised slice for reads of `buf.len()` bytes, and the fd is
    // owned by `stream`, which outlives the call. send(2) does not retain the pointer.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}
