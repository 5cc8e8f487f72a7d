//! The sandbox's control socket (`<root>/<id>/control.sock`): `runvm start` releases the
//! created container through it, and `runvm exec` asks it to start one more process in the
//! running container. Requests and replies are length-prefixed JSON frames (the guest
//! protocol's framing); an exec'd process's stdin, stdout and stderr vsock streams are
//! handed to the exec relay with `SCM_RIGHTS` after a one-byte marker, so its data never
//! passes through the sandbox.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use guest_init::protocol::{ProcessInfo, Resources, Stats};
use oci_spec::runtime::Process;
use serde::{Deserialize, Serialize};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// What a client asks the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Start the created container's process (`runvm start`).
    Start,
    /// Start `process` in the running container (`runvm exec`).
    Exec {
        /// The OCI process, as `runc exec --process` takes it.
        process: Box<Process>,
    },
    /// Send `signal` to the process this connection exec'd.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// Set the window size of the terminal of the process this connection exec'd.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Pause the VM's vCPUs (`runvm pause`).
    Pause,
    /// List the container's processes (`runvm ps`).
    Ps,
    /// Send `signal` to every process of the container (`runvm kill --all`).
    KillAll {
        /// The signal number.
        signal: i32,
    },
    /// Let them run again (`runvm resume`).
    Resume,
    /// Change the container's limits (`runvm update`).
    Update {
        /// The guest cgroup's new limits.
        resources: Resources,
    },
    /// The container's resource use (`runvm events`).
    Stats,
}

/// What the sandbox answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Done.
    Ok,
    /// It failed, in one line.
    Error {
        /// Why.
        message: String,
    },
    /// The exec'd process runs; its stdio descriptors follow.
    Started {
        /// Its pid in the guest.
        pid: i32,
    },
    /// The container's resource use.
    Stats {
        /// As the guest measured it.
        stats: Box<Stats>,
    },
    /// The container's processes.
    Processes {
        /// As the guest listed them.
        processes: Vec<ProcessInfo>,
    },
    /// The exec'd process ended.
    Exited {
        /// Its exit code.
        code: Option<i32>,
        /// The signal that killed it.
        signal: Option<i32>,
    },
}

/// The longest path `sun_path` holds (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Runs `f` on a path to the same file as `path` that fits a socket address: `path` itself
/// when short enough, else `/proc/self/fd/N/<name>` with its directory held open (docker's
/// state root and 64-character ids make `<root>/<id>/control.sock` too long).
fn short<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    f(&short)
}

/// Connects to the Unix socket at `path`, however long.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    short(path, |p| UnixStream::connect(p))
}

/// Listens on a new Unix socket at `path`, however long.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    short(path, |p| std::os::unix::net::UnixListener::bind(p))
}

/// Connects to the control socket at `path`, sends `request`, and returns the one reply
/// (waiting at most `patience`); errors are one line naming container `id`.
pub fn ask(path: &Path, id: &str, request: &Request, patience: Duration) -> Result<Reply, String> {
    let unreachable = |e: io::Error| format!("cannot reach the sandbox of {id}: {e}");
    let conn = connect(path).map_err(unreachable)?;
    conn.set_read_timeout(Some(patience)).map_err(unreachable)?;
    send(&conn, request).map_err(unreachable)?;
    match recv::<Reply>(&conn) {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(format!("the sandbox of {id} closed the connection")),
        Err(e) => Err(format!("no answer from the sandbox of {id}: {e}")),
    }
}

/// Sends one frame.
pub fn send<T: Serialize>(conn: &UnixStream, msg: &T) -> io::Result<()> {
    guest_init::protocol::write_frame(&mut &*conn, msg)
}

/// Reads one frame; `None` at a clean end.
pub fn recv<T: for<'de> Deserialize<'de>>(conn: &UnixStream) -> io::Result<Option<T>> {
    guest_init::protocol::read_frame(&mut &*conn)
}

/// The byte that carries descriptors.
const FD_MARKER: u8 = b'F';

/// Sends `fds` (with a one-byte marker).
pub fn send_fds(conn: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    conn.send_with_fds(&[&[FD_MARKER][..]], fds)
        .map(|_| ())
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
}

/// Receives exactly `n` descriptors sent by [`send_fds`] (close-on-exec).
pub fn recv_fds(conn: &UnixStream, n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    }];
    let mut raw = vec![-1; n];
    // SAFETY: the iovec points at `byte`, alive and writable for the call.
    let (got, count) = unsafe { conn.recv_with_fds(&mut iov, &mut raw) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    let fds: Vec<OwnedFd> = raw[..count]
        .iter()
        .map(|&fd| {
            // SAFETY: recvmsg just gave us these descriptors; nothing else owns them.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
            fd
        })
        .collect();
    if got != 1 || byte[0] != FD_MARKER || fds.len() != n {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected {n} descriptors, got {}", fds.len()),
        ));
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn frames_and_descriptors_cross_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut left, right) = UnixStream::pair().unwrap();
        send(&a, &Reply::Started { pid: 7 }).unwrap();
        send_fds(&a, &[right.as_raw_fd()]).unwrap();
        send(&a, &Reply::Ok).unwrap();
        drop(right);
        assert_eq!(recv::<Reply>(&b).unwrap(), Some(Reply::Started { pid: 7 }));
        let fds = recv_fds(&b, 1).unwrap();
        assert_eq!(recv::<Reply>(&b).unwrap(), Some(Reply::Ok));
        let mut passed = UnixStream::from(fds.into_iter().next().unwrap());
        passed.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        left.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn sockets_at_paths_too_long_for_an_address_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        let path = deep.join("control.sock");
        assert!(path.as_os_str().len() > MAX_SOCKET_PATH);
        let listener = bind(&path).unwrap();
        assert!(path.exists());
        let mut client = connect(&path).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
    }

    #[test]
    fn a_frame_where_descriptors_were_expected_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &Reply::Ok).unwrap();
        assert!(recv_fds(&b, 3).is_err());
    }
}
