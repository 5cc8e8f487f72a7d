use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Instant;

use guest_init::portfwd::{LISTENERS_PORT, MAX_FORWARDED, TARGET_LEN};
use guest_init::protocol::write_frame;

use super::listener::{HostListener, bind_tcp};
use super::*;
use crate::devices::virtio::vsock::{HostRequest, handle_pair};

const PATIENCE: Duration = Duration::from_secs(2);

fn target(addr: &str, port: u16) -> Target {
    Target {
        addr: addr.parse().unwrap(),
        port,
    }
}

/// A port of 127.0.0.1 nobody listens on (the kernel's pick, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until connecting to `127.0.0.1:port` succeeds (`true`) or is refused (`false`).
fn wait_until_listening(port: u16, listening: bool) -> Option<TcpStream> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) if listening => return Some(stream),
            Err(_) if !listening => return None,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "port {port}: still not {listening}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Plays the guest's end of one forwarded connection: checks the target, reads the request
/// to its end, answers and closes.
fn serve_as_guest(mut guest: UnixStream, expected: Target) {
    guest.set_nonblocking(false).unwrap();
    guest.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut head = [0u8; TARGET_LEN];
    guest.read_exact(&mut head).unwrap();
    assert_eq!(Target::decode(&head), Some(expected));
    let mut request = Vec::new();
    guest.read_to_end(&mut request).unwrap();
    guest.write_all(b"answer to ").unwrap();
    guest.write_all(&request).unwrap();
}

/// Sends `request`, closes writing, and returns the whole answer.
fn ask(mut client: TcpStream, request: &[u8]) -> Vec<u8> {
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(request).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    answer
}

#[test]
fn reconcile_binds_new_listeners_stops_gone_ones_and_warns_once() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    struct Token(Target, Arc<Mutex<Vec<String>>>);
    impl Drop for Token {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(format!("stop {:?}", self.0));
        }
    }
    let taken = target("127.0.0.1", 81);
    let binds = log.clone();
    let mut published = Published::new(move |t: Target, v6only: bool| {
        binds.lock().unwrap().push(format!("bind {t:?} {v6only}"));
        if t == taken {
            return Err(io::Error::from(io::ErrorKind::AddrInUse));
        }
        Ok(Token(t, binds.clone()))
    });
    let mut step = |wanted: &[Target]| {
        let errors: Vec<String> = published
            .reconcile(wanted)
            .iter()
            .map(ToString::to_string)
            .collect();
        (errors, std::mem::take(&mut *log.lock().unwrap()))
    };
    let (any4, any6) = (target("0.0.0.0", 80), target("::", 80));

    let (errors, ops) = step(&[any4, taken]);
    assert_eq!(
        errors,
        vec![
            "the container listens on 127.0.0.1:81/tcp but the host cannot bind it: \
             address in use"
        ]
    );
    assert_eq!(
        ops,
        vec![
            format!("bind {any4:?} false"),
            format!("bind {taken:?} false")
        ]
    );

    // The same set: nothing bound again, no warning again.
    assert_eq!(step(&[any4, taken]), (vec![], vec![]));

    // [::]:80 beside 0.0.0.0:80 is IPv6-only.
    let (errors, ops) = step(&[any4, any6, taken]);
    assert!(errors.is_empty());
    assert_eq!(ops, vec![format!("bind {any6:?} true")]);

    // Without 0.0.0.0:80 it takes IPv4 too: bound again.
    let (errors, ops) = step(&[any6, taken]);
    assert!(errors.is_empty());
    assert_eq!(
        ops,
        vec![
            format!("stop {any4:?}"),
            format!("stop {any6:?}"),
            format!("bind {any6:?} false")
        ]
    );

    // Gone: stopped; a refused one that comes back is tried (and warned about) again.
    assert_eq!(step(&[]), (vec![], vec![format!("stop {any6:?}")]));
    let (errors, ops) = step(&[taken]);
    assert_eq!(errors.len(), 1);
    assert_eq!(ops, vec![format!("bind {taken:?} false")]);
}

#[test]
fn an_address_in_use_cannot_be_bound_twice() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let e = bind_tcp(target("127.0.0.1", port), false).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
}

/// A [`Connect`] that hands the guest's end of each connection to the test.
fn fake_guest() -> (Connect, mpsc::Receiver<UnixStream>) {
    let (send, receive) = mpsc::channel();
    let send = Mutex::new(send);
    let connect: Connect = Arc::new(move || {
        let (host, guest) = UnixStream::pair()?;
        send.lock()
            .unwrap()
            .send(guest)
            .map_err(|_| io::Error::from(io::ErrorKind::NotConnected))?;
        Ok(host)
    });
    (connect, receive)
}

