//! The guest's end of the DNS relay. A resolver on a loopback address of the container's
//! network namespace (docker's embedded DNS at 127.0.0.11) is not in the guest, whose
//! loopback is its own: guest-init listens on that address's UDP port 53 in the guest and
//! carries each query over one vsock stream to the host (port [`DNS_RELAY_PORT`]), whose
//! sandbox asks the real resolver from inside the namespace and sends the answer back.
//!
//! On the stream each message is a [`RelayFrame`]: the query's relay id (the guest's own
//! number, which maps back to the client's address), the resolver's address, and the DNS
//! message. Frames are bounded by [`MAX_DNS_MESSAGE`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

/// The host vsock port the relay connects to.
pub const DNS_RELAY_PORT: u32 = 1030;
/// The largest DNS message relayed (EDNS's usual ceiling; UDP answers above it are cut by
/// the resolver anyway).
pub const MAX_DNS_MESSAGE: usize = 4096;
/// Queries in flight at once; older ones are forgotten when more arrive.
const MAX_IN_FLIGHT: usize = 256;

/// One relayed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayFrame {
    /// The guest's number for the query.
    pub id: u32,
    /// The resolver's address (a loopback address of the namespace).
    pub resolver: IpAddr,
    /// The DNS message.
    pub message: Vec<u8>,
}

impl RelayFrame {
    /// Writes the frame: id (4 bytes LE), address family (1: 4, 2: 6), the address, the
    /// message's length (2 bytes LE), the message.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        if self.message.len() > MAX_DNS_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "DNS message too large",
            ));
        }
        let mut buf = Vec::with_capacity(24 + self.message.len());
        buf.extend_from_slice(&self.id.to_le_bytes());
        match self.resolver {
            IpAddr::V4(a) => {
                buf.push(4);
                buf.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                buf.push(6);
                buf.extend_from_slice(&a.octets());
            }
        }
        buf.extend_from_slice(&(self.message.len() as u16).to_le_bytes());
        buf.extend_from_slice(&self.message);
        w.write_all(&buf)
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream. A bad family or an oversized
    /// length is InvalidData (the stream cannot be trusted past it).
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<RelayFrame>> {
        let mut head = [0u8; 5];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let id = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let resolver = match head[4] {
            4 => {
                let mut a = [0u8; 4];
                r.read_exact(&mut a)?;
                IpAddr::from(a)
            }
            6 => {
                let mut a = [0u8; 16];
                r.read_exact(&mut a)?;
                IpAddr::from(a)
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad address family",
                ));
            }
        };
        let mut len = [0u8; 2];
        r.read_exact(&mut len)?;
        let len = usize::from(u16::from_le_bytes(len));
        if len > MAX_DNS_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "DNS message too large",
            ));
        }
        let mut message = vec![0u8; len];
        r.read_exact(&mut message)?;
        Ok(Some(RelayFrame {
            id,
            resolver,
            message,
        }))
    }
}

/// Who asked: the relay id's client and the socket to answer on.
type Pending = Arc<Mutex<HashMap<u32, (SocketAddr, Arc<UdpSocket>)>>>;

/// The relay, once started: which resolver addresses it listens on.
#[derive(Default)]
pub struct Relay {
    started: Mutex<Vec<IpAddr>>,
    link: Mutex<Option<Link>>,
}

struct Link {
    stream: Arc<Mutex<std::fs::File>>,
    pending: Pending,
    next_id: Arc<Mutex<u32>>,
}

