//! The command line, in runc's form: global flags, then one verb. Each verb lives in its own
//! file; this module parses, dispatches, and turns errors into runc-style reports (one line
//! on stderr, and a JSON line in `--log` for containerd to show).

mod check;
mod create;
mod debug;
mod exec;
mod lifecycle;
pub mod log;
mod resources;
mod run;
mod spec;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

pub use log::LogFormat;

/// The text of `runvm --version`, in runc's shape.
const VERSION_TEXT: &str = concat!(
    "version ",
    env!("CARGO_PKG_VERSION"),
    "\nspec: ",
    "1.2.0",
    "\nvmm: KVM (rust-vmm)"
);

/// runvm: an OCI runtime that runs each container in its own KVM microVM.
#[derive(Debug, Parser)]
#[command(name = "runvm", version = VERSION_TEXT, disable_version_flag = true)]
pub struct Cli {
    /// Print the version.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    version: Option<bool>,

    /// Root directory for container state.
    #[arg(long, global = true, default_value = "/run/runvm")]
    pub root: PathBuf,

    /// Write log messages to this file instead of stderr.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,

    /// The format of `--log`: text or json.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log debug messages too.
    #[arg(long, global = true)]
    pub debug: bool,

    /// Accepted for runc compatibility: cgroup paths are then `slice:prefix:name`.
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,

    /// Accepted for runc compatibility (`true`, `false` or `auto`); runvm needs root today.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,

    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check whether this host can run runvm containers.
    Check(check::CheckArgs),
    /// Create and run a container in the foreground.
    Run(run::RunArgs),
    /// Print the state of a container (OCI state JSON).
    State(state::StateArgs),
    /// List the containers.
    List(state::ListArgs),
    /// Create a container: boot its microVM; its host pid goes to --pid-file.
    Create(create::CreateArgs),
    /// Start a created container's process.
    Start(create::StartArgs),
    /// The container's host process (started by `create`).
    #[command(hide = true)]
    Sandbox(create::SandboxArgs),
    /// A sandbox's sacrificial child: an OOM kill in its host cgroup (runtime::host_oom).
    #[command(hide = true, name = crate::runtime::host_oom::SACRIFICE_VERB)]
    OomSacrifice,
    /// Run one more process in a running container.
    Exec(exec::ExecArgs),
    /// Send a signal to a container's process.
    Kill(lifecycle::KillArgs),
    /// Delete a stopped container (`--force`: kill it first).
    Delete(lifecycle::DeleteArgs),
    /// List a container's processes.
    Ps(state::PsArgs),
    /// Pause a running container (its VM's vCPUs stop).
    Pause(lifecycle::IdArgs),
    /// Resume a paused container.
    Resume(lifecycle::IdArgs),
    /// Change a running container's resource limits.
    Update(resources::UpdateArgs),
    /// Print a container's resource use as JSON events.
    Events(resources::EventsArgs),
    /// Write a default config.json.
    Spec(spec::SpecArgs),
    /// Print what runvm supports (OCI features JSON).
    Features,
    /// Developer tools: measure a guest boot, write the initramfs.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

/// Parses the process's arguments, runs the verb, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logger = log::Logger::new(cli.log.clone(), cli.log_format);
    log::install(logger.clone());
    // Verbs that only print end quietly when their reader goes (`runvm list | head`), as
    // runc's do; the others relay containers' output and must outlive a closed pipe.
    if matches!(
        cli.command,
        Command::State(_)
            | Command::List(_)
            | Command::Ps(_)
            | Command::Features
            | Command::Events(_)
            | Command::Check(_)
    ) {
        // SAFETY: restoring a default disposition, before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Debug(cmd) => debug::run(cmd, cli.debug),
        Command::Run(args) => run::run(args, &cli),
        Command::State(args) => state::state(args, &cli.root),
        Command::List(args) => state::list(args, &cli.root),
        Command::Create(args) => create::create(args, &cli),
        Command::Start(args) => create::start(args, &cli.root),
        Command::Sandbox(args) => create::sandbox(args, &cli.root, cli.debug, cli.systemd_cgroup),
        Command::OomSacrifice => crate::runtime::host_oom::sacrifice()
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Exec(args) => exec::exec(args, &cli),
        Command::Kill(args) => lifecycle::kill(args, &cli.root),
        Command::Delete(args) => lifecycle::delete(args, &cli.root),
        Command::Ps(args) => state::ps(args, &cli.root),
        Command::Pause(args) => lifecycle::pause(args, &cli.root),
        Command::Resume(args) => lifecycle::resume(args, &cli.root),
        Command::Update(args) => resources::update(args, &cli.root),
        Command::Events(args) => resources::events(args, &cli.root),
        Command::Spec(args) => spec::spec(args, cli.rootless.as_deref()),
        Command::Features => spec::features(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            logger.error(&one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause added only if the message does not
/// already say it (our error types print their source themselves).
fn one_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.is_empty() {
            msg = text;
        } else if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("bind {path}: {source}")]
        struct Bind {
            path: String,
            source: std::io::Error,
        }
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let err = anyhow::Error::new(Bind {
            path: "/x".into(),
            source: io,
        })
        .context("cannot assemble");
        assert_eq!(
            one_line(&err),
            "cannot assemble: bind /x: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_the_verb_as_containerd_passes_them() {
        let cli = Cli::try_parse_from([
            "runvm",
            "--root",
            "/run/x",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "check",
        ])
        .unwrap();
        assert_eq!(cli.root, PathBuf::from("/run/x"));
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(cli.systemd_cgroup);
        assert!(matches!(cli.command, Command::Check(_)));
    }
}
