//! A small synchronous rtnetlink client: one request at a time, each sent with NLM_F_ACK and
//! its NLMSG_ERROR answer checked, and dumps read up to NLMSG_DONE. Everything is bounded: one
//! receive buffer, [`MAX_DUMP`] messages per dump, [`REPLY_TIMEOUT`] per answer.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NLA_TYPE_MASK, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// The receive buffer: the kernel fills dump datagrams to at most 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;
/// The most messages one dump may return.
pub const MAX_DUMP: usize = 4096;
/// How long the kernel may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a dump interrupted by a concurrent change is restarted.
const DUMP_ATTEMPTS: usize = 3;
/// The most datagrams read while waiting for one answer (others' are skipped).
const MAX_DATAGRAMS: usize = 64 + MAX_DUMP;
/// The netlink message header's length.
const HEADER_LEN: usize = 16;
/// The extended-ack attribute carrying the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Why a netlink request failed.
#[derive(Debug)]
pub enum Error {
    /// The socket could not be opened, written or read.
    Io(io::Error),
    /// The kernel refused the request with this errno, and with extended acks said why.
    Kernel {
        /// The (positive) errno.
        errno: i32,
        /// The kernel's extended-ack message, if any.
        message: Option<String>,
    },
    /// The kernel's answer could not be decoded.
    Decode(String),
    /// A dump returned more than [`MAX_DUMP`] messages.
    TooLarge,
    /// A dump kept being interrupted by concurrent changes.
    Interrupted,
}

impl Error {
    /// The kernel's errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {
                write!(f, "no answer from the kernel")
            }
            Error::Io(e) => write!(f, "{e}"),
            Error::Kernel { errno, message } => {
                write!(f, "{}", io::Error::from_raw_os_error(*errno))?;
                match message {
                    Some(m) => write!(f, ": {m}"),
                    None => Ok(()),
                }
            }
            Error::Decode(e) => write!(f, "undecodable answer: {e}"),
            Error::TooLarge => write!(f, "more than {MAX_DUMP} entries"),
            Error::Interrupted => write!(f, "the list kept changing while read"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// An open NETLINK_ROUTE socket.
pub struct Netlink {
    socket: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens and binds a socket, asking for extended acks with capped echoes.
    pub fn open() -> Result<Self, Error> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        let port = socket.bind_auto()?.port_number();
        // Both are only refinements of the error answers: older kernels lack them.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        set_recv_timeout(&socket, REPLY_TIMEOUT)?;
        Ok(Self {
            socket,
            port,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Sends `message` with NLM_F_ACK and `flags` and waits for its acknowledgement.
    pub fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<(), Error> {
        let seq = self.send(message, NLM_F_ACK | flags)?;
        for _ in 0..MAX_DATAGRAMS {
            let mut done = None;
            self.receive(seq, |packet| {
                if let NetlinkPayload::Error(e) = &packet.payload {
                    done = Some(match e.code {
                        None => Ok(()),
                        Some(code) => Err(kernel_error(code.get(), packet.header.flags, &e.header)),
                    });
                }
                Ok(())
            })?;
            if let Some(result) = done {
                return result;
            }
        }
        Err(Error::Decode("no acknowledgement".into()))
    }

    /// Dumps the objects `message` asks for (NLM_F_DUMP); restarts an interrupted dump.
    pub fn dump(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        for _ in 0..DUMP_ATTEMPTS {
            match self.dump_once(message.clone())? {
                Some(all) => return Ok(all),
                None => continue,
            }
        }
        Err(Error::Interrupted)
    }

    /// One dump: its messages, or `None` if the kernel flagged it interrupted.
    fn dump_once(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> Result<Option<Vec<RouteNetlinkMessage>>, Error> {
        let seq = self.send(message, NLM_F_DUMP)?;
        let mut all = Vec::new();
        let mut interrupted = false;
        for _ in 0..MAX_DATAGRAMS {
            let mut done = false;
            self.receive(seq, |packet| {
                if packet.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match packet.payload {
                    NetlinkPayload::InnerMessage(inner) if !done => {
                        if all.len() == MAX_DUMP {
                            return Err(Error::TooLarge);
                        }
                        all.push(inner);
                    }
                    NetlinkPayload::Done(d) if d.code != 0 => {
                        return Err(kernel_error(d.code, 0, &[]));
                    }
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(kernel_error(e.raw_code(), packet.header.flags, &e.header));
                    }
                    NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => done = true,
                    _ => {}
                }
                Ok(())
            })?;
            if done {
                return Ok((!interrupted).then_some(all));
            }
        }
        Err(Error::TooLarge)
    }

    /// Sends `message` as a request with `flags`; returns its sequence number.
    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<u32, Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        let sent = self.socket.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
        if sent != bytes.len() {
            return Err(Error::Decode("short send".into()));
        }
        Ok(self.seq)
    }

    /// Reads one datagram and hands each of its messages answering `seq` to `each`.
    fn receive(
        &mut self,
        seq: u32,
        mut each: impl FnMut(NetlinkMessage<RouteNetlinkMessage>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let len = self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC)?;
        if len > self.buf.len() {
            return Err(Error::Decode(format!("a {len}-byte datagram")));
        }
        for raw in split(&self.buf[..len])? {
            if header_u32(raw, 8) != seq || header_u32(raw, 12) != self.port {
                continue;
            }
            let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw)
                .map_err(|e| Error::Decode(e.to_string()))?;
            each(packet)?;
        }
        Ok(())
    }
}

/// Sets SO_RCVTIMEO on `socket`.
fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the descriptor is the socket's own; the option value is a timeval we own, its
    // size given exactly.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The messages of one datagram, each cut to its own length.
fn split(mut data: &[u8]) -> Result<Vec<&[u8]>, Error> {
    let mut out = Vec::new();
    while data.len() >= HEADER_LEN {
        let len = header_u32(data, 0) as usize;
        if len < HEADER_LEN || len > data.len() {
            return Err(Error::Decode(format!("a message of {len} bytes")));
        }
        out.push(&data[..len]);
        data = &data[align4(len).min(data.len())..];
    }
    Ok(out)
}

/// The native-endian u32 at `offset` of a netlink header (the caller checked the length).
fn header_u32(raw: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&raw[offset..offset + 4]);
    u32::from_ne_bytes(word)
}

