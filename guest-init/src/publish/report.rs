//! The TCP listeners of guest-init's network namespace, read from /proc/net/tcp and
//! /proc/net/tcp6 every [`SCAN_INTERVAL`] and reported to the host (a [`Listening`] frame)
//! whenever the set changes. The first set goes out right after connecting, even if empty.
//! Between scans the thread waits in poll on the stream, so a host that closes it (the host
//! never writes on it) ends the thread at once.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::PoisonError;
use std::time::Duration;

use guest_init::portfwd::{Listening, MAX_LISTENERS, Target};
use guest_init::protocol::write_frame;

use super::Reported;

/// How often the listeners are read.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// The state column of a socket in LISTEN (`TCP_LISTEN`).
const STATE_LISTEN: &str = "0A";
/// The tables read, IPv4 and IPv6 (a kernel without IPv6 has no second one).
const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// Starts the thread that reports to the host over `stream`, and records in `reported` each
/// set it sends.
pub fn spawn(stream: File, reported: Reported) -> io::Result<()> {
    std::thread::Builder::new()
        .name("port-report".into())
        .spawn(move || {
            let why = run(stream, &reported, scan, SCAN_INTERVAL);
            eprintln!("guest-init: stopped reporting listening ports to the host: {why}");
        })
        .map(drop)
}

/// Sends each new set `scan` finds, every `interval`, until the stream breaks; returns why
/// it stopped.
fn run<S: Write + AsRawFd>(
    mut stream: S,
    reported: &Reported,
    mut scan: impl FnMut() -> Listening,
    interval: Duration,
) -> String {
    let mut last: Option<Listening> = None;
    loop {
        let now = scan();
        if last.as_ref() != Some(&now) {
            // Recorded before the host can know of it: it may forward at once.
            *reported.lock().unwrap_or_else(PoisonError::into_inner) = now.tcp.clone();
            if let Err(e) = write_frame(&mut stream, &now) {
                return e.to_string();
            }
            last = Some(now);
        }
        if let Some(why) = closed_within(&stream, interval) {
            return why;
        }
    }
}

/// Waits `interval` for the stream to become readable, which for this stream means the host
/// closed it (or broke the protocol by writing): then says why.
fn closed_within(stream: &impl AsRawFd, interval: Duration) -> Option<String> {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(interval.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is a valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
    if ready < 0 {
        let e = io::Error::last_os_error();
        return (e.kind() != io::ErrorKind::Interrupted).then(|| e.to_string());
    }
    (ready > 0).then(|| "the host closed the connection".to_string())
}

/// The listeners of guest-init's network namespace now.
fn scan() -> Listening {
    let tables: Vec<String> = TABLES
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect();
    listening(tables.iter().map(String::as_str))
}

/// The set of listeners in the text of /proc/net/tcp-style tables: sorted, without
/// duplicates (SO_REUSEPORT groups), at most [`MAX_LISTENERS`] (the lowest ports kept).
pub fn listening<'a>(tables: impl IntoIterator<Item = &'a str>) -> Listening {
    let mut tcp: Vec<Target> = tables
        .into_iter()
        .flat_map(str::lines)
        .filter_map(parse_listener)
        .collect();
    tcp.sort_by_key(|t| (t.port, t.addr));
    tcp.dedup();
    tcp.truncate(MAX_LISTENERS);
    tcp.sort();
    Listening { tcp }
}

/// The listener one line of /proc/net/tcp or /proc/net/tcp6 describes, if the line is a
/// socket in LISTEN state (not the header, not another state).
///
/// `   0: 0100007F:1F90 00000000:0000 0A ...`: slot, local address:port, remote
/// address:port, state. The address is printed as the kernel's native-endian 32-bit words
/// in hex (one for IPv4, four for IPv6), the port as a number in hex.
pub fn parse_listener(line: &str) -> Option<Target> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    if fields.next()? != STATE_LISTEN {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    let port = u16::try_from(hex_word(port)?).ok().filter(|&p| p != 0)?;
    let addr = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(hex_word(addr)?.to_ne_bytes())),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                let word = hex_word(addr.get(i * 8..i * 8 + 8)?)?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(Target { addr, port })
}

