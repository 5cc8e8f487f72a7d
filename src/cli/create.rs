//! `runvm create`, `runvm start` and the hidden `runvm sandbox` that `create` forks: the
//! sandbox is the container's host pid (its pid goes to `--pid-file`, written last, once the
//! container is created); it exits with the container process's code, or dies by the signal
//! that killed it, so a shim waiting on it sees what runc's would show.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, anyhow, bail};
use clap::Args;

use super::Cli;
use crate::runtime::bundle::Bundle;
use crate::runtime::run::{self, RunOptions, validate_id};
use crate::runtime::state::Store;
use crate::runtime::{host_cgroup, sandbox, signals};

/// Flags of `runvm create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle directory (default: the current directory).
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
    /// Write the container's host pid here once it is created.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// A Unix socket the terminal's master is sent to (the spec asks for a terminal).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (runvm never pivots: the guest's root is an initramfs).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Extra descriptors to pass (only 0 is supported).
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// The container id.
    id: String,
}

/// Flags of `runvm start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The container id.
    id: String,
}

/// Flags of the hidden `runvm sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The bundle directory.
    #[arg(long)]
    bundle: PathBuf,
    /// The descriptor of the pipe to `runvm create`.
    #[arg(long = "ready-fd")]
    ready_fd: i32,
    /// Where the terminal's master goes.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// The container id.
    id: String,
}

/// The most bytes of the sandbox's answer `create` reads.
const MAX_ANSWER: u64 = 64 << 10;

/// Forks the sandbox, waits until it reports the container created, writes the pid file.
pub fn create(args: &CreateArgs, cli: &Cli) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    if args.preserve_fds != 0 {
        bail!("--preserve-fds is not supported by runvm yet");
    }
    let _ = (args.no_pivot, args.no_new_keyring);
    // A bad bundle or a taken id fails here, before any process or VM exists.
    let bundle = Bundle::load(&args.bundle)?.dir;
    if cli.root.join(&args.id).exists() {
        bail!("container {} already exists", args.id);
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints; no flags, so the write end is inherited.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: pipe just returned these descriptors; nothing else owns them.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own: the sandbox must not inherit the read end.
    unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let exe = std::env::current_exe().context("cannot find runvm's own binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(&cli.root);
    if cli.debug {
        cmd.arg("--debug");
    }
    if let Some(log) = &cli.log {
        cmd.arg("--log").arg(log);
    }
    cmd.arg("--log-format").arg(cli.log_format.name());
    if cli.systemd_cgroup {
        cmd.arg("--systemd-cgroup");
    }
    cmd.arg("sandbox")
        .arg("--bundle")
        .arg(&bundle)
        .arg("--ready-fd")
        .arg(write_end.as_raw_fd().to_string());
    if let Some(socket) = &args.console_socket {
        // Absolute: the path must not depend on where the sandbox works.
        cmd.arg("--console-socket")
            .arg(std::path::absolute(socket)?);
    }
    // With a console socket the process's stdio is the terminal: the sandbox must not hold
    // ours, whose end a caller may wait for (containerd's shim reads `create`'s output to EOF).
    let stdio = || match args.console_socket {
        Some(_) => Stdio::null(),
        None => Stdio::inherit(),
    };
    cmd.arg(&args.id)
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio());
    let mut child = cmd.spawn().context("cannot start the sandbox")?;
    drop(write_end);
    let mut answer = String::new();
    let _ = File::from(read_end)
        .take(MAX_ANSWER)
        .read_to_string(&mut answer);
    if answer.trim() != "ok" {
        let _ = child.wait();
        let message = answer.trim();
        let message = message.strip_prefix("error: ").unwrap_or(message);
        if message.is_empty() {
            // Killed before it could clean up (a sandbox that fails says why, having
            // removed what it made): what it left is ours to remove, if it is its.
            let store = Store::new(&cli.root);
            if store.recorded_pid(&args.id) == Some(child.id() as i32) {
                let dir = store.dir(&args.id);
                host_cgroup::remove_recorded(&dir);
                let _ = std::fs::remove_dir_all(&dir);
            }
            bail!("the sandbox ended before the container was created");
        }
        return Err(anyhow!("{message}"));
    }
    if let Some(p) = &args.pid_file {
        run::write_pid_file_for(p, child.id())
            .with_context(|| format!("cannot write the pid file {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Releases the created container's process.
pub fn start(args: &StartArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    sandbox::start(root, &args.id).map_err(|e| anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The sandbox: runs the container and ends as its process did.
pub fn sandbox(
    args: &SandboxArgs,
    root: &Path,
    debug: bool,
    systemd_cgroup: bool,
) -> anyhow::Result<ExitCode> {
    if args.ready_fd < 3 {
        bail!("invalid --ready-fd {}", args.ready_fd);
    }
    // SAFETY: `create` handed us this descriptor for this purpose; File takes it over.
    let ready = unsafe { File::from_raw_fd(args.ready_fd) };
    // SAFETY: fcntl on the descriptor we now own: the VM's helpers must not inherit it.
    unsafe { libc::fcntl(ready.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let opts = RunOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: None,
        root: root.to_owned(),
        debug,
        ready: Some(ready),
        console_socket: args.console_socket.clone(),
        systemd_cgroup,
    };
    let dir = root.join(&args.id);
    let exit = match run::run(opts) {
        Ok(exit) => exit,
        // Never created: the error went to `create`, which reports it.
        Err(_) if !dir.exists() => return Ok(ExitCode::FAILURE),
        Err(e) => return Err(e.into()),
    };
    if let Some(sig) = exit.signal {
        signals::die_by(sig);
    }
    Ok(ExitCode::from(u8::try_from(exit.status()).unwrap_or(255)))
}
