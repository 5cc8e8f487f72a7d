//! Requests to a running container's sandbox beyond exec: `runvm ps`, `kill --all`,
//! `pause` and `resume`.
//!
//! `runvm pause` and `runvm resume`: the running container's sandbox stops its VM's vCPUs
//! between two guest instructions (every process of the container stops with them, as
//! runc's cgroup freezer stops them) or lets them run again; the status is recorded under
//! the container's lock. A paused container refuses `exec`; `kill` and `delete --force`
//! still end it (SIGKILL ends the sandbox, and the VM with it).

use std::path::Path;
use std::time::Duration;

use guest_init::protocol::ProcessInfo;

use super::control::{self, Reply, Request};
use super::sandbox::CONTROL_SOCKET;
use super::state::{Status, Store};

/// How long the sandbox may take to pause or resume the vCPUs.
const PATIENCE: Duration = Duration::from_secs(30);

/// Pauses container `id`, which must be running.
pub fn pause(root: &Path, id: &str) -> Result<(), String> {
    change(root, id, Status::Running, Request::Pause, Status::Paused)
        .map_err(|e| e.unwrap_or_else(|| "container not running".into()))
}

/// Resumes container `id`, which must be paused.
pub fn resume(root: &Path, id: &str) -> Result<(), String> {
    change(root, id, Status::Paused, Request::Resume, Status::Running)
        .map_err(|e| e.unwrap_or_else(|| "container not paused".into()))
}

/// Moves `id` from `from` to `to` with `request`; `Err(None)` when it is not in `from`.
fn change(
    root: &Path,
    id: &str,
    from: Status,
    request: Request,
    to: Status,
) -> Result<(), Option<String>> {
    let store = Store::new(root);
    let _lock = store.lock(id).map_err(|e| Some(e.to_string()))?;
    let mut state = store.load(id).map_err(|e| Some(e.to_string()))?;
    if state.status != from {
        return Err(None);
    }
    let path = store.dir(id).join(CONTROL_SOCKET);
    match control::ask(&path, id, &request, PATIENCE).map_err(Some)? {
        Reply::Ok => {}
        Reply::Error { message } => return Err(Some(message)),
        other => return Err(Some(format!("the sandbox of {id} answered {other:?}"))),
    }
    // The process may have ended meanwhile: the sandbox's own record wins then.
    if matches!(store.load(id), Ok(s) if s.status == from) {
        state.status = to;
        store.save(&state).map_err(|e| Some(e.to_string()))?;
    }
    Ok(())
}

/// `runvm ps`: the running container's processes, as its guest lists them.
pub fn processes(root: &Path, id: &str) -> Result<Vec<ProcessInfo>, String> {
    let store = Store::new(root);
    let state = store.load(id).map_err(|e| e.to_string())?;
    if !matches!(state.status, Status::Running | Status::Paused) {
        return Err("container not running".into());
    }
    if state.status == Status::Paused {
        return Err("cannot list the processes of a paused container".into());
    }
    let path = store.dir(id).join(CONTROL_SOCKET);
    match control::ask(&path, id, &Request::Ps, PATIENCE)? {
        Reply::Processes { processes } => Ok(processes),
        Reply::Error { message } => Err(message),
        other => Err(format!("the sandbox of {id} answered {other:?}")),
    }
}

/// `runvm kill --all`: `signal` to every process of the running container.
pub fn signal_all(root: &Path, id: &str, signal: i32) -> Result<(), String> {
    let store = Store::new(root);
    let path = store.dir(id).join(CONTROL_SOCKET);
    match control::ask(&path, id, &Request::KillAll { signal }, PATIENCE)? {
        Reply::Ok => Ok(()),
        Reply::Error { message } => Err(message),
        other => Err(format!("the sandbox of {id} answered {other:?}")),
    }
}