/// `len` rounded up to netlink's 4-byte alignment.
fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// The error for a NLMSG_ERROR (or NLMSG_DONE) code, with the extended-ack message found
/// after the echoed request in `echo` (`flags` are the error message's own).
fn kernel_error(code: i32, flags: u16, echo: &[u8]) -> Error {
    let message = (flags & NLM_F_ACK_TLVS != 0)
        .then(|| ext_ack_message(flags, echo))
        .flatten();
    Error::Kernel {
        errno: code.saturating_abs(),
        message,
    }
}

/// The NLMSGERR_ATTR_MSG text of an error's extended ack.
fn ext_ack_message(flags: u16, echo: &[u8]) -> Option<String> {
    let skip = if flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else if echo.len() >= HEADER_LEN {
        align4(header_u32(echo, 0) as usize)
    } else {
        return None;
    };
    let tlvs = echo.get(skip..)?;
    NlasIterator::new(tlvs)
        .map_while(Result::ok)
        .find(|nla| nla.kind() & NLA_TYPE_MASK == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let text = nla.value();
            let text = text.split(|b| *b == 0).next().unwrap_or(text);
            String::from_utf8_lossy(text).into_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32, seq: u32, tail: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&[2, 0, 0, 0]);
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(tail);
        m
    }

    #[test]
    fn datagrams_split_on_aligned_lengths() {
        let mut data = message(18, 1, &[1, 2, 0, 0]);
        data.extend(message(16, 2, &[]));
        let parts = split(&data).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 18);
        assert_eq!(header_u32(parts[1], 8), 2);
        assert!(split(&message(400, 1, &[])).is_err());
        assert!(split(&message(8, 1, &[])).is_err());
    }

    #[test]
    fn extended_ack_text_is_found_after_the_echo() {
        // A capped echo (one header), then NLMSGERR_ATTR_MSG "bad gw\0".
        let mut echo = message(40, 1, &[]);
        echo.extend_from_slice(&11u16.to_ne_bytes());
        echo.extend_from_slice(&1u16.to_ne_bytes());
        echo.extend_from_slice(b"bad gw\0\0");
        let e = kernel_error(-22, NLM_F_ACK_TLVS | NLM_F_CAPPED, &echo);
        assert_eq!(e.errno(), Some(22));
        assert!(e.to_string().ends_with("(os error 22): bad gw"), "{e}");
        // Without the TLV flag there is no text.
        assert!(!kernel_error(-22, 0, &echo).to_string().contains("bad gw"));
    }
}