impl Relay {
    /// Listens on each of `resolvers` (port 53, UDP) not yet listened on; the first call
    /// connects the vsock stream to the host with `connect`.
    pub fn ensure(
        &self,
        resolvers: &[IpAddr],
        connect: impl FnOnce() -> io::Result<std::fs::File>,
    ) -> Result<(), String> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let new: Vec<IpAddr> = resolvers
            .iter()
            .filter(|a| !started.contains(a))
            .copied()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if link.is_none() {
            let stream = connect().map_err(|e| format!("cannot reach the DNS relay: {e}"))?;
            let reader = stream.try_clone().map_err(|e| format!("DNS relay: {e}"))?;
            let made = Link {
                stream: Arc::new(Mutex::new(stream)),
                pending: Arc::default(),
                next_id: Arc::default(),
            };
            let pending = made.pending.clone();
            std::thread::Builder::new()
                .name("dns-answers".into())
                .spawn(move || answers(reader, &pending))
                .map_err(|e| format!("DNS relay: {e}"))?;
            *link = Some(made);
        }
        let Some(link) = link.as_ref() else {
            return Err("DNS relay: no link".into());
        };
        for addr in new {
            let socket = UdpSocket::bind(SocketAddr::new(addr, 53))
                .map_err(|e| format!("cannot listen for DNS on {addr}:53: {e}"))?;
            let socket = Arc::new(socket);
            let (stream, pending, next_id) = (
                link.stream.clone(),
                link.pending.clone(),
                link.next_id.clone(),
            );
            std::thread::Builder::new()
                .name("dns-queries".into())
                .spawn(move || queries(addr, socket, &stream, &pending, &next_id))
                .map_err(|e| format!("DNS relay: {e}"))?;
            started.push(addr);
        }
        Ok(())
    }
}

/// Reads queries on `socket` and sends each to the host.
fn queries(
    resolver: IpAddr,
    socket: Arc<UdpSocket>,
    stream: &Mutex<std::fs::File>,
    pending: &Pending,
    next_id: &Mutex<u32>,
) {
    let mut buf = vec![0u8; MAX_DNS_MESSAGE];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let id = {
            let mut next = next_id.lock().unwrap_or_else(|p| p.into_inner());
            *next = next.wrapping_add(1);
            *next
        };
        {
            let mut map = pending.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_IN_FLIGHT {
                // The oldest ids are the smallest (modulo wrapping): forget them.
                let cutoff = id.wrapping_sub(MAX_IN_FLIGHT as u32 / 2);
                map.retain(|k, _| k.wrapping_sub(cutoff) < u32::MAX / 2);
            }
            map.insert(id, (from, socket.clone()));
        }
        let frame = RelayFrame {
            id,
            resolver,
            message: buf[..len].to_vec(),
        };
        let mut s = stream.lock().unwrap_or_else(|p| p.into_inner());
        if frame.write_to(&mut *s).is_err() {
            return;
        }
    }
}

/// Reads the host's answers and sends each to the client that asked.
fn answers(mut stream: std::fs::File, pending: &Pending) {
    while let Ok(Some(frame)) = RelayFrame::read_from(&mut stream) {
        let asker = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&frame.id);
        if let Some((client, socket)) = asker {
            let _ = socket.send_to(&frame.message, client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let f = RelayFrame {
            id: 7,
            resolver: "127.0.0.11".parse().unwrap(),
            message: b"\x12\x34query".to_vec(),
        };
        let mut buf = Vec::new();
        f.write_to(&mut buf).unwrap();
        let g = RelayFrame {
            id: 8,
            resolver: "::1".parse().unwrap(),
            message: vec![],
        };
        g.write_to(&mut buf).unwrap();
        let mut r = &buf[..];
        assert_eq!(RelayFrame::read_from(&mut r).unwrap(), Some(f));
        assert_eq!(RelayFrame::read_from(&mut r).unwrap(), Some(g));
        assert_eq!(RelayFrame::read_from(&mut r).unwrap(), None);

        let bad_family = [1u8, 0, 0, 0, 5, 0, 0];
        assert_eq!(
            RelayFrame::read_from(&mut &bad_family[..])
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
        let mut too_long = vec![1u8, 0, 0, 0, 4, 127, 0, 0, 11];
        too_long.extend_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            RelayFrame::read_from(&mut &too_long[..])
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
        let big = RelayFrame {
            id: 1,
            resolver: "127.0.0.11".parse().unwrap(),
            message: vec![0; MAX_DNS_MESSAGE + 1],
        };
        assert!(big.write_to(&mut Vec::new()).is_err());
    }
}
