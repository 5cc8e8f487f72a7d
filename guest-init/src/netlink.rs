//! A small synchronous rtnetlink client, the one both sides use: the host wires a
//! container's interfaces to taps with it, guest-init applies the guest's network with it.
//! One request at a time, answered by an ack, one reply, or a dump. Replies are read into
//! one bounded buffer (a datagram that does not fit is an error, never a silent
//! truncation), only the kernel's datagrams count, and in them only the messages carrying
//! this socket's port and the request's sequence number (anything else, such as the rest of
//! an abandoned dump, is skipped), a dump holds at most [`MAX_DUMP`] messages and is
//! retried when the kernel marks it inconsistent, and every read waits at most [`TIMEOUT`].
//! The kernel's extended ack text ("TC classifier not found") is kept with its errno.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use netlink_packet_core::{
    NLA_TYPE_MASK, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_MULTIPART, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The most messages one dump may hold.
pub const MAX_DUMP: usize = 4096;
/// How long one read waits for the kernel.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The receive buffer: the kernel's dump datagrams are at most 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;
/// The most datagrams one exchange reads before giving up (skipped ones included).
const MAX_DATAGRAMS: usize = 2 * MAX_DUMP;
/// How many times a dump the kernel marks inconsistent (`NLM_F_DUMP_INTR`) is retried.
const DUMP_RETRIES: usize = 3;
/// The netlink header's length.
const HEADER_LEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// The longest extended ack text kept.
const MAX_ACK_TEXT: usize = 256;

/// Why an rtnetlink exchange failed. Each message is one line.
#[derive(Debug)]
pub enum NetlinkError {
    /// The socket could not be made or set up.
    Socket(io::Error),
    /// The request could not be sent.
    Send(io::Error),
    /// A reply could not be read.
    Recv(io::Error),
    /// The kernel did not answer in time.
    Timeout,
    /// A reply datagram larger than the buffer.
    Truncated(usize),
    /// A reply that does not parse.
    Malformed(String),
    /// A dump longer than [`MAX_DUMP`] messages, or an exchange longer than its bound.
    TooMany,
    /// The dump kept changing while it was read.
    Interrupted,
    /// The kernel refused the request.
    Kernel {
        /// The errno (positive).
        errno: i32,
        /// The extended ack's text, if the kernel gave one.
        message: Option<String>,
    },
}

