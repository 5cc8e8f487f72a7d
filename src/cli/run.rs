//! `runvm run [--bundle DIR] [--pid-file F] ID`: create and start a container in the
//! foreground, with runc's flags; exits with the container process's status.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::runtime::run::{self, RunOptions};

/// Flags of `runvm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The bundle directory (default: the current directory).
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
    /// Write this process's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// A Unix socket the terminal's master is sent to (else the terminal is runvm's own).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// The container id.
    id: String,
}

/// Runs the container.
pub fn run(args: &RunArgs, cli: &super::Cli) -> anyhow::Result<ExitCode> {
    let opts = RunOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        root: cli.root.clone(),
        debug: cli.debug,
        ready: None,
        console_socket: args.console_socket.clone(),
        systemd_cgroup: cli.systemd_cgroup,
    };
    let status = run::run(opts)?.status();
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(255)))
}