/// A number of at most 8 hex digits (nothing else: no sign).
fn hex_word(hex: &str) -> Option<u32> {
    if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

// The tables' addresses are in the byte order of the kernel that printed them: these lines
// were printed by a little-endian one.
#[cfg(test)]
#[cfg(target_endian = "little")]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};

    use guest_init::protocol::read_frame;

    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when \
                          retrnsmt   uid  timeout inode";

    fn target(addr: &str, port: u16) -> Target {
        Target {
            addr: addr.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn ipv4_lines_are_parsed() {
        let any = "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 \
                   00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_listener(any), Some(target("0.0.0.0", 8080)));
        let lo = "   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 \
                  00000000     0        0 12346 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_listener(lo), Some(target("127.0.0.1", 80)));
        let docker_dns = "   2: 0B00007F:A1B2 00000000:0000 0A 00000000:00000000 00:00000000 \
                          00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(
            parse_listener(docker_dns),
            Some(target("127.0.0.11", 0xA1B2))
        );
        let established = "   3: 0100007F:0050 0100007F:C350 01 00000000:00000000 00:00000000 \
                           00000000     0        0 12347 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(parse_listener(established), None);
        assert_eq!(parse_listener(HEADER), None);
    }

    #[test]
    fn ipv6_lines_are_parsed() {
        let any = "   0: 00000000000000000000000000000000:1F90 \
                   00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 \
                   00000000     0        0 22345 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_listener(any), Some(target("::", 8080)));
        let lo = "   1: 00000000000000000000000001000000:1F90 \
                  00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 \
                  00000000     0        0 22346 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_listener(lo), Some(target("::1", 8080)));
        // fd00::1234:5678 is fd00:0000 0000:0000 0000:0000 1234:5678 in network order.
        let ula = "   2: 000000FD000000000000000078563412:01BB \
                   00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 \
                   00000000     0        0 22347 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_listener(ula), Some(target("fd00::1234:5678", 443)));
    }

    #[test]
    fn malformed_lines_are_ignored() {
        for line in [
            "",
            "0:",
            "0: 0100007F:0050",
            "0: 0100007F:0050 00000000:0000",
            "0: 0100007F:0000 00000000:0000 0A",
            "0: 0100007F:10000 00000000:0000 0A",
            "0: +100007F:0050 00000000:0000 0A",
            "0: 0100007F0050 00000000:0000 0A",
            "0: 0100007:0050 00000000:0000 0A",
            "0: 000000000000000000000000000000é:0050 00000000:0000 0A",
            "0: 0100007G:0050 00000000:0000 0A",
        ] {
            assert_eq!(parse_listener(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_set_is_sorted_deduplicated_and_bounded() {
        let line = |addr: &str, port: u16| {
            format!("0: {addr}:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 0 0 0 1")
        };
        let v4 = [
            HEADER.to_string(),
            line("0100007F", 80),
            line("00000000", 8080),
            line("0100007F", 80), // a SO_REUSEPORT group
            line("00000000", 443),
        ]
        .join("\n");
        let v6 = [HEADER.to_string(), line(&"0".repeat(32), 80)].join("\n");
        let set = listening([v4.as_str(), v6.as_str()]);
        assert_eq!(
            set.tcp,
            vec![
                target("0.0.0.0", 443),
                target("0.0.0.0", 8080),
                target("127.0.0.1", 80),
                target("::", 80),
            ]
        );
        assert!(set.validate().is_ok());

        let many: String = (1..=MAX_LISTENERS as u16 + 10)
            .rev()
            .map(|port| line("00000000", port) + "\n")
            .collect();
        let set = listening([many.as_str()]);
        assert_eq!(set.tcp.len(), MAX_LISTENERS);
        assert_eq!(set.tcp.first().map(|t| t.port), Some(1));
        assert_eq!(set.tcp.last().map(|t| t.port), Some(MAX_LISTENERS as u16));
    }

    #[test]
    fn changes_are_sent_once_and_the_reporter_stops_when_the_host_closes() {
        let (guest, mut host) = UnixStream::pair().unwrap();
        let sets = [
            vec![],
            vec![target("0.0.0.0", 80)],
            vec![target("0.0.0.0", 80)],
            vec![target("0.0.0.0", 80), target("::1", 8080)],
            vec![target("::1", 8080)],
        ];
        let calls = Arc::new(Mutex::new(0usize));
        let reported = Reported::default();
        let (calls2, reported2) = (calls.clone(), reported.clone());
        let reporter = std::thread::spawn(move || {
            let scan = || {
                let mut n = calls2.lock().unwrap();
                let set = sets[(*n).min(sets.len() - 1)].clone();
                *n += 1;
                Listening { tcp: set }
            };
            run(guest, &reported2, scan, Duration::from_millis(1))
        });
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            let frame: Listening = read_frame(&mut host).unwrap().unwrap();
            got.push(frame.tcp);
        }
        assert_eq!(
            got,
            vec![
                vec![],
                vec![target("0.0.0.0", 80)],
                vec![target("0.0.0.0", 80), target("::1", 8080)],
                vec![target("::1", 8080)],
            ]
        );
        drop(host);
        let why = reporter.join().unwrap();
        assert!(why.contains("closed"), "{why}");
        assert_eq!(*reported.lock().unwrap(), vec![target("::1", 8080)]);
    }
}
