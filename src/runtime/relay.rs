//! The relays between a host process and a guest process: stdin copied in, stdout and
//! stderr copied out, and the signals the host process receives forwarded. Used by
//! `runvm run` (and the sandbox) for the container's process and by `runvm exec`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::devices::virtio::vsock::{VsockHandle, VsockListener};

/// Signals forwarded to the container's process (all but those the kernel or runvm itself
/// must act on: KILL, STOP, CHLD, PIPE, SEGV and the other faults, URG).
pub const FORWARDED: [libc::c_int; 17] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGWINCH,
    libc::SIGPWR,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGXFSZ,
];
/// Blocks the forwarded signals in this thread (and the threads it starts later): call it
/// before any thread exists; returns the set for [`spawn_signal_forwarder`].
pub fn block_forwarded_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls get valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Copies our stdin to the process; at end of file, shuts the stream's write side so the
/// process sees end of file too. Not joined: a stdin that never ends must not hold us.
pub fn spawn_stdin_relay(mut stream: UnixStream) {
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
    });
}

/// Copies one of the process's output streams to ours until it ends.
pub fn spawn_output_relay<W: Write, F: Fn() -> W + Send + 'static>(
    mut stream: UnixStream,
    out: F,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut o = out();
                    if o.write_all(&buf[..n]).and_then(|()| o.flush()).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Waits for the blocked signals in `set` and hands each to `forward`, until it fails.
pub fn spawn_signal_forwarder(
    set: libc::sigset_t,
    forward: impl Fn(i32) -> io::Result<()> + Send + 'static,
) {
    std::thread::spawn(move || {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised sigset_t and `sig` a valid int.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            if forward(sig).is_err() {
                return;
            }
        }
    });
}

/// Waits up to `limit` for the output relays to copy what is left once the process ended.
pub fn drain(relays: [JoinHandle<()>; 2], limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    for relay in relays {
        while !relay.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Listens on the three host ports a process's stdin, stdout and stderr connect to.
pub fn listen_stdio(vsock: &VsockHandle, ports: [u32; 3]) -> io::Result<Vec<VsockListener>> {
    ports.iter().map(|p| vsock.listen(*p)).collect()
}

/// The process's stdin, stdout and stderr, once each connected (blocking streams); fails if
/// one did not connect within `timeout`.
pub fn accept_stdio(
    listeners: &[VsockListener],
    timeout: std::time::Duration,
) -> io::Result<[UnixStream; 3]> {
    let mut streams = Vec::with_capacity(3);
    for l in listeners {
        let s = l.accept_timeout(timeout)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the process's stdio did not connect",
            )
        })?;
        s.set_nonblocking(false)?;
        streams.push(s);
    }
    streams.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a process has three stdio streams",
        )
    })
}
