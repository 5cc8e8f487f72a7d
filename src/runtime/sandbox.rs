//! The container's life as its host process sees it, for `runvm run` (foreground: the
//! process is the container, its state goes with it) and for the sandbox of `runvm create`
//! (the process stays as the container's host pid: it tells `create` when the container is
//! created, waits for `runvm start` on `<root>/<id>/control.sock`, and keeps its stopped
//! state for `runvm delete`).
//!
//! Today the sandbox boots the VM, mounts the share and opens the stdio ports before it
//! reports `created`; the container set-up in the guest runs at `start` (on hardware KVM a
//! matter of milliseconds). runc prepares the process at create and only execs at start.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::control::{self, Reply, Request};
use super::run::RunError;
use super::state::{ContainerState, Status, Store};

/// The control socket's name in the container's directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The longest `runvm start` waits for the sandbox's answer (the whole container set-up in
/// the guest runs meanwhile).
const START_PATIENCE: Duration = Duration::from_secs(120);

/// Where the container's life is reported.
pub struct Tracker {
    store: Store,
    state: ContainerState,
    sandbox: Option<SandboxLink>,
    /// The control socket, listening from just before the exec.
    listener: Option<UnixListener>,
}

/// The sandbox's ties to `create` and `start`.
struct SandboxLink {
    /// The pipe to `runvm create`: `ok` once created, else the error.
    ready: Option<File>,
    /// The connection of `runvm start`, answered once the process runs.
    start: Option<UnixStream>,
}

impl Tracker {
    /// A tracker for `state` (already saved as creating); `ready` makes it a sandbox's.
    pub fn new(store: Store, state: ContainerState, ready: Option<File>) -> Tracker {
        Tracker {
            store,
            state,
            sandbox: ready.map(|r| SandboxLink {
                ready: Some(r),
                start: None,
            }),
            listener: None,
        }
    }

    /// Whether this is a sandbox (its state outlives it).
    pub fn is_sandbox(&self) -> bool {
        self.sandbox.is_some()
    }

    fn dir(&self) -> PathBuf {
        self.store.dir(&self.state.id)
    }

    /// Everything is ready for the exec: the control socket listens; a sandbox records
    /// `created`, tells `create`, and waits for `runvm start`.
    pub fn before_exec(&mut self) -> Result<(), RunError> {
        let path = self.dir().join(CONTROL_SOCKET);
        let listener = UnixListener::bind(&path).map_err(|source| RunError::Io {
            what: "cannot listen on the control socket",
            source,
        })?;
        let listener = &*self.listener.insert(listener);
        let Some(link) = self.sandbox.as_mut() else {
            return Ok(());
        };
        self.state.status = Status::Created;
        self.store.save(&self.state)?;
        if let Some(mut ready) = link.ready.take() {
            let _ = ready.write_all(b"ok\n");
        }
        loop {
            let (conn, _) = listener.accept().map_err(|source| RunError::Io {
                what: "control socket",
                source,
            })?;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            match control::recv::<Request>(&conn) {
                Ok(Some(Request::Start)) => {
                    link.start = Some(conn);
                    return Ok(());
                }
                Ok(Some(_)) => {
                    let message = "the container is not running: start it first".into();
                    let _ = control::send(&conn, &Reply::Error { message });
                }
                Ok(None) | Err(_) => {}
            }
        }
    }

    /// The process runs: record it and answer `runvm start`. Returns the control socket
    /// for the running container's requests.
    pub fn started(&mut self) -> Result<Option<UnixListener>, RunError> {
        self.state.status = Status::Running;
        self.store.save(&self.state)?;
        if let Some(conn) = self.sandbox.as_mut().and_then(|l| l.start.take()) {
            let _ = control::send(&conn, &Reply::Ok);
        }
        Ok(self.listener.take())
    }

    /// The container is over (its process ended, or it failed): a sandbox keeps its state as
    /// stopped and tells whoever waits why it failed; the foreground removes everything.
    pub fn finish(&mut self, result: &Result<(), &RunError>) {
        let dir = self.dir();
        match self.sandbox.as_mut() {
            None => {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Some(link) => {
                let message = match result {
                    Ok(()) => None,
                    Err(e) => Some(e.to_string()),
                };
                if let Some(mut ready) = link.ready.take() {
                    // Never created: nothing to keep.
                    let line = format!("error: {}\n", message.as_deref().unwrap_or(""));
                    let _ = ready.write_all(line.as_bytes());
                    let _ = std::fs::remove_dir_all(&dir);
                    return;
                }
                if let (Some(conn), Some(message)) = (link.start.take(), message) {
                    let _ = control::send(&conn, &Reply::Error { message });
                }
                let _ = std::fs::remove_file(dir.join(CONTROL_SOCKET));
                self.state.status = Status::Stopped;
                let _ = self.store.save(&self.state);
            }
        }
    }
}

/// `runvm start`: asks the sandbox to start the process and waits for its answer.
pub fn start(root: &Path, id: &str) -> Result<(), String> {
    let store = Store::new(root);
    let state = store.load(id).map_err(|e| e.to_string())?;
    if state.status != Status::Created {
        return Err(format!(
            "cannot start a container that is {}",
            state.status.name()
        ));
    }
    let path = store.dir(id).join(CONTROL_SOCKET);
    let conn =
        UnixStream::connect(&path).map_err(|e| format!("cannot reach the sandbox of {id}: {e}"))?;
    conn.set_read_timeout(Some(START_PATIENCE))
        .map_err(|e| e.to_string())?;
    control::send(&conn, &Request::Start)
        .map_err(|e| format!("cannot reach the sandbox of {id}: {e}"))?;
    match control::recv::<Reply>(&conn) {
        Ok(Some(Reply::Ok)) => Ok(()),
        Ok(Some(Reply::Error { message })) => Err(message),
        Ok(Some(other)) => Err(format!("the sandbox of {id} answered {other:?}")),
        Ok(None) | Err(_) => Err(format!("the sandbox of {id} ended without starting it")),
    }
}
