//! `runvm kill ID [SIGNAL]` and `runvm delete [--force] ID`, with runc's semantics and words.
//! The container's host pid stands for its process: a signal sent to it is forwarded into the
//! VM (SIGKILL ends the VM with it); deleting removes what a stopped container left.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::runtime::run::validate_id;
use crate::runtime::signals;
use crate::runtime::state::{StateError, Status, Store, process_start};

/// Flags of `runvm kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Send to every process of the container (the VM holds only the container's processes:
    /// the signal goes to its init, as without the flag).
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
    match store.load(&args.id) {
        Ok(state) if state.status != Status::Stopped => {
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
        // Stopped, or a directory whose state was never written (an aborted create).
        Ok(_) | Err(StateError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    drop(lock);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context(format!("cannot remove {}", dir.display())),
    }
}
