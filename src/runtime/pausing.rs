//! Requests to a running container's sandbox beyond exec: `runvm ps`, `kill --all`,
//! `pause`, `resume`, `update` and `events`' figures.
//!
//! `runvm pause` and `runvm resume`: the running container's sandbox stops its VM's vCPUs
//! between two guest instructions (every process of the container stops with them, as
//! runc's cgroup freezer stops them) or lets them run again; the status is recorded under
//! the container's lock. A paused container refuses `exec`; `kill` and `delete --force`
//! still end it (SIGKILL ends the sandbox, and the VM with it).

use std::path::Path;
use std::time::Duration;

use guest_init::protocol::{ProcessInfo, Resources, Stats};

use super::control::{self, Reply, Request};
use super::sandbox::CONTROL_SOCKET;
use super::state::{Status, Store};

/// How long the sandbox may take to pause or resume the vCPUs.
const PATIENCE: Duration = Duration::from_secs(30);

/// Pauses container `id`, which must be running.
pub fn pause(root: &Path, id: &str) -> Result<(), String> {
    let from = (Status::Running, "container not running");
    change(root, id, from, Request::Pause, Status::Paused)
}

/// Resumes container `id`, which must be paused.
pub fn resume(root: &Path, id: &str) -> Result<(), String> {
    let from = (Status::Paused, "container not paused");
    change(root, id, from, Request::Resume, Status::Running)
}

/// Moves `id` from status `from.0` (else fails with `from.1`) to `to` with `request`.
fn change(
    root: &Path,
    id: &str,
    from: (Status, &str),
    request: Request,
    to: Status,
) -> Result<(), String> {
    let store = Store::new(root);
    let _lock = store.lock(id).map_err(|e| e.to_string())?;
    let mut state = store.load(id).map_err(|e| e.to_string())?;
    if state.status != from.0 {
        return Err(from.1.into());
    }
    ask_ok(&store, id, &request)?;
    // The process may have ended meanwhile: the sandbox's own record wins then.
    if matches!(store.load(id), Ok(s) if s.status == from.0) {
        state.status = to;
        store.save(&state).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Sends `request` to the sandbox of `id` and takes the answer `pick` accepts; an error
/// reply is its message, any other reply an unexpected answer.
fn ask_for<T>(
    store: &Store,
    id: &str,
    request: &Request,
    pick: impl FnOnce(Reply) -> Result<T, Reply>,
) -> Result<T, String> {
    let path = store.dir(id).join(CONTROL_SOCKET);
    match pick(control::ask(&path, id, request, PATIENCE)?) {
        Ok(t) => Ok(t),
        Err(Reply::Error { message }) => Err(message),
        Err(other) => Err(format!("the sandbox of {id} answered {other:?}")),
    }
}

/// Sends `request` to the sandbox of `id`; only `Ok` is success.
fn ask_ok(store: &Store, id: &str, request: &Request) -> Result<(), String> {
    ask_for(store, id, request, |r| match r {
        Reply::Ok => Ok(()),
        other => Err(other),
    })
}

/// Fails unless `id` is running; `what` names the request in the refusal of a paused one.
fn require_running(store: &Store, id: &str, what: &str) -> Result<(), String> {
    match store.load(id).map_err(|e| e.to_string())?.status {
        Status::Running => Ok(()),
        Status::Paused => Err(format!("cannot {what} a paused container")),
        _ => Err("container not running".into()),
    }
}

/// `runvm ps`: the running container's processes, as its guest lists them.
pub fn processes(root: &Path, id: &str) -> Result<Vec<ProcessInfo>, String> {
    let store = Store::new(root);
    require_running(&store, id, "list the processes of")?;
    ask_for(&store, id, &Request::Ps, |r| match r {
        Reply::Processes { processes } => Ok(processes),
        other => Err(other),
    })
}

/// `runvm ps --format json`: the running container's host pids, as engines (docker top)
/// look them up in the host's process table: its sandbox's.
pub fn host_pids(root: &Path, id: &str) -> Result<Vec<i32>, String> {
    let store = Store::new(root);
    require_running(&store, id, "list the processes of")?;
    let state = store.load(id).map_err(|e| e.to_string())?;
    Ok(vec![state.pid])
}

/// `runvm update`: new limits for the running container's cgroup in its guest.
pub fn update(root: &Path, id: &str, resources: Resources) -> Result<(), String> {
    let store = Store::new(root);
    require_running(&store, id, "update")?;
    ask_ok(&store, id, &Request::Update { resources })
}

/// `runvm events`: the running container's resource use.
pub fn stats(root: &Path, id: &str) -> Result<Stats, String> {
    let store = Store::new(root);
    require_running(&store, id, "read the stats of")?;
    ask_for(&store, id, &Request::Stats, |r| match r {
        Reply::Stats { stats } => Ok(*stats),
        other => Err(other),
    })
}

/// `runvm kill --all`: `signal` to every process of the running container.
pub fn signal_all(root: &Path, id: &str, signal: i32) -> Result<(), String> {
    ask_ok(&Store::new(root), id, &Request::KillAll { signal })
}
