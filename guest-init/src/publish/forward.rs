//! The connections the host forwards to the container's listeners: guest-init listens on
//! vsock port [`FORWARD_PORT`](guest_init::portfwd::FORWARD_PORT); each connection starts
//! with the [`Target`] it is for ([`TARGET_LEN`] bytes), then carries the client's bytes.
//! guest-init connects to that listener (an unspecified address at the loopback address of
//! its family) and copies both ways until both directions have ended, passing a half-close
//! on (shutdown of writing when one direction reaches end of file).
//!
//! A connection that does not name a listener of the last set reported within
//! [`TARGET_PATIENCE`], or whose listener refuses it, is closed; at most
//! [`MAX_FORWARDED`](guest_init::portfwd::MAX_FORWARDED)
//! are open at once, more are closed at once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use guest_init::portfwd::{TARGET_LEN, Target};
use guest_init::splice::{COPY_STACK, Duplex, Slot, splice};

use super::Reported;
use crate::vsock;

/// How long the host may take to name the target of a connection.
const TARGET_PATIENCE: Duration = Duration::from_secs(5);
/// How long connecting to a listener in the guest may take.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// How long accepting pauses when the guest runs out of file descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Starts the thread that accepts the host's connections on `listener` and forwards each to
/// its target, if `reported` lists it.
pub fn spawn(listener: vsock::Listener, reported: Reported) -> io::Result<()> {
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let why = accept_loop(&listener, &reported);
            eprintln!("guest-init: stopped forwarding ports from the host: {why}");
        })
        .map(drop)
}

/// Accepts until the listener fails for good; returns why.
fn accept_loop(listener: &vsock::Listener, reported: &Reported) -> io::Error {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok(stream) => stream,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED) => continue,
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    std::thread::sleep(ACCEPT_BACKOFF);
                    continue;
                }
                _ => return e,
            },
        };
        let Some(slot) = Slot::take(&open) else {
            continue;
        };
        let reported = reported.clone();
        // A connection whose thread cannot start is closed with the closure.
        let _ = std::thread::Builder::new()
            .name("port-conn".into())
            .stack_size(COPY_STACK)
            .spawn(move || {
                let _slot = slot;
                forward(stream, &reported);
            });
    }
}

/// Serves one forwarded connection: reads its target, connects to it, copies.
fn forward<S: Duplex>(stream: S, reported: &Reported) {
    let Some(target) = read_target(&stream, TARGET_PATIENCE) else {
        return;
    };
    let listed = reported
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&target);
    if !listed {
        return;
    }
    let Ok(conn) = TcpStream::connect_timeout(&connect_addr(target), CONNECT_PATIENCE) else {
        return;
    };
    let _ = conn.set_nodelay(true);
    splice(stream, conn);
}

/// Where a connection for `target` goes: the listener's address, or for one bound to any
/// address the loopback address of its family.
pub fn connect_addr(target: Target) -> SocketAddr {
    let addr = match target.addr {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        addr => addr,
    };
    SocketAddr::new(addr, target.port)
}

/// Reads the [`TARGET_LEN`] bytes naming the target, within `patience`; `None` if they do
/// not come in time, the stream ends first, or they name no target.
fn read_target<S: Duplex>(stream: &S, patience: Duration) -> Option<Target> {
    let deadline = Instant::now() + patience;
    let mut buf = [0u8; TARGET_LEN];
    let mut got = 0;
    while got < TARGET_LEN {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
        if ready <= 0 {
            continue;
        }
        match stream.read_some(&mut buf[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Target::decode(&buf)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    use super::*;

    fn target(addr: &str, port: u16) -> Target {
        Target {
            addr: addr.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        assert_eq!(
            connect_addr(target("0.0.0.0", 80)),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(connect_addr(target("::", 80)), "[::1]:80".parse().unwrap());
        assert_eq!(
            connect_addr(target("127.0.0.11", 53)),
            "127.0.0.11:53".parse().unwrap()
        );
    }

    #[test]
    fn a_slow_short_or_bad_target_is_refused() {
        let (host, guest) = UnixStream::pair().unwrap();
        (&host).write_all(&[4, 127, 0]).unwrap();
        assert_eq!(read_target(&guest, Duration::from_millis(50)), None);
        drop(host);
        assert_eq!(read_target(&guest, Duration::from_secs(5)), None);

        let (host, guest) = UnixStream::pair().unwrap();
        (&host).write_all(&[9; TARGET_LEN]).unwrap();
        assert_eq!(read_target(&guest, Duration::from_secs(5)), None);

        let (host, guest) = UnixStream::pair().unwrap();
        let t = target("::1", 8080);
        let bytes = t.encode();
        (&host).write_all(&bytes[..7]).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            (&host).write_all(&bytes[7..]).unwrap();
            host
        });
        assert_eq!(read_target(&guest, Duration::from_secs(5)), Some(t));
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_connection_reaches_its_listener_and_half_close_is_passed_on() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        // The container's server: reads the whole request, then answers and closes.
        let served = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            let mut request = Vec::new();
            conn.read_to_end(&mut request).unwrap();
            conn.write_all(b"answer to ").unwrap();
            conn.write_all(&request).unwrap();
        });
        let reported: Reported = Arc::new(Mutex::new(vec![target("0.0.0.0", port)]));
        let (mut host, guest) = UnixStream::pair().unwrap();
        let forwarder = std::thread::spawn(move || forward(guest, &reported));
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        host.write_all(&target("0.0.0.0", port).encode()).unwrap();
        host.write_all(b"request").unwrap();
        host.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        host.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"answer to request");
        served.join().unwrap();
        forwarder.join().unwrap();
    }

    #[test]
    fn a_target_not_reported_is_closed() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let reported: Reported = Arc::new(Mutex::new(vec![target("127.0.0.2", port)]));
        let (mut host, guest) = UnixStream::pair().unwrap();
        host.write_all(&target("127.0.0.1", port).encode()).unwrap();
        forward(guest, &reported);
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(host.read_to_end(&mut rest).unwrap(), 0);
    }
}
