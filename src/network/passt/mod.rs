//! User-mode networking for a container that shares the host's network: passt (Debian's
//! `passt`), which turns the guest's frames into ordinary host sockets (its connections come
//! from the host's addresses), speaks a stream protocol on a socket we hand it: every frame
//! as a 4-byte big-endian length, then the Ethernet frame, no vnet header.
//!
//! [`Passt::spawn`] starts it (`passt --foreground --quiet --one-off --fd N`: it serves the
//! one socket and exits when it closes, so a sandbox killed with SIGKILL takes it along) and
//! [`relay`] moves frames between that stream and the datagram socket the virtio-net device
//! reads (one frame per datagram, behind a 12-byte vnet header, as from a tap). The NIC
//! offers no offloads (`Net::with_offloads(slot, false)`): every frame is whole and
//! checksummed both ways, and the header stays empty. What the guest's NIC is given (the
//! host's addresses and routes) comes from [`host_netspec`].

mod hostspec;
mod relay;

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use hostspec::{PASST_MTU, host_netspec};

/// Lines of passt's stderr kept, for the line that says why it stopped.
const STDERR_LINES: usize = 8;
/// The send buffer of passt's end of the stream, and of the relay's datagram end: room for
/// some 60 of the largest frames. passt (this version) writes its frames without waiting
/// and cannot finish a frame it could write only in part; a roomy buffer, and a relay that
/// never waits for the device (`relay.rs`), keep it from ever being that short.
const SOCKET_BUFFER: usize = 4 << 20;

/// Why passt could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// Not installed.
    #[error(
        "--network host needs passt, which is not installed (Debian/Ubuntu: apt install passt)"
    )]
    Missing,
    /// The sockets, or the process itself.
    #[error("cannot start passt ({path}): {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The `passt` binary on `PATH`, or `None`.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join("passt"))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running passt and the relay threads that feed it. Dropping it stops both: the stream
/// is shut down (passt, one-off, exits), then passt is killed and reaped.
pub struct Passt {
    child: Child,
    stream: UnixStream,
    /// Set before we stop the relay ourselves: its end is then no news.
    stopping: Arc<AtomicBool>,
}

impl Passt {
    /// Starts passt on a stream socket of its own and the relay between it and a datagram
    /// socket; returns the device's end of that datagram socket, to attach to the NIC.
    pub fn spawn() -> Result<(Passt, OwnedFd), PasstError> {
        let path = find().ok_or(PasstError::Missing)?;
        let spawn_err = |source| PasstError::Spawn {
            path: path.clone(),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        let (device_end, relay_end) = UnixDatagram::pair().map_err(spawn_err)?;
        // A unix socket's writes are charged to its sender: passt's end, and the relay's
        // datagram end towards the device.
        set_send_buffer(&theirs, SOCKET_BUFFER).map_err(spawn_err)?;
        set_send_buffer(&relay_end, SOCKET_BUFFER).map_err(spawn_err)?;
        let fd = theirs.as_raw_fd();
        let mut command = Command::new(&path);
        command
            .args([
                "--foreground",
                "--quiet",
                "--one-off",
                "--no-dhcp",
                "--no-dhcpv6",
            ])
            .args(["--no-ra", "--fd", &fd.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and only calls fcntl,
        // which is async-signal-safe, on `fd`, a descriptor the child inherited (open in
        // the parent until after the spawn: `theirs` is dropped below).
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(spawn_err)?;
        drop(theirs);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_LINES)));
        if let Some(stderr) = child.stderr.take() {
            keep_tail(stderr, Arc::clone(&tail));
        }
        let stream = ours.try_clone().map_err(spawn_err)?;
        let stopping = Arc::new(AtomicBool::new(false));
        relay::spawn(ours, relay_end, tail, Arc::clone(&stopping)).map_err(spawn_err)?;
        let passt = Passt {
            child,
            stream,
            stopping,
        };
        Ok((passt, device_end.into()))
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets `fd`'s send buffer to `bytes`, past the system's default maximum when we may
/// (`SO_SNDBUFFORCE`, as root), to what the maximum allows otherwise.
fn set_send_buffer(fd: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |option| {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&value`, a live c_int;
        // the descriptor is open for the duration of the call (borrowed from `fd`).
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_SNDBUFFORCE) == 0 || set(libc::SO_SNDBUF) == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads passt's stderr to its end, keeping the last [`STDERR_LINES`] lines (its syslog
/// complaints aside): what the relay reports if passt stops.
fn keep_tail(stderr: impl io::Read + Send + 'static, tail: Arc<Mutex<VecDeque<String>>>) {
    let spawned = std::thread::Builder::new()
        .name("passt-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.is_empty() || line.starts_with("Failed to send") {
                    continue;
                }
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
    if let Err(e) = spawned {
        eprintln!("runvm: warning: passt's messages are lost: {e}");
    }
}
