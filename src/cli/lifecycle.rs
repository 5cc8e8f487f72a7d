//! `runvm kill ID [SIGNAL]`, `runvm delete [--force] ID`, `runvm pause ID` and
//! `runvm resume ID`, with runc's semantics and words.
//! The container's host pid stands for its process: a signal sent to it is forwarded into the
//! VM (SIGKILL ends the VM with it); deleting removes what a stopped container left.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::runtime::bundle::Bundle;
use crate::runtime::run::validate_id;
use crate::runtime::state::{StateError, Status, Store, process_start};
use crate::runtime::{host_cgroup, pausing, sandbox, signals};

/// Flags of `runvm kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Send to every process of the container.
    #[arg(long, short)]
    all: bool,
    /// The container id.
    id: String,
    /// The signal: a name (`KILL`, `SIGKILL`) or a number.
    #[arg(default_value = "SIGTERM")]
    signal: String,
}

/// Flags of `runvm delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill a container that is not stopped, then delete it.
    #[arg(long, short)]
    force: bool,
    /// The container id.
    id: String,
}

/// Flags of `runvm pause` and `runvm resume`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The container id.
    id: String,
}

/// Pauses the container's VM.
pub fn pause(args: &IdArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    pausing::pause(root, &args.id).map_err(|e| anyhow::anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}

/// Resumes the container's VM.
pub fn resume(args: &IdArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    pausing::resume(root, &args.id).map_err(|e| anyhow::anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}

/// How long `delete --force` waits for a killed container's process to go.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Sends the signal.
pub fn kill(args: &KillArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    let Some(sig) = signals::parse(&args.signal) else {
        bail!("unknown signal {:?}", args.signal);
    };
    let store = Store::new(root);
    let _lock = store.lock(&args.id)?;
    let state = store.load(&args.id)?;
    if state.status == Status::Stopped {
        bail!("container not running");
    }
    // SIGKILL ends the VM, and every process in it, through the host pid; other signals for
    // every process go to them in the guest (a created container has only its init).
    if args.all && sig != libc::SIGKILL && state.status == Status::Running {
        pausing::signal_all(root, &args.id, sig).map_err(|e| anyhow::anyhow!(e))?;
        return Ok(ExitCode::SUCCESS);
    }
    // SAFETY: kill takes no pointers.
    if unsafe { libc::kill(state.pid, sig) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            bail!("container not running");
        }
        return Err(e).context(format!("cannot signal process {}", state.pid));
    }
    Ok(ExitCode::SUCCESS)
}

/// Deletes the container's state; with `--force`, kills it first.
pub fn delete(args: &DeleteArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    let store = Store::new(root);
    let dir = store.dir(&args.id);
    let lock = match store.lock(&args.id) {
        Ok(l) => l,
        Err(StateError::NotFound(_)) if args.force => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e.into()),
    };
    let loaded = match store.load(&args.id) {
        Ok(state) => Some(state),
        // A directory whose state was never written (an aborted create).
        Err(StateError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match &loaded {
        Some(state) if state.status != Status::Stopped => {
            if !args.force {
                bail!(
                    "cannot delete container {} that is not stopped: {}",
                    args.id,
                    state.status.name()
                );
            }
            let start = state.pid_start;
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(state.pid, libc::SIGKILL) };
            let deadline = Instant::now() + KILL_WAIT;
            while process_start(state.pid) == Some(start) {
                if Instant::now() > deadline {
                    bail!(
                        "container {} did not die within {} s",
                        args.id,
                        KILL_WAIT.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        _ => {}
    }
    let poststop = sandbox::poststop_hooks(&store, &args.id);
    host_cgroup::remove_recorded(&dir);
    // The sandbox is gone: what it left in the namespace it joined goes too.
    if let Some(bundle) = loaded.as_ref().and_then(|s| Bundle::load(&s.bundle).ok()) {
        crate::runtime::net::clear_stale(&bundle.spec);
    }
    let removed = std::fs::remove_dir_all(&dir);
    // The container is gone: its poststop hooks run before `delete` returns.
    if let Some(state) = &loaded {
        sandbox::run_poststop(poststop.as_ref(), state);
    }
    drop(lock);
    match removed {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context(format!("cannot remove {}", dir.display())),
    }
}