impl NetlinkError {
    /// The errno of a kernel refusal (or of a failed socket call).
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Socket(e) | NetlinkError::Send(e) | NetlinkError::Recv(e) => {
                e.raw_os_error()
            }
            _ => None,
        }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkError::Socket(e) => write!(f, "netlink socket: {e}"),
            NetlinkError::Send(e) => write!(f, "netlink send: {e}"),
            NetlinkError::Recv(e) => write!(f, "netlink receive: {e}"),
            NetlinkError::Timeout => {
                write!(
                    f,
                    "the kernel did not answer within {} s",
                    TIMEOUT.as_secs()
                )
            }
            NetlinkError::Truncated(len) => {
                write!(
                    f,
                    "a netlink reply of {len} bytes does not fit the receive buffer"
                )
            }
            NetlinkError::Malformed(why) => write!(f, "malformed netlink reply: {why}"),
            NetlinkError::TooMany => {
                write!(f, "more than {MAX_DUMP} netlink messages in one answer")
            }
            NetlinkError::Interrupted => {
                write!(f, "the kernel's list kept changing while it was read")
            }
            NetlinkError::Kernel { errno, message } => {
                write!(f, "{}", io::Error::from_raw_os_error(*errno))?;
                match message {
                    Some(m) => write!(f, ": {m}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for NetlinkError {}

/// An rtnetlink socket of the network namespace of the thread that opened it.
pub struct Netlink {
    socket: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.socket.as_raw_fd())
            .field("port", &self.port)
            .field("seq", &self.seq)
            .finish()
    }
}

impl Netlink {
    /// Opens and binds a socket, with extended acks, capped acks and a read timeout.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        let addr = socket.bind_auto().map_err(NetlinkError::Socket)?;
        // Both are best effort: older kernels answer without the text or with the request.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        set_recv_timeout(&socket, Some(TIMEOUT)).map_err(NetlinkError::Socket)?;
        Ok(Netlink {
            socket,
            port: addr.port_number(),
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Sends a request that changes something (`flags` adds `NLM_F_CREATE` and the like)
    /// and waits for the kernel's ack.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NetlinkError> {
        self.exchange(msg, NLM_F_ACK | flags).map(drop)
    }

    /// Sends a request that the kernel answers with one message (a `GET` of one object).
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> Result<RouteNetlinkMessage, NetlinkError> {
        self.exchange(msg, 0)?
            .into_iter()
            .next()
            .ok_or_else(|| NetlinkError::Malformed("an empty answer to a get".into()))
    }

    /// Dumps a list (links, addresses, routes, qdiscs...), retrying a few times if the
    /// kernel says it changed during the dump.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_RETRIES {
            match self.exchange(msg.clone(), NLM_F_DUMP) {
                Err(NetlinkError::Interrupted) => continue,
                other => return other,
            }
        }
        Err(NetlinkError::Interrupted)
    }

    /// Sends `msg` and reads until its answer is complete: an ack or error, the end of a
    /// dump, or (without `NLM_F_ACK` or `NLM_F_DUMP`) one reply.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.send(msg, flags)?;
        let single = flags & (NLM_F_ACK | NLM_F_DUMP) == 0;
        let mut out = Vec::new();
        let mut interrupted = false;
        for _ in 0..MAX_DATAGRAMS {
            let len = self.recv()?;
            for part in split(&self.buf[..len]) {
                let part = part?;
                let header = NetlinkBuffer::new(part);
                if header.sequence_number() != seq || header.port_number() != self.port {
                    continue;
                }
                interrupted |= header.flags() & NLM_F_DUMP_INTR != 0;
                match header.message_type() {
                    NLMSG_NOOP => continue,
                    NLMSG_OVERRUN => return Err(NetlinkError::Malformed("overrun".into())),
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = end_code(part)?;
                        if code != 0 {
                            let message = ack_text(header.flags(), &part[HEADER_LEN + 4..]);
                            return Err(NetlinkError::Kernel {
                                errno: code.saturating_abs(),
                                message,
                            });
                        }
                        if interrupted {
                            return Err(NetlinkError::Interrupted);
                        }
                        return Ok(out);
                    }
                    _ => {}
                }
                let multipart = header.flags() & NLM_F_MULTIPART != 0;
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(part)
                    .map_err(|e| NetlinkError::Malformed(e.to_string()))?;
                if let NetlinkPayload::InnerMessage(inner) = parsed.payload {
                    if out.len() >= MAX_DUMP {
                        return Err(NetlinkError::TooMany);
                    }
                    out.push(inner);
                }
                if single && !multipart {
                    return Ok(out);
                }
            }
        }
        Err(NetlinkError::TooMany)
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        let sent = self
            .socket
            .send_to(&bytes, &SocketAddr::new(0, 0), 0)
            .map_err(NetlinkError::Send)?;
        if sent != bytes.len() {
            return Err(NetlinkError::Send(io::Error::other("short send")));
        }
        Ok(self.seq)
    }

    /// Reads one datagram from the kernel into the buffer; others' datagrams are dropped.
    fn recv(&mut self) -> Result<usize, NetlinkError> {
        for _ in 0..MAX_DATAGRAMS {
            let (len, from) = match self
                .socket
                .recv_from(&mut &mut self.buf[..], libc::MSG_TRUNC)
            {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NetlinkError::Timeout);
                }
                Err(e) => return Err(NetlinkError::Recv(e)),
            };
            if len > self.buf.len() {
                return Err(NetlinkError::Truncated(len));
            }
            if from.port_number() == 0 {
                return Ok(len);
            }
        }
        Err(NetlinkError::TooMany)
    }
}

