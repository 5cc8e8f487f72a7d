//! `runvm exec`: runs one more process in a running container, with runc's flags. The
//! process comes from `--process FILE` (an OCI process JSON, as containerd's shim passes it)
//! or from the container's own process with the command line's args and overrides; the
//! relay (`runtime::exec`) stands for it on the host.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use oci_spec::runtime::{Capability, Process, User};

use super::Cli;
use crate::runtime::bundle::Bundle;
use crate::runtime::exec::{self, ExecOptions, Outcome};
use crate::runtime::run::{tty_target, validate_id};
use crate::runtime::state::Store;

/// Flags of `runvm exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A Unix socket the terminal's master is sent to.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// The working directory.
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variables to add (`NAME=value`).
    #[arg(long, short)]
    env: Vec<String>,
    /// Allocate a terminal.
    #[arg(long, short)]
    tty: bool,
    /// The user, `UID[:GID]`.
    #[arg(long, short)]
    user: Option<String>,
    /// Additional groups.
    #[arg(long = "additional-gids", short = 'g')]
    additional_gids: Vec<u32>,
    /// The process as OCI JSON (its args, env, cwd... replace the container's).
    #[arg(long, short)]
    process: Option<PathBuf>,
    /// Return once the process runs; a relay process stands for it.
    #[arg(long, short)]
    detach: bool,
    /// Write the relay's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility (no SELinux in the guest).
    #[arg(long = "process-label")]
    process_label: Option<String>,
    /// Accepted for runc compatibility (no AppArmor in the guest).
    #[arg(long)]
    apparmor: Option<String>,
    /// Set no_new_privileges.
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Capabilities to add.
    #[arg(long, short)]
    cap: Vec<String>,
    /// Extra descriptors to pass (only 0 is supported).
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for runc compatibility (the guest has one cgroup per container).
    #[arg(long)]
    cgroup: Vec<String>,
    /// Exec even if the container is paused.
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    /// The container id.
    id: String,
    /// The command and its arguments (without `--process`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the process and ends as it did (foreground) or once it runs (`--detach`).
pub fn exec(args: &ExecArgs, cli: &Cli) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    if args.preserve_fds != 0 {
        bail!("--preserve-fds is not supported by runvm yet");
    }
    let _ = (&args.process_label, &args.apparmor, &args.cgroup);
    let _ = args.ignore_paused;
    let mut process = process(args, cli)?;
    if args.tty {
        process.set_terminal(Some(true));
    }
    let tty = tty_target(
        process.terminal() == Some(true),
        args.console_socket.as_deref(),
        args.detach,
    )?;
    let opts = ExecOptions {
        root: cli.root.clone(),
        id: args.id.clone(),
        process,
        detach: args.detach,
        pid_file: args.pid_file.clone(),
        tty,
    };
    match exec::exec(&opts)? {
        Outcome::Detached => Ok(ExitCode::SUCCESS),
        Outcome::Ended(end) => Ok(ExitCode::from(u8::try_from(end.status()).unwrap_or(255))),
    }
}

/// The process to run: `--process`, or the container's with the command line's changes.
fn process(args: &ExecArgs, cli: &Cli) -> anyhow::Result<Process> {
    if let Some(path) = &args.process {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the process file {}", path.display()))?;
        let process: Process = serde_json::from_str(&text)
            .with_context(|| format!("invalid process file {}", path.display()))?;
        if process.args().as_ref().is_none_or(Vec::is_empty) {
            bail!("process args cannot be empty");
        }
        return Ok(process);
    }
    if args.command.is_empty() {
        bail!("exec: no command given (use --process or give the command)");
    }
    let state = Store::new(&cli.root).load(&args.id)?;
    let bundle = Bundle::load(&state.bundle)?;
    let mut p = bundle.spec.process().clone().unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(false));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.into());
    }
    if let Some(user) = &args.user {
        p.set_user(parse_user(user, p.user())?);
    }
    if !args.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(args.additional_gids.clone()));
        p.set_user(user);
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !args.cap.is_empty() {
        add_caps(&mut p, &args.cap)?;
    }
    Ok(p)
}

/// `UID[:GID]` over `base`.
fn parse_user(text: &str, base: &User) -> anyhow::Result<User> {
    let mut user = base.clone();
    let (uid, gid) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    user.set_uid(
        uid.parse()
            .with_context(|| format!("invalid user {text:?}"))?,
    );
    user.set_gid(match gid {
        Some(g) => g
            .parse()
            .with_context(|| format!("invalid user {text:?}"))?,
        None => 0,
    });
    Ok(user)
}

/// Adds `caps` (`CAP_NET_ADMIN` or `NET_ADMIN`) to the bounding, effective and permitted sets.
fn add_caps(p: &mut Process, caps: &[String]) -> anyhow::Result<()> {
    let parsed = caps
        .iter()
        .map(|c| {
            let upper = c.to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            bare.parse::<Capability>()
                .map_err(|_| anyhow::anyhow!("unknown capability {c:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sets = p.capabilities().clone().unwrap_or_default();
    let add = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut s = set.clone().unwrap_or_default();
        s.extend(parsed.iter().copied());
        Some(s)
    };
    sets.set_bounding(add(sets.bounding()));
    sets.set_effective(add(sets.effective()));
    sets.set_permitted(add(sets.permitted()));
    p.set_capabilities(Some(sets));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_as_runc_takes_them() {
        let base = User::default();
        let u = parse_user("1000:50", &base).unwrap();
        assert_eq!((u.uid(), u.gid()), (1000, 50));
        let u = parse_user("7", &base).unwrap();
        assert_eq!((u.uid(), u.gid()), (7, 0));
        assert!(parse_user("root", &base).is_err());
    }

    #[test]
    fn capabilities_are_added_with_or_without_prefix() {
        let mut p = Process::default();
        add_caps(&mut p, &["NET_ADMIN".into(), "cap_sys_time".into()]).unwrap();
        let caps = p.capabilities().clone().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            let set = set.clone().unwrap();
            assert!(set.contains(&Capability::NetAdmin));
            assert!(set.contains(&Capability::SysTime));
        }
        assert!(add_caps(&mut p, &["FLY".into()]).is_err());
    }
}
