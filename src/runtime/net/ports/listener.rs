//! One published listener: a TCP socket bound on the host at the address and port of a
//! listener in the guest, and the thread that accepts its clients and forwards each to the
//! guest ([`guest_init::splice`]).

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use guest_init::portfwd::Target;

use super::Connect;
use guest_init::splice::{COPY_STACK, Slot, shut, splice};

/// How long a host listener pauses when the host runs out of file descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The backlog of a host listener.
const BACKLOG: libc::c_int = 128;

/// One published listener on the host and its accept thread; dropping it closes the
/// listener and waits for the thread.
pub struct HostListener {
    socket: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostListener {
    /// Binds `target` on the host (IPv6-only if `v6only`) and forwards each client to the
    /// guest over a connection from `connect`, while fewer than
    /// [`MAX_FORWARDED`](guest_init::portfwd::MAX_FORWARDED) (counted in `open`) are open.
    pub fn start(
        target: Target,
        v6only: bool,
        connect: Connect,
        open: Arc<AtomicUsize>,
    ) -> io::Result<HostListener> {
        let socket = Arc::new(bind_tcp(target, v6only)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (socket, stopping) = (socket.clone(), stopping.clone());
            std::thread::Builder::new()
                .name("port-listen".into())
                .spawn(move || accept_loop(&socket, target, &connect, &open, &stopping))?
        };
        Ok(HostListener {
            socket,
            stopping,
            thread: Some(thread),
        })
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // On Linux, shutting a listening socket down wakes the thread blocked in accept
        // (which then fails with EINVAL).
        shut(&*self.socket, libc::SHUT_RDWR);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds a listening TCP socket on `target`, with SO_REUSEADDR (as servers do: a port whose
/// last connections linger in TIME_WAIT is free) and, for IPv6, IPV6_V6ONLY as `v6only`.
pub fn bind_tcp(target: Target, v6only: bool) -> io::Result<TcpListener> {
    let family = match target.addr {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_flag(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, true)?;
    let rc = match target.addr {
        IpAddr::V4(addr) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: target.port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a valid sockaddr_in and the length is its size.
            unsafe {
                libc::bind(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(addr) => {
            set_flag(&socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6only)?;
            // SAFETY: sockaddr_in6 is plain old data; zeroed is a valid value.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = target.port.to_be();
            sin6.sin6_addr.s6_addr = addr.octets();
            // SAFETY: `sin6` is a valid sockaddr_in6 and the length is its size.
            unsafe {
                libc::bind(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen takes no pointers; `fd` is a bound socket we own.
    if unsafe { libc::listen(fd, BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(socket))
}

/// Sets an integer socket option to 0 or 1.
fn set_flag(socket: &OwnedFd, level: libc::c_int, name: libc::c_int, on: bool) -> io::Result<()> {
    let value = libc::c_int::from(on);
    // SAFETY: `value` is a c_int that outlives the call and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Accepts clients on `socket` until it is stopped (or fails for good), forwarding each to
/// `target` in the guest.
fn accept_loop(
    socket: &TcpListener,
    target: Target,
    connect: &Connect,
    open: &Arc<AtomicUsize>,
    stopping: &AtomicBool,
) {
    loop {
        let accepted = socket.accept();
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED) => continue,
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    std::thread::sleep(ACCEPT_BACKOFF);
                    continue;
                }
                _ => {
                    let addr = SocketAddr::new(target.addr, target.port);
                    eprintln!("runvm: warning: {addr}/tcp is no longer published: {e}");
                    return;
                }
            },
        };
        // Beyond the bound the client is closed at once.
        let Some(slot) = Slot::take(open) else {
            continue;
        };
        let connect = connect.clone();
        // A client whose thread cannot start is closed with the closure.
        let _ = std::thread::Builder::new()
            .name("port-conn".into())
            .stack_size(COPY_STACK)
            .spawn(move || {
                let _slot = slot;
                let _ = client.set_nodelay(true);
                let Ok(guest) = connect() else {
                    return;
                };
                if (&guest).write_all(&target.encode()).is_err() {
                    return;
                }
                splice(client, guest);
            });
    }
}