/// Sets a socket's receive timeout (`SO_RCVTIMEO`); `None` (or a zero duration) blocks.
pub fn set_recv_timeout(socket: &impl AsFd, timeout: Option<Duration>) -> io::Result<()> {
    let timeout = timeout.unwrap_or(Duration::ZERO);
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from `tv`, a live timeval we
    // own, on a descriptor the borrow keeps open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Splits a datagram into its messages, checking each length against what is left.
fn split(mut data: &[u8]) -> impl Iterator<Item = Result<&[u8], NetlinkError>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let len = data
            .get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match len {
            Some(len) if (HEADER_LEN..=data.len()).contains(&len) => {
                let part = &data[..len];
                data = &data[len.next_multiple_of(4).min(data.len())..];
                Some(Ok(part))
            }
            _ => {
                let left = data.len();
                data = &[];
                Some(Err(NetlinkError::Malformed(format!(
                    "a message length that does not fit the {left} bytes left"
                ))))
            }
        }
    })
}

/// The code of an `NLMSG_ERROR` (0 is an ack) or `NLMSG_DONE` message (a dump's end, or
/// its failure), as a negative errno.
fn end_code(part: &[u8]) -> Result<i32, NetlinkError> {
    match part.get(HEADER_LEN..HEADER_LEN + 4) {
        Some(b) => Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        // A bare NLMSG_DONE without a code is a clean end.
        None if NetlinkBuffer::new(part).message_type() == NLMSG_DONE => Ok(0),
        None => Err(NetlinkError::Malformed("a short error message".into())),
    }
}

