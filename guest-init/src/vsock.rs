//! A stream connection to the host over AF_VSOCK, retried while the host side comes up.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A fresh AF_VSOCK stream socket and the address `cid:port`, for `connect` or `bind`.
fn socket_for(cid: u32, port: u32) -> io::Result<(OwnedFd, libc::sockaddr_vm)> {
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; zeroed is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    Ok((owned, addr))
}

/// The length argument for a `sockaddr_vm`.
const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;

fn connect_once(cid: u32, port: u32) -> io::Result<File> {
    let (owned, addr) = socket_for(cid, port)?;
    // SAFETY: `addr` is a valid sockaddr_vm and the length is its size.
    let rc = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            ADDR_LEN,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(owned))
}

/// Connects to `cid:port`, retrying refused or reset connections for up to `patience`.
pub fn connect(cid: u32, port: u32, patience: Duration) -> io::Result<File> {
    let deadline = Instant::now() + patience;
    loop {
        match connect_once(cid, port) {
            Ok(f) => return Ok(f),
            Err(e) if Instant::now() < deadline => {
                let retry = matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::ECONNRESET | libc::ETIMEDOUT | libc::ENODEV)
                );
                if !retry {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until the peer closes `stream` (end of file) or `limit` passes, discarding anything
/// it still sends.
pub fn wait_for_close(mut stream: &File, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready <= 0 {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A stream socket listening on a vsock port of the guest, for the host to connect to.
pub struct Listener(OwnedFd);

/// Listens on the guest's vsock port `port` (any local CID).
pub fn listen(port: u32) -> io::Result<Listener> {
    let (owned, addr) = socket_for(libc::VMADDR_CID_ANY, port)?;
    let fd = owned.as_raw_fd();
    // SAFETY: `addr` is a valid sockaddr_vm and the length is its size.
    if unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_vm).cast(), ADDR_LEN) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen takes no pointers; `fd` is a bound socket.
    if unsafe { libc::listen(fd, 64) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Listener(owned))
}

impl Listener {
    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<File> {
        // SAFETY: null address pointers ask for no peer address; the fd is ours.
        let fd = unsafe {
            libc::accept4(
                self.0.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly accepted socket that nothing else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}
