//! The running container's control server: a thread of the container's host process that
//! accepts connections on its control socket and serves `runvm exec`, `pause`, `resume`,
//! `ps`, `kill --all`, `update` and `events`. Each exec gets its own thread: the OCI
//! process is translated like the container's own (its seccomp profile, capabilities,
//! user), started in the container's namespaces under a new process number with its own
//! vsock ports, its stdio streams handed to the exec relay, its signals and window sizes
//! forwarded, and its end reported.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use oci_spec::runtime::Process;

use super::bundle::Bundle;
use super::control::{self, Reply, Request};
use super::relay;
use super::spec;
use crate::agent::{Agent, AgentError};
use crate::devices::virtio::vsock::VsockHandle;
use crate::vmm::vm::Pauser;

/// The first host vsock port of exec'd processes (three per process, by process number).
const EXEC_PORT_BASE: u32 = 0x1_0000;
/// The most processes one container may exec over its life (keeps ports in range).
const MAX_EXECS: u32 = 1 << 20;
/// How long a client may take to send its request.
const REQUEST_PATIENCE: Duration = Duration::from_secs(10);
/// How long the vCPUs may take to stop.
const PAUSE_PATIENCE: Duration = Duration::from_secs(10);
/// How long the guest may take to start an exec'd process.
const GUEST_PATIENCE: Duration = Duration::from_secs(60);

/// What an exec'd process's translation needs of the container.
pub struct Joined {
    /// The container's bundle.
    pub bundle: Bundle,
    /// The container's root in the guest.
    pub root: String,
    /// Its bind sources in the guest.
    pub binds: Vec<String>,
}

struct Server {
    agent: Arc<Agent>,
    pauser: Pauser,
    vsock: VsockHandle,
    joined: Joined,
    next: AtomicU32,
}

/// Serves `listener` on a thread for as long as the process lives.
pub fn spawn(
    listener: UnixListener,
    agent: Arc<Agent>,
    pauser: Pauser,
    vsock: VsockHandle,
    joined: Joined,
) {
    let server = Arc::new(Server {
        agent,
        pauser,
        vsock,
        joined,
        next: AtomicU32::new(1),
    });
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let server = server.clone();
            std::thread::spawn(move || server.handle(conn));
        }
    });
}

impl Server {
    fn handle(&self, conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(REQUEST_PATIENCE));
        let reply = match control::recv::<Request>(&conn) {
            Ok(Some(Request::Exec { process })) => match self.exec(&conn, &process) {
                Ok(reply) => reply,
                Err(message) => Reply::Error { message },
            },
            Ok(Some(Request::Start)) => Reply::Error {
                message: "cannot start an already running container".into(),
            },
            Ok(Some(Request::Signal { .. } | Request::Resize { .. })) => Reply::Error {
                message: "no process on this connection".into(),
            },
            Ok(Some(Request::Pause)) => match self.pauser.pause(PAUSE_PATIENCE) {
                Ok(()) => Reply::Ok,
                Err(e) => Reply::Error {
                    message: format!("cannot pause the container: {e}"),
                },
            },
            Ok(Some(Request::Resume)) => {
                self.pauser.resume();
                Reply::Ok
            }
            Ok(Some(Request::Ps)) => match self.agent.processes(GUEST_PATIENCE) {
                Ok(processes) => Reply::Processes { processes },
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            },
            Ok(Some(Request::Update { resources })) => {
                match self.agent.update(resources, GUEST_PATIENCE) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error {
                        message: format!("cannot update the container: {e}"),
                    },
                }
            }
            Ok(Some(Request::Stats)) => match self.agent.stats(GUEST_PATIENCE) {
                Ok(stats) => Reply::Stats {
                    stats: Box::new(stats),
                },
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            },
            Ok(Some(Request::KillAll { signal })) => {
                match self.agent.signaller(0).signal_all(signal) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error {
                        message: format!("cannot signal the container: {e}"),
                    },
                }
            }
            Ok(None) | Err(_) => return,
        };
        let _ = control::send(&conn, &reply);
    }

    /// Starts `process`, hands its stdio over, forwards signals, and returns its end.
    fn exec(&self, conn: &UnixStream, process: &Process) -> Result<Reply, String> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        if id >= MAX_EXECS {
            return Err(format!("more than {MAX_EXECS} processes exec'd"));
        }
        let first = EXEC_PORT_BASE + id * 3;
        let ports = [first, first + 1, first + 2];
        let j = &self.joined;
        let mut spec = spec::exec_spec(&j.bundle, process, &j.root, &j.binds, ports)
            .map_err(|e| e.to_string())?;
        spec.process = id;
        spec.join = true;
        let ports = &ports[..relay::stream_count(spec.terminal)];
        let listeners = relay::listen_stdio(&self.vsock, ports)
            .map_err(|e| format!("cannot listen for the process's stdio: {e}"))?;
        let pid = self.agent.exec(spec, GUEST_PATIENCE).map_err(|e| match e {
            AgentError::Guest(m) => format!("exec failed: unable to start container process: {m}"),
            other => other.to_string(),
        })?;
        let streams = relay::accept_stdio(&listeners, GUEST_PATIENCE);
        drop(listeners);
        let streams = streams.map_err(|e| e.to_string())?;
        let fds: Vec<_> = streams.iter().map(|s| s.as_raw_fd()).collect();
        control::send(conn, &Reply::Started { pid })
            .and_then(|()| control::send_fds(conn, &fds))
            .map_err(|e| format!("cannot hand the process's stdio over: {e}"))?;
        drop(streams);
        // Signals and window sizes from the relay, until it closes its side.
        let signaller = self.agent.signaller(id);
        if let Ok(reader) = conn.try_clone() {
            let _ = reader.set_read_timeout(None);
            std::thread::spawn(move || {
                loop {
                    let sent = match control::recv(&reader) {
                        Ok(Some(Request::Signal { signal })) => signaller.signal(signal),
                        Ok(Some(Request::Resize { rows, cols })) => signaller.resize(rows, cols),
                        _ => return,
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
        let (code, signal) = self
            .agent
            .wait_exit(id, || Ok(()))
            .map_err(|e| e.to_string())?;
        Ok(Reply::Exited { code, signal })
    }
}