#[test]
fn a_host_listener_forwards_its_clients_and_closes_promptly() {
    let port = free_port();
    let t = target("127.0.0.1", port);
    let (connect, guests) = fake_guest();
    let open = Arc::new(AtomicUsize::new(0));
    let listener = HostListener::start(t, false, connect, open.clone()).unwrap();

    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let guest = guests.recv_timeout(PATIENCE).unwrap();
    let guest_side = std::thread::spawn(move || serve_as_guest(guest, t));
    assert_eq!(ask(client, b"ping"), b"answer to ping");
    guest_side.join().unwrap();

    let started = Instant::now();
    drop(listener);
    assert!(started.elapsed() < Duration::from_millis(500));
    wait_until_listening(port, false);
    // The port is free again: the socket is closed, not just shut down.
    drop(bind_tcp(t, false).unwrap());
    let deadline = Instant::now() + PATIENCE;
    while open.load(Ordering::Acquire) != 0 {
        assert!(
            Instant::now() < deadline,
            "a forwarded connection is still counted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn clients_beyond_the_bound_are_closed_at_once() {
    let port = free_port();
    let (connect, guests) = fake_guest();
    let open = Arc::new(AtomicUsize::new(MAX_FORWARDED));
    let _listener = HostListener::start(target("127.0.0.1", port), false, connect, open).unwrap();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(client.read(&mut buf), Ok(0) | Err(_)));
    assert!(guests.try_recv().is_err());
}

#[test]
fn the_publisher_follows_the_guests_reports_and_stops_on_a_bad_one() {
    let (parts, handle) = handle_pair().unwrap();
    let listener = handle.listen(LISTENERS_PORT).unwrap();
    let publisher = serve(listener, handle.clone()).unwrap();
    let (mut report, host_end) = UnixStream::pair().unwrap();
    parts.listeners.lock().unwrap()[&LISTENERS_PORT]
        .send(host_end)
        .unwrap();

    let (first, second) = (free_port(), free_port());
    let (t1, t2) = (target("127.0.0.1", first), target("127.0.0.1", second));
    write_frame(&mut report, &Listening { tcp: vec![] }).unwrap();
    write_frame(&mut report, &Listening { tcp: vec![t1, t2] }).unwrap();
    let client = wait_until_listening(first, true).unwrap();
    let HostRequest::Connect {
        peer_port, stream, ..
    } = parts.requests.recv_timeout(PATIENCE).unwrap();
    assert_eq!(peer_port, FORWARD_PORT);
    let guest_side = std::thread::spawn(move || serve_as_guest(stream, t1));
    assert_eq!(ask(client, b"hello"), b"answer to hello");
    guest_side.join().unwrap();

    // The first one is gone from the guest: closed on the host, the second one stays.
    write_frame(&mut report, &Listening { tcp: vec![t2] }).unwrap();
    wait_until_listening(first, false);
    assert!(wait_until_listening(second, true).is_some());

    // A listener on port 0 breaks the rules: publishing ends, the host listeners close.
    let bad = Listening {
        tcp: vec![target("0.0.0.0", 0)],
    };
    write_frame(&mut report, &bad).unwrap();
    wait_until_listening(second, false);
    drop(parts.requests.try_recv());
    let started = Instant::now();
    drop(publisher);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[test]
fn dropping_the_publisher_closes_its_listeners() {
    let (parts, handle) = handle_pair().unwrap();
    // Before the guest connects.
    let publisher = serve(handle.listen(LISTENERS_PORT).unwrap(), handle.clone()).unwrap();
    let started = Instant::now();
    drop(publisher);
    assert!(started.elapsed() < Duration::from_millis(500));

    // While it publishes.
    let publisher = serve(handle.listen(LISTENERS_PORT).unwrap(), handle.clone()).unwrap();
    let (mut report, host_end) = UnixStream::pair().unwrap();
    parts.listeners.lock().unwrap()[&LISTENERS_PORT]
        .send(host_end)
        .unwrap();
    let port = free_port();
    let t = target("127.0.0.1", port);
    write_frame(&mut report, &Listening { tcp: vec![t] }).unwrap();
    wait_until_listening(port, true);
    let started = Instant::now();
    drop(publisher);
    assert!(started.elapsed() < Duration::from_millis(500));
    wait_until_listening(port, false);
}
