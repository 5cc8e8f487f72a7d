//! The host's end of the DNS relay ([`guest_init::dnsrelay`]): the container's resolv.conf
//! names a resolver on a loopback address of its network namespace (docker's embedded DNS
//! at 127.0.0.11 on user-defined networks), which the guest cannot reach. The guest relays
//! the queries to it over vsock; the sandbox, inside the namespace, sends each to the
//! resolver from a fresh UDP socket and relays the answer back.
//!
//! The guest is hostile: a frame must name one of the resolvers found here (nothing else on
//! the host's side is reachable through the relay), frames are bounded, and at most
//! [`MAX_IN_FLIGHT`] queries wait at once (more are dropped; the client asks again).

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_init::dnsrelay::{MAX_DNS_MESSAGE, RelayFrame};
use guest_init::netspec::MAX_DNS_RELAY;
use oci_spec::runtime::Spec;

use crate::devices::virtio::vsock::VsockListener;

/// Queries waiting for the resolver at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// How long the resolver may take to answer one query.
const ANSWER_PATIENCE: Duration = Duration::from_secs(5);
/// The most bytes of resolv.conf read.
const MAX_RESOLV_CONF: u64 = 64 << 10;

/// The loopback resolvers the container's resolv.conf names (the file the spec mounts on
/// /etc/resolv.conf; none without one).
pub fn loopback_resolvers(spec: &Spec) -> Vec<IpAddr> {
    let source = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination() == Path::new("/etc/resolv.conf"))
        .filter_map(|m| m.source().clone())
        .next_back();
    let Some(source) = source else {
        return Vec::new();
    };
    // Only a regular file is read (a FIFO named by a bad config.json would block create).
    if !std::fs::metadata(&source).is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    let text = std::fs::File::open(&source).and_then(|f| {
        let mut text = String::new();
        io::Read::read_to_string(&mut io::Read::take(f, MAX_RESOLV_CONF), &mut text)?;
        Ok(text)
    });
    text.map(|t| parse_loopback_nameservers(&t))
        .unwrap_or_default()
}

/// The `nameserver` lines of a resolv.conf whose address is a loopback one, at most
/// [`MAX_DNS_RELAY`], each once.
pub fn parse_loopback_nameservers(text: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if addr.is_loopback() && !found.contains(&addr) && found.len() < MAX_DNS_RELAY {
            found.push(addr);
        }
    }
    found
}

/// Serves the guest's relay connections on `listener` for `resolvers`, on a thread of
/// its own, for the sandbox's life.
pub fn serve(listener: VsockListener, resolvers: Vec<IpAddr>) {
    let spawned = std::thread::Builder::new()
        .name("dns-relay".into())
        .spawn(move || {
            let in_flight = Arc::new(AtomicUsize::new(0));
            while let Ok(conn) = listener.accept() {
                if conn.set_nonblocking(false).is_err() {
                    continue;
                }
                relay(conn, &resolvers, 53, &in_flight);
            }
        });
    if let Err(e) = spawned {
        eprintln!("runvm: warning: no DNS relay for the container: {e}");
    }
}

/// Relays one connection's queries (to `port` of the resolver) until the guest closes it
/// or breaks the framing.
fn relay(conn: UnixStream, resolvers: &[IpAddr], port: u16, in_flight: &Arc<AtomicUsize>) {
    let Ok(writer) = conn.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(writer));
    let mut reader = conn;
    while let Ok(Some(frame)) = RelayFrame::read_from(&mut reader) {
        if !resolvers.contains(&frame.resolver) {
            continue;
        }
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (writer, counter) = (writer.clone(), in_flight.clone());
        let spawned = std::thread::Builder::new()
            .name("dns-query".into())
            .spawn(move || {
                if let Ok(answer) = ask(SocketAddr::new(frame.resolver, port), &frame.message) {
                    let reply = RelayFrame {
                        message: answer,
                        ..frame
                    };
                    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = reply.write_to(&mut *w).and_then(|()| w.flush());
                }
                counter.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Sends `query` to `resolver` and returns its answer.
fn ask(resolver: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match resolver {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    }
    .parse()
    .map_err(io::Error::other)?;
    let socket = UdpSocket::bind(local)?;
    socket.connect(resolver)?;
    socket.set_read_timeout(Some(ANSWER_PATIENCE))?;
    socket.send(query)?;
    let mut buf = vec![0u8; MAX_DNS_MESSAGE];
    let len = socket.recv(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameservers_are_found() {
        let text = "search example.org\nnameserver 127.0.0.11\noptions ndots:0\n\
                    nameserver 10.0.0.1\nnameserver ::1\nnameserver 127.0.0.11\n# nameserver 127.0.0.2\n";
        let found = parse_loopback_nameservers(text);
        assert_eq!(
            found,
            vec![
                "127.0.0.11".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert!(parse_loopback_nameservers("nameserver 8.8.8.8\n").is_empty());
    }

    #[test]
    fn queries_reach_the_resolver_and_answers_come_back_others_are_dropped() {
        // A fake resolver answering every query with the query and "-answer".
        let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = resolver.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = resolver.recv_from(&mut buf) {
                let mut answer = buf[..n].to_vec();
                answer.extend_from_slice(b"-answer");
                let _ = resolver.send_to(&answer, from);
            }
        });
        let (mut guest, host) = UnixStream::pair().unwrap();
        let resolvers = vec!["127.0.0.1".parse().unwrap()];
        let in_flight = Arc::new(AtomicUsize::new(0));
        let t = std::thread::spawn(move || relay(host, &resolvers, port, &in_flight));
        // A resolver the host did not name: dropped, never answered.
        let elsewhere = RelayFrame {
            id: 1,
            resolver: "127.0.0.2".parse().unwrap(),
            message: b"nope".to_vec(),
        };
        elsewhere.write_to(&mut guest).unwrap();
        let query = RelayFrame {
            id: 2,
            resolver: "127.0.0.1".parse().unwrap(),
            message: b"query".to_vec(),
        };
        query.write_to(&mut guest).unwrap();
        guest
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let answer = RelayFrame::read_from(&mut guest).unwrap().unwrap();
        assert_eq!(answer.id, 2);
        assert_eq!(answer.message, b"query-answer");
        // Garbage ends the relay of this connection.
        guest.write_all(&[0, 0, 0, 0, 9]).unwrap();
        t.join().unwrap();
    }
}
