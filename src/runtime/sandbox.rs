//! The container's life as its host process sees it, for `runvm run` (foreground: the
//! process is the container, its state goes with it) and for the sandbox of `runvm create`
//! (the process stays as the container's host pid: it tells `create` when the container is
//! created, waits for `runvm start` on `<root>/<id>/control.sock`, and keeps its stopped
//! state for `runvm delete`).
//!
//! As runc prepares its init at create and only lets it exec at start, the sandbox boots
//! the VM, has the guest set the whole container up with the process held just before its
//! exec, connects its stdio, and only then reports `created`; `start` releases it.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::Hooks;

use super::control::{self, Reply, Request};
use super::hooks::{self, HookPlace, Stage};
use super::host_cgroup::Joined;
use super::run::RunError;
use super::state::{ContainerState, Status, Store};

/// Where a sandbox leaves its poststop hooks for `runvm delete`.
const POSTSTOP_HOOKS: &str = "poststop.json";
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
    /// The spec's hooks.
    hooks: Option<Hooks>,
    /// Where they run.
    place: HookPlace,
    /// The container's host cgroup, until it is left for good or kept for `delete`.
    cgroup: Option<Joined>,
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
    pub fn new(
        store: Store,
        state: ContainerState,
        ready: Option<File>,
        hooks: Option<Hooks>,
        place: HookPlace,
        cgroup: Joined,
    ) -> Tracker {
        Tracker {
            hooks,
            place,
            cgroup: Some(cgroup),
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

    /// Runs `stage`'s hooks with the container's state as `status`.
    fn hooks(&mut self, stage: Stage, status: Status) -> Result<(), RunError> {
        let mut state = self.state.clone();
        state.status = status;
        if status == Status::Stopped {
            state.pid = 0;
        }
        let hooks = self.hooks.as_ref();
        if stage.is_fatal() {
            hooks::run_stage(hooks, stage, &state, &self.place)?;
        } else {
            hooks::run_stage_warning(hooks, stage, &state, &self.place);
        }
        Ok(())
    }

    /// The guest is about to prepare the process: the create-time hooks run.
    pub fn before_prepare(&mut self) -> Result<(), RunError> {
        for stage in [
            Stage::Prestart,
            Stage::CreateRuntime,
            Stage::CreateContainer,
        ] {
            self.hooks(stage, Status::Creating)?;
        }
        self.save_poststop()
    }

    /// The process is prepared, held before its exec: the control socket listens; a
    /// sandbox records `created`, tells `create`, and waits for `runvm start`; the
    /// startContainer hooks run last, before the release.
    pub fn created(&mut self) -> Result<(), RunError> {
        let path = self.dir().join(CONTROL_SOCKET);
        let listener = control::bind(&path).map_err(|source| RunError::Io {
            what: "cannot listen on the control socket",
            source,
        })?;
        let listener = &*self.listener.insert(listener);
        if let Some(link) = self.sandbox.as_mut() {
            self.state.status = Status::Created;
            self.store.save(&self.state)?;
            if let Some(mut ready) = link.ready.take() {
                let _ = ready.write_all(b"ok\n");
            }
            link.start = Some(wait_for_start(listener)?);
        }
        self.hooks(Stage::StartContainer, Status::Created)
    }

    /// Writes the poststop hooks where `runvm delete` finds them.
    fn save_poststop(&self) -> Result<(), RunError> {
        let Some(list) = self.hooks.as_ref().map(|h| Stage::Poststop.of(h)) else {
            return Ok(());
        };
        if list.is_empty() || !self.is_sandbox() {
            return Ok(());
        }
        let text = serde_json::to_vec(list).unwrap_or_default();
        std::fs::write(self.dir().join(POSTSTOP_HOOKS), text).map_err(|source| RunError::Io {
            what: "cannot save the poststop hooks",
            source,
        })
    }

    /// The process runs: record it, run the poststart hooks and answer `runvm start`. Returns the control socket
    /// for the running container's requests.
    pub fn started(&mut self) -> Result<Option<UnixListener>, RunError> {
        self.state.status = Status::Running;
        self.store.save(&self.state)?;
        self.hooks(Stage::Poststart, Status::Running)?;
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
                // runc's `run` deletes the container as it ends: poststop comes now.
                let _ = self.hooks(Stage::Poststop, Status::Stopped);
                if let Some(cgroup) = self.cgroup.take() {
                    cgroup.leave();
                }
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
                    if let Some(cgroup) = self.cgroup.take() {
                        cgroup.leave();
                    }
                    let _ = ready.write_all(line.as_bytes());
                    let _ = std::fs::remove_dir_all(&dir);
                    return;
                }
                if let (Some(conn), Some(message)) = (link.start.take(), message) {
                    let _ = control::send(&conn, &Reply::Error { message });
                }
                let _ = std::fs::remove_file(dir.join(CONTROL_SOCKET));
                // Out of the container's cgroup before `stopped` is seen: `delete` may remove
                // it at once.
                if let Some(cgroup) = self.cgroup.take() {
                    cgroup.step_out();
                }
                self.state.status = Status::Stopped;
                let _ = self.store.save(&self.state);
            }
        }
    }
}

/// Waits for `runvm start` on the control socket; other requests are refused meanwhile.
fn wait_for_start(listener: &UnixListener) -> Result<UnixStream, RunError> {
    loop {
        let (conn, _) = listener.accept().map_err(|source| RunError::Io {
            what: "control socket",
            source,
        })?;
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        match control::recv::<Request>(&conn) {
            Ok(Some(Request::Start)) => return Ok(conn),
            Ok(Some(_)) => {
                let message = "the container is not running: start it first".into();
                let _ = control::send(&conn, &Reply::Error { message });
            }
            Ok(None) | Err(_) => {}
        }
    }
}

/// The poststop hooks a sandbox saved for `runvm delete`, read before the directory goes.
pub fn poststop_hooks(store: &Store, id: &str) -> Option<Hooks> {
    let path = store.dir(id).join(POSTSTOP_HOOKS);
    let text = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<Vec<oci_spec::runtime::Hook>>(&text) {
        Ok(list) => {
            let mut hooks = Hooks::default();
            hooks.set_poststop(Some(list));
            Some(hooks)
        }
        Err(e) => {
            eprintln!("runvm: warning: {}: {e}", path.display());
            None
        }
    }
}

/// `runvm delete`'s part: runs `hooks`' poststop hooks (failures are warnings).
pub fn run_poststop(hooks: Option<&Hooks>, state: &ContainerState) {
    let mut state = state.clone();
    state.status = Status::Stopped;
    state.pid = 0;
    hooks::run_stage_warning(hooks, Stage::Poststop, &state, &HookPlace::default());
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
    match control::ask(&path, id, &Request::Start, START_PATIENCE) {
        Ok(Reply::Ok) => Ok(()),
        Ok(Reply::Error { message }) => Err(message),
        Ok(other) => Err(format!("the sandbox of {id} answered {other:?}")),
        Err(e) => Err(e),
    }
}
