//! OCI hooks, run on the host by the container's host process: each hook gets the OCI state
//! on its stdin, its `args` (the first is its argv[0]) and exactly its `env` (none given:
//! runvm's own, as runc's Go `exec` does), and must end within its `timeout`, or it is
//! killed.
//!
//! What runvm does where a VM runtime must differ from runc: every stage runs on the host.
//! `prestart`, `createRuntime` and `createContainer` run once the VM is up and the container
//! is about to be reported created, with the sandbox's pid in the state (it holds the
//! container's network namespace, which is what hooks such as docker's libnetwork-setkey
//! need); `startContainer` runs when `start` releases the process, just before guest-init
//! starts it; `poststart` once it runs, before `start` returns; `poststop` when the container
//! is deleted (or its foreground `run` ends). runc runs `createContainer` and
//! `startContainer` inside the container's namespaces, which live in the guest here: they
//! see the sandbox's network namespace and the host's mount namespace instead. Hooks run in
//! the host's mount namespace, not the private one runvm keeps for the shared directory.
//!
//! A failing hook of the first four stages fails the operation; a failing `poststart` or
//! `poststop` hook is reported as a warning and the rest go on (the runtime spec's rules).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};
use serde::Serialize;

use super::state::{ContainerState, OCI_VERSION, Status};

/// The most bytes of a hook's stdout or stderr kept for an error message.
const MAX_OUTPUT: u64 = 4096;
/// How long a hook's output may still come once it has ended.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// How often a running hook is checked against its timeout.
const POLL: Duration = Duration::from_millis(10);

/// The lifecycle points hooks run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Deprecated by OCI, still what docker uses.
    Prestart,
    /// After the runtime created the container's environment.
    CreateRuntime,
    /// runc: inside the container, before its root changes.
    CreateContainer,
    /// runc: inside the container, before its process starts.
    StartContainer,
    /// After the process started.
    Poststart,
    /// After the container is deleted.
    Poststop,
}

impl Stage {
    /// The spec's name of the stage.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::CreateContainer => "createContainer",
            Stage::StartContainer => "startContainer",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }

    /// The stage's hooks in `hooks`.
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        let list = match self {
            #[allow(deprecated)]
            Stage::Prestart => hooks.prestart(),
            Stage::CreateRuntime => hooks.create_runtime(),
            Stage::CreateContainer => hooks.create_container(),
            Stage::StartContainer => hooks.start_container(),
            Stage::Poststart => hooks.poststart(),
            Stage::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }

    /// Whether a failure of this stage's hooks fails the operation (else: a warning).
    pub fn is_fatal(self) -> bool {
        !matches!(self, Stage::Poststart | Stage::Poststop)
    }
}

/// A hook that failed, one line.
#[derive(Debug, thiserror::Error)]
#[error("error running {stage} hook #{index} ({path}): {reason}")]
pub struct HookError {
    /// The stage's name.
    pub stage: &'static str,
    /// The hook's index in the stage.
    pub index: usize,
    /// The hook's path.
    pub path: String,
    /// What went wrong, with the hook's output.
    pub reason: String,
}

/// The OCI state a hook reads on stdin.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HookState<'a> {
    oci_version: &'static str,
    id: &'a str,
    status: Status,
    #[serde(skip_serializing_if = "is_zero")]
    pid: i32,
    bundle: &'a Path,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    annotations: &'a HashMap<String, String>,
}

fn is_zero(pid: &i32) -> bool {
    *pid == 0
}

/// Where hooks run: the mount namespace runvm started in (kept open before runvm moved to
/// a private one), or runvm's own; and the cgroups runvm started in, not the container's
/// (as runc's hooks, children of runc, are not in it): a hook that outlives the sandbox
/// must not keep the container's cgroup from being removed.
#[derive(Debug, Default)]
pub struct HookPlace {
    mount_ns: Option<OwnedFd>,
    cgroup_procs: Vec<std::ffi::CString>,
}

impl HookPlace {
    /// Hooks run in the mount namespace the calling process is in now.
    pub fn here() -> io::Result<HookPlace> {
        let ns = File::open("/proc/self/ns/mnt")?;
        Ok(HookPlace {
            mount_ns: Some(ns.into()),
            cgroup_procs: Vec::new(),
        })
    }

