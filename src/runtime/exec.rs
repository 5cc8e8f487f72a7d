//! `runvm exec`'s relay: the host process that stands for a process exec'd in a running
//! container. It asks the container's sandbox (over the control socket) to start the
//! process, receives the process's stdin, stdout and stderr vsock streams and relays them to
//! its own (or its one terminal stream, to a `--console-socket` pty or to its own
//! terminal, with window sizes), forwards the signals it receives, and ends as the process
//! did. Detached
//! (`--detach`), it forks first: the child relays, the parent returns once the process runs
//! and the pid file (the child's pid) is written.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use oci_spec::runtime::Process;

use super::control::{self, Reply, Request};
use super::relay;
use super::run::{Exit, write_pid_file_for};
use super::sandbox::CONTROL_SOCKET;
use super::state::{Status, Store};
use super::tty::{Terminal, TtyTarget};

/// How long the sandbox may take to start the process.
const START_PATIENCE: Duration = Duration::from_secs(120);
/// How long output may still drain after the process has exited.
const DRAIN: Duration = Duration::from_secs(5);
/// The most bytes of the relay child's answer the detaching parent reads.
const MAX_ANSWER: u64 = 64 << 10;

/// Errors of `runvm exec`, each one line.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container's state.
    #[error(transparent)]
    State(#[from] super::state::StateError),
    /// The container does not run.
    #[error("cannot exec in a {0} container")]
    NotRunning(&'static str),
    /// The sandbox refused or failed (its words).
    #[error("{0}")]
    Sandbox(String),
    /// Talking to the sandbox.
    #[error("cannot reach the sandbox of {id}: {source}")]
    Unreachable {
        /// The container.
        id: String,
        /// Why.
        source: io::Error,
    },
    /// A host resource (pipe, fork, pid file).
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// What `runvm exec` was asked.
pub struct ExecOptions {
    /// The state root.
    pub root: PathBuf,
    /// The container.
    pub id: String,
    /// The process.
    pub process: Process,
    /// Return once it runs, leaving a relay process behind.
    pub detach: bool,
    /// Where the relay's pid goes.
    pub pid_file: Option<PathBuf>,
    /// Where the process's terminal goes, when it has one.
    pub tty: Option<TtyTarget>,
}

/// How `exec` ended for this process.
pub enum Outcome {
    /// The process ended (the foreground relay).
    Ended(Exit),
    /// The process runs under a detached relay.
    Detached,
}

/// Runs the process; in the foreground returns its end, detached returns once it runs.
/// Call before any thread exists (it may fork).
pub fn exec(opts: &ExecOptions) -> Result<Outcome, ExecError> {
    let store = Store::new(&opts.root);
    let state = store.load(&opts.id)?;
    if state.status != Status::Running {
        return Err(ExecError::NotRunning(state.status.name()));
    }
    if !opts.detach {
        let signals = relay::block_forwarded_signals();
        return relay_process(opts, &store, signals, &mut None).map(Outcome::Ended);
    }
    let (read_end, write_end) = pipe()?;
    // SAFETY: no thread exists yet (the caller's contract), so the child may run anything.
    match unsafe { libc::fork() } {
        -1 => Err(io_err("fork")(io::Error::last_os_error())),
        0 => {
            drop(read_end);
            if matches!(opts.tty, Some(TtyTarget::Socket(_))) {
                // The process's stdio is the terminal: the relay must not hold ours, whose
                // end the caller may wait for once we return.
                stdio_to_null();
            }
            let signals = relay::block_forwarded_signals();
            let mut ready = Some(File::from(write_end));
            let code = match relay_process(opts, &store, signals, &mut ready) {
                Ok(exit) => {
                    if let Some(sig) = exit.signal {
                        super::signals::die_by(sig);
                    }
                    exit.status()
                }
                Err(e) => {
                    if let Some(mut ready) = ready {
                        let _ = writeln!(ready, "error: {e}");
                    }
                    1
                }
            };
            std::process::exit(code)
        }
        _ => {
            drop(write_end);
            let mut answer = String::new();
            let _ = File::from(read_end)
                .take(MAX_ANSWER)
                .read_to_string(&mut answer);
            match answer.trim() {
                "ok" => Ok(Outcome::Detached),
                "" => Err(ExecError::Sandbox(
                    "the exec relay ended before the process started".into(),
                )),
                other => Err(ExecError::Sandbox(
                    other.strip_prefix("error: ").unwrap_or(other).to_owned(),
                )),
            }
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null (best effort: nothing to report to).
fn stdio_to_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `null` stays open for the call.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> ExecError {
    move |source| ExecError::Io { what, source }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ExecError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("pipe")(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts the process through the sandbox and relays it until it ends. `ready` (detached)
/// hears `ok` once the process runs and the pid file is written, and is closed then.
fn relay_process(
    opts: &ExecOptions,
    store: &Store,
    signals: libc::sigset_t,
    ready: &mut Option<File>,
) -> Result<Exit, ExecError> {
    let unreachable = |source| ExecError::Unreachable {
        id: opts.id.clone(),
        source,
    };
    let conn = control::connect(&store.dir(&opts.id).join(CONTROL_SOCKET)).map_err(unreachable)?;
    conn.set_read_timeout(Some(START_PATIENCE))
        .map_err(unreachable)?;
    let terminal = opts
        .tty
        .as_ref()
        .map(Terminal::open)
        .transpose()
        .map_err(|e| ExecError::Sandbox(e.to_string()))?;
    let mut process = opts.process.clone();
    process.set_terminal(Some(terminal.is_some()));
    let size = terminal.as_ref().and_then(Terminal::size);
    if let (None, Some((rows, cols))) = (process.console_size(), size) {
        let size = oci_spec::runtime::BoxBuilder::default()
            .height(u64::from(rows))
            .width(u64::from(cols))
            .build()
            .map_err(|e| ExecError::Sandbox(e.to_string()))?;
        process.set_console_size(Some(size));
    }
    let request = Request::Exec {
        process: Box::new(process),
    };
    control::send(&conn, &request).map_err(unreachable)?;
    match control::recv::<Reply>(&conn).map_err(unreachable)? {
        Some(Reply::Started { .. }) => {}
        Some(Reply::Error { message }) => return Err(ExecError::Sandbox(message)),
        Some(other) => return Err(ExecError::Sandbox(format!("unexpected answer {other:?}"))),
        None => {
            return Err(ExecError::Sandbox(
                "the sandbox closed the connection".into(),
            ));
        }
    }
    let fds =
        control::recv_fds(&conn, relay::stream_count(terminal.is_some())).map_err(unreachable)?;
    if let Some(p) = &opts.pid_file {
        write_pid_file_for(p, std::process::id()).map_err(io_err("cannot write the pid file"))?;
    }
    if let Some(mut ready) = ready.take() {
        let _ = ready.write_all(b"ok\n");
    }
    let streams = fds.into_iter().map(UnixStream::from).collect();
    let outputs = relay::relay_streams(streams, terminal.as_ref())
        .map_err(io_err("cannot relay the process's stdio"))?;
    let writer = conn.try_clone().map_err(unreachable)?;
    let resizer = conn.try_clone().map_err(unreachable)?;
    if let Some((rows, cols)) = terminal.as_ref().and_then(Terminal::size) {
        control::send(&resizer, &Request::Resize { rows, cols }).map_err(unreachable)?;
    }
    relay::spawn_forwarder(
        signals,
        terminal.as_ref().map(Terminal::sizer),
        move |signal| control::send(&writer, &Request::Signal { signal }),
        move |rows, cols| control::send(&resizer, &Request::Resize { rows, cols }),
    );
    conn.set_read_timeout(None).map_err(unreachable)?;
    let end = control::recv::<Reply>(&conn).map_err(unreachable)?;
    relay::drain(outputs, DRAIN);
    match end {
        Some(Reply::Exited { code, signal }) => Ok(Exit { code, signal }),
        Some(Reply::Error { message }) => Err(ExecError::Sandbox(message)),
        Some(other) => Err(ExecError::Sandbox(format!("unexpected answer {other:?}"))),
        None => Err(ExecError::Sandbox(
            "the container's sandbox ended before the process did".into(),
        )),
    }
}