/// The extended ack's text after an error's code: the echoed request (its header alone when
/// capped), then attributes, of which `NLMSGERR_ATTR_MSG` is the text.
fn ack_text(flags: u16, after_code: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else {
        let b = after_code.get(..4)?;
        (u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize).next_multiple_of(4)
    };
    let attrs = after_code.get(echoed..)?;
    NlasIterator::new(attrs)
        .map_while(Result::ok)
        .find(|nla| nla.kind() & NLA_TYPE_MASK == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let text = nla.value().split(|&b| b == 0).next().unwrap_or_default();
            let text = &text[..text.len().min(MAX_ACK_TEXT)];
            String::from_utf8_lossy(text).into_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32, kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&9u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    /// An `NLMSGERR_ATTR_MSG` attribute carrying `text` (NUL-terminated, padded).
    fn text_attribute(text: &[u8]) -> Vec<u8> {
        let mut a = ((4 + text.len()) as u16).to_ne_bytes().to_vec();
        a.extend(NLMSGERR_ATTR_MSG.to_ne_bytes());
        a.extend(text);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    #[test]
    fn datagrams_split_into_their_messages() {
        let mut data = message(20, NLMSG_DONE, &[0; 4]);
        data.extend(message(17, NLMSG_NOOP, &[1, 0, 0, 0]));
        data.extend(message(16, NLMSG_NOOP, &[]));
        let parts: Vec<_> = split(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), 20);
        assert_eq!(parts[1].len(), 17);
        // The second message's padding is skipped: the third starts on its 4-byte boundary.
        assert_eq!(parts[2], &message(16, NLMSG_NOOP, &[])[..]);
    }

    #[test]
    fn bad_lengths_are_malformed_not_loops() {
        for len in [0u32, 15, 4096] {
            let data = message(len, NLMSG_DONE, &[0; 4]);
            let parts: Vec<_> = split(&data).collect();
            assert_eq!(parts.len(), 1);
            assert!(matches!(parts[0], Err(NetlinkError::Malformed(_))));
        }
        assert!(split(&[1, 2]).next().unwrap().is_err());
    }

    #[test]
    fn error_codes_and_ack_text_are_read() {
        let mut body = (-2i32).to_ne_bytes().to_vec();
        body.extend(message(16, 44, &[])); // the capped echo of the request
        body.extend(text_attribute(b"TC classifier not found\0"));
        let part = message(16 + body.len() as u32, NLMSG_ERROR, &body);
        assert_eq!(end_code(&part).unwrap(), -2);
        let after = &part[HEADER_LEN + 4..];
        assert_eq!(
            ack_text(NLM_F_ACK_TLVS | NLM_F_CAPPED, after).as_deref(),
            Some("TC classifier not found")
        );
        assert_eq!(ack_text(NLM_F_CAPPED, after), None);
        let err = NetlinkError::Kernel {
            errno: 2,
            message: ack_text(NLM_F_ACK_TLVS | NLM_F_CAPPED, after),
        };
        assert_eq!(err.errno(), Some(2));
        assert!(
            err.to_string()
                .ends_with("(os error 2): TC classifier not found")
        );
        assert_eq!(end_code(&message(16, NLMSG_DONE, &[])).unwrap(), 0);
        assert!(end_code(&message(16, NLMSG_ERROR, &[])).is_err());
    }

    #[test]
    fn ack_text_follows_a_whole_echoed_request_when_not_capped() {
        // The uncapped echo: the request's header and its 8-byte body, then the text.
        let mut after = message(24, 16, &[0; 8]);
        after.extend(text_attribute(b"bad gw\0"));
        assert_eq!(ack_text(NLM_F_ACK_TLVS, &after).as_deref(), Some("bad gw"));
        // Read as capped, the body is taken for attributes: no text, no panic.
        assert_eq!(ack_text(NLM_F_ACK_TLVS | NLM_F_CAPPED, &after), None);
        // An echo cut short has no text either.
        assert_eq!(ack_text(NLM_F_ACK_TLVS, &after[..2]), None);
    }

    #[test]
    fn long_ack_text_is_cut() {
        let long = vec![b'x'; 2 * MAX_ACK_TEXT];
        let mut after = message(16, 44, &[]);
        after.extend(text_attribute(&long));
        let text = ack_text(NLM_F_ACK_TLVS | NLM_F_CAPPED, &after).unwrap();
        assert_eq!(text.len(), MAX_ACK_TEXT);
    }

    #[test]
    fn messages_are_one_line() {
        let all = [
            NetlinkError::Socket(io::Error::from_raw_os_error(libc::EPERM)),
            NetlinkError::Send(io::Error::other("short send")),
            NetlinkError::Recv(io::Error::from_raw_os_error(libc::ENOBUFS)),
            NetlinkError::Timeout,
            NetlinkError::Truncated(70000),
            NetlinkError::Malformed("overrun".into()),
            NetlinkError::TooMany,
            NetlinkError::Interrupted,
            NetlinkError::Kernel {
                errno: libc::EEXIST,
                message: None,
            },
        ];
        for e in &all {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
        }
        assert_eq!(all[0].errno(), Some(libc::EPERM));
        assert_eq!(all[3].errno(), None);
        assert_eq!(
            all[3].to_string(),
            format!("the kernel did not answer within {} s", TIMEOUT.as_secs())
        );
    }

    #[test]
    fn receive_timeouts_are_set_and_cleared() {
        let socket = Socket::new(NETLINK_ROUTE).unwrap();
        let read = || {
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let mut len = size_of::<libc::timeval>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `tv`, a timeval we own.
            let rc = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw mut tv).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            (tv.tv_sec, tv.tv_usec)
        };
        set_recv_timeout(&socket, Some(Duration::from_millis(1500))).unwrap();
        assert_eq!(read(), (1, 500_000));
        set_recv_timeout(&socket, None).unwrap();
        assert_eq!(read(), (0, 0));
    }
}
