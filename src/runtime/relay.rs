//! The relays between a host process and a guest process: stdin copied in, stdout and
//! stderr copied out (or one terminal stream both ways, `tty`), and the signals the host
//! process receives forwarded. Used by
//! `runvm run` (and the sandbox) for the container's process and by `runvm exec`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use super::tty::Terminal;
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
/// before any thread exists; returns the set for [`spawn_forwarder`].
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
pub fn spawn_stdin_relay(stream: UnixStream) {
    spawn_input_relay(io::stdin(), stream);
}

/// Copies `input` to the process's stream, as [`spawn_stdin_relay`] does our stdin.
pub fn spawn_input_relay<R: Read + Send + 'static>(mut input: R, mut stream: UnixStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match input.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
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

/// Copies one of the process's output streams to `out` until it ends.
pub fn spawn_output_relay<W: Write + Send + 'static>(
    mut stream: UnixStream,
    mut out: W,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Waits for the blocked signals in `set` and hands each to `forward`, until it fails.
fn spawn_signal_forwarder(
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

/// Reads a terminal's window size, `(rows, cols)`, from the signal forwarder's thread.
pub type Sizer = Box<dyn Fn() -> Option<(u16, u16)> + Send>;

/// Forwards the blocked signals in `set` with `signal`; with a terminal (`size` reads the
/// host side's window size), SIGWINCH becomes that size, given to `resize`.
pub fn spawn_forwarder(
    set: libc::sigset_t,
    size: Option<Sizer>,
    signal: impl Fn(i32) -> io::Result<()> + Send + 'static,
    resize: impl Fn(u16, u16) -> io::Result<()> + Send + 'static,
) {
    spawn_signal_forwarder(set, move |sig| match &size {
        Some(size) if sig == libc::SIGWINCH => match size() {
            Some((rows, cols)) => resize(rows, cols),
            None => Ok(()),
        },
        _ => signal(sig),
    });
}

/// Relays a process's stdio streams: with a terminal, its one stream to the terminal's
/// host end; else stdin from ours, stdout and stderr to ours. Returns the output copies,
/// for [`drain`].
pub fn relay_streams(
    streams: Vec<UnixStream>,
    terminal: Option<&Terminal>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut streams = streams.into_iter();
    let wrong = || io::Error::new(io::ErrorKind::InvalidData, "wrong number of stdio streams");
    let mut next = || streams.next().ok_or_else(wrong);
    if let Some(t) = terminal {
        return Ok(vec![t.relay(next()?)?]);
    }
    let (stdin, stdout, stderr) = (next()?, next()?, next()?);
    spawn_stdin_relay(stdin);
    Ok(vec![
        spawn_output_relay(stdout, io::stdout()),
        spawn_output_relay(stderr, io::stderr()),
    ])
}

/// Waits up to `limit` for the output relays to copy what is left once the process ended.
pub fn drain(relays: Vec<JoinHandle<()>>, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    for relay in relays {
        while !relay.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Listens on the host ports a process's stdio streams connect to: three (stdin, stdout,
/// stderr), or one for a terminal.
pub fn listen_stdio(vsock: &VsockHandle, ports: &[u32]) -> io::Result<Vec<VsockListener>> {
    ports.iter().map(|p| vsock.listen(*p)).collect()
}

/// The process's stdio streams, once each connected (blocking streams); fails if one did
/// not connect within `timeout`.
pub fn accept_stdio(
    listeners: &[VsockListener],
    timeout: std::time::Duration,
) -> io::Result<Vec<UnixStream>> {
    let mut streams = Vec::with_capacity(listeners.len());
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
    Ok(streams)
}

/// How many stdio streams a process has: one with a terminal, else three.
pub fn stream_count(terminal: bool) -> usize {
    if terminal { 1 } else { 3 }
}