    /// Hooks start by moving into these cgroups (their `cgroup.procs` files).
    pub fn in_cgroups(mut self, procs: Vec<std::ffi::CString>) -> HookPlace {
        self.cgroup_procs = procs;
        self
    }
}

/// Runs `stage`'s hooks in order with `state` on their stdin; stops at the first failure.
pub fn run_stage(
    hooks: Option<&Hooks>,
    stage: Stage,
    state: &ContainerState,
    place: &HookPlace,
) -> Result<(), HookError> {
    let list = hooks.map_or(&[][..], |h| stage.of(h));
    let input = state_input(state);
    for (index, hook) in list.iter().enumerate() {
        run_one(hook, &input, place).map_err(|reason| HookError {
            stage: stage.name(),
            index,
            path: hook.path().display().to_string(),
            reason,
        })?;
    }
    Ok(())
}

/// Runs every one of `stage`'s hooks; a failure is a warning on stderr, and the rest go on.
pub fn run_stage_warning(
    hooks: Option<&Hooks>,
    stage: Stage,
    state: &ContainerState,
    place: &HookPlace,
) {
    let list = hooks.map_or(&[][..], |h| stage.of(h));
    let input = state_input(state);
    for (index, hook) in list.iter().enumerate() {
        if let Err(reason) = run_one(hook, &input, place) {
            let e = HookError {
                stage: stage.name(),
                index,
                path: hook.path().display().to_string(),
                reason,
            };
            eprintln!("runvm: warning: {e}");
        }
    }
}

/// The OCI state JSON of `state`.
fn state_input(state: &ContainerState) -> Vec<u8> {
    serde_json::to_vec(&HookState {
        oci_version: OCI_VERSION,
        id: &state.id,
        status: state.status,
        pid: state.pid,
        bundle: &state.bundle,
        annotations: &state.annotations,
    })
    .unwrap_or_default()
}

fn run_one(hook: &Hook, input: &[u8], place: &HookPlace) -> Result<(), String> {
    let path = hook.path();
    if !path.is_absolute() {
        return Err("the path is not absolute".into());
    }
    let args = hook.args().as_deref().unwrap_or(&[]);
    let mut cmd = Command::new(path);
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first).args(rest);
    }
    if let Some(env) = hook.env() {
        cmd.env_clear();
        for kv in env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            cmd.env(k, v);
        }
    }
    // Its own process group, so that a timeout kills whatever it started too.
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let ns = place.mount_ns.as_ref().map(|ns| ns.as_raw_fd());
    let procs = place.cgroup_procs.clone();
    // SAFETY: the closure runs in the forked child before exec and only calls open, write,
    // close and setns, which are async-signal-safe, on the closure's own paths and a
    // descriptor the parent keeps open until the child has exec'd (`place` outlives it).
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, c"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            if let Some(fd) = ns
                && libc::setns(fd, libc::CLONE_NEWNS) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_vec();
        // A hook that does not read its stdin must not block us: write from a thread.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());
    let timeout = hook
        .timeout()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .map(Duration::from_secs);
    let status = wait(&mut child, timeout);
    // Something the hook left running may hold its pipes open: take what came by then.
    let output = |rx: Receiver<String>| rx.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
    let (out, err) = (output(stdout), output(stderr));
    let failure = match status {
        Ok(s) if s.success() => return Ok(()),
        Ok(s) => s.to_string(),
        Err(e) => e,
    };
    Err(format!(
        "{failure}, stdout: {}, stderr: {}",
        one_line(&out),
        one_line(&err)
    ))
}

/// Waits for the hook; kills it once `timeout` has passed.
fn wait(child: &mut Child, timeout: Option<Duration>) -> Result<std::process::ExitStatus, String> {
    let Some(timeout) = timeout else {
        return child.wait().map_err(|e| e.to_string());
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                if let Ok(pgid) = i32::try_from(child.id()) {
                    // SAFETY: kill takes no pointers; the group is the hook's own.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                let _ = child.wait();
                return Err(format!(
                    "it ran past its timeout of {} s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Reads a hook's output on a thread: the first [`MAX_OUTPUT`] bytes are kept, the rest read
/// and dropped so that the hook never blocks on a full pipe.
fn capture<R: Read + Send + 'static>(pipe: Option<R>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = (&mut pipe).take(MAX_OUTPUT).read_to_end(&mut kept);
            let _ = io::copy(&mut pipe, &mut io::sink());
        }
        let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
    });
    rx
}

fn one_line(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
