//! `runvm run`: one container from start to end in the foreground. The bundle's root file
//! system is shared into a microVM sized from the spec; guest-init runs the spec's process
//! there with its stdin, stdout and stderr as vsock streams that this process relays to its
//! own; signals this process receives are forwarded; the exit status is the process's code,
//! or 128+N when signal N killed it (runc's convention). Everything it set up is removed
//! however it ends.
//!
//! The spec is translated on the host (`spec`); guest-init applies it (namespaces, mounts,
//! devices, users, capabilities, seccomp) and execs the process.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::bundle::{Bundle, BundleError};
use super::hooks::{HookError, HookPlace};
use super::host_cgroup::{self, CgroupError};
use super::host_edits;
use super::host_oom;
use super::net::netns::{self, NetnsError};
use super::net::{self, GuestNet, GuestNetError};
use super::relay;
use super::sandbox::Tracker;
use super::serve;
use super::shared_dir::{self, ShareError, SharedDir};
use super::sizing::{self, SizingError};
use super::spec::{self, SpecError};
use super::state::{ContainerState, StateError, Store};
use super::tty::{Terminal, TtyTarget};
use crate::agent::{Agent, AgentError};

use crate::config::{Config, ConfigError};
use crate::vmm::vm::{MicroVm, SHARE_TAG, VmConfig, VmError};

/// Where the guest mounts the share.
const GUEST_SHARE: &str = "/run/share";
/// Host vsock ports the process's stdin, stdout and stderr connect to.
const STDIO_PORTS: [u32; 3] = [1025, 1026, 1027];
/// The longest runvm waits for guest-init to connect or answer one request (the exec request
/// includes the whole container set-up). Milliseconds on hardware KVM; seconds inside the
/// nested L1 test VM under load, where 10 s proved too short.
const GUEST_PATIENCE: Duration = Duration::from_secs(60);
/// How long output may still drain after the process has exited.
const DRAIN: Duration = Duration::from_secs(5);

/// Errors of `runvm run`, each one line.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The container id is not acceptable.
    #[error("invalid container id {0:?}: use 1 to 1024 letters, digits, '_', '-', '+', '.'")]
    BadId(String),
    /// A container with this id exists.
    #[error("container {0} already exists")]
    Exists(String),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The container's state on disk.
    #[error(transparent)]
    State(#[from] StateError),
    /// The container's network namespace on the host.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The container's cgroup on the host.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A hook failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The spec asks for something the guest cannot do.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Sizing annotations.
    #[error(transparent)]
    Sizing(#[from] SizingError),
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The shared directory.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// The VM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The container's network in the VM.
    #[error(transparent)]
    Network(#[from] GuestNetError),
    /// The terminal the spec asks for.
    #[error("{0}")]
    Tty(String),
    /// The process could not start (runc's words follow).
    #[error("unable to start container process: {0}")]
    Start(String),
    /// Talking to guest-init.
    #[error(transparent)]
    Agent(AgentError),
    /// A host file or socket.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

impl From<AgentError> for RunError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Guest(message) => RunError::Start(message),
            other => RunError::Agent(other),
        }
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// What `runvm run` (or a sandbox) was asked.
#[derive(Debug)]
pub struct RunOptions {
    /// The container id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Where to write this process's pid.
    pub pid_file: Option<PathBuf>,
    /// The state root (`--root`).
    pub root: PathBuf,
    /// Echo the guest console.
    pub debug: bool,
    /// The pipe to `runvm create` when this process is a container's sandbox.
    pub ready: Option<std::fs::File>,
    /// Where the terminal's master goes (`--console-socket`).
    pub console_socket: Option<PathBuf>,
    /// `--systemd-cgroup`: cgroupsPath is `slice:prefix:name`.
    pub systemd_cgroup: bool,
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code.
    pub code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
}

impl Exit {
    /// runc's exit status for it: the code, or 128+N for signal N.
    pub fn status(self) -> i32 {
        match (self.code, self.signal) {
            // Both numbers come from the guest: never overflow on a hostile one.
            (_, Some(sig)) => 128i32.saturating_add(sig),
            (Some(code), None) => code,
            (None, None) => 255,
        }
    }
}

/// Checks a container id as runc does (letters, digits, `_ - + .`; not `.` or `..`).
pub fn validate_id(id: &str) -> Result<(), RunError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RunError::BadId(id.to_owned()))
    }
}

/// Runs the container; returns how its process ended.
pub fn run(mut opts: RunOptions) -> Result<Exit, RunError> {
    let mut ready = opts.ready.take();
    let detached = ready.is_some();
    let started = check(&opts, detached).and_then(|checked| {
        let claimed = claim(&opts, &checked.0, &checked.4)?;
        Ok((checked, claimed))
    });
    let ((bundle, size, config, tty, _), (state, place, joined)) = match started {
        Ok(s) => s,
        Err(e) => {
            // A sandbox's `create` waits for the reason.
            if let Some(mut r) = ready.take() {
                let _ = writeln!(r, "error: {e}");
            }
            return Err(e);
        }
    };
    opts.ready = ready;
    let dir = opts.root.join(&opts.id);
    let store = Store::new(&opts.root);
    let hooks = bundle.spec.hooks().clone();
    let mut tracker = Tracker::new(store, state, opts.ready, hooks, place, joined);
    let share = dir.join("share");
    // Forwarded signals are taken by a thread with sigwait: block them before any thread
    // exists, so that every thread inherits the mask.
    let signals = relay::block_forwarded_signals();
    let run = Run {
        debug: opts.debug,
        pid_file: opts.pid_file.as_deref(),
        signals,
        tty,
    };
    let result = SharedDir::create(&share, &bundle.root, &spec::host_binds(&bundle))
        .map_err(RunError::from)
        .and_then(|shared| in_vm(&run, &bundle, size, config, &shared, &mut tracker));
    // The mounts vanish with this process; the share's mount point is ours to remove.
    let _ = SharedDir::remove(&share);
    tracker.finish(&result.as_ref().map(|_| ()));
    result
}

/// What `check` found: the bundle, the VM's size, the configuration, the terminal, and
/// the host cgroup path.
type Checked = (Bundle, sizing::VmSize, Config, Option<TtyTarget>, String);

/// Everything that can be checked before anything exists; enters the network namespace
/// (while the process is single-threaded) last.
fn check(opts: &RunOptions, detached: bool) -> Result<Checked, RunError> {
    validate_id(&opts.id)?;
    let bundle = Bundle::load(&opts.bundle)?;
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let size = sizing::vm_size(&bundle.spec, host_cpus)?;
    // A bad annotation fails here, before anything is made.
    shared_dir::share_config(bundle.spec.annotations().as_ref())?;
    let config = Config::load()?;
    let terminal = bundle.spec.process().as_ref().and_then(|p| p.terminal());
    let tty = tty_target(
        terminal == Some(true),
        opts.console_socket.as_deref(),
        detached,
    )?;
    let cgroup = host_cgroup::cgroup_path(&bundle.spec, &opts.id, opts.systemd_cgroup)?;
    // Every thread to come starts in the container's namespace.
    netns::enter(&bundle.spec)?;
    Ok((bundle, size, config, tty, cgroup))
}

/// Claims the container's id: its directory and `creating` state, where hooks will run,
/// and its host cgroup. On failure nothing of it is left.
fn claim(
    opts: &RunOptions,
    bundle: &Bundle,
    cgroup: &str,
) -> Result<(ContainerState, HookPlace, host_cgroup::Joined), RunError> {
    std::fs::create_dir_all(&opts.root).map_err(io_err("cannot create the state root"))?;
    let dir = opts.root.join(&opts.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(RunError::Exists(opts.id.clone()));
        }
        Err(e) => return Err(io_err("cannot create the container's directory")(e)),
    }
    let claimed = (|| {
        let mut state = ContainerState::creating(
            &opts.id,
            std::process::id() as i32,
            &bundle.dir,
            &bundle.root,
        );
        state.annotations = bundle.spec.annotations().clone().unwrap_or_default();
        Store::new(&opts.root).save(&state)?;
        // Hooks run in the mount namespace runvm started in, not the share's private one.
        let place = HookPlace::here().map_err(io_err("cannot open runvm's mount namespace"))?;
        // The VMM's threads and memory are the container's on the host.
        let joined = host_cgroup::join(cgroup, &dir)?;
        let place = place.in_cgroups(joined.origin_procs());
        Ok((state, place, joined))
    })();
    if claimed.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    claimed
}

/// What `in_vm` needs of the options.
struct Run<'a> {
    debug: bool,
    pid_file: Option<&'a Path>,
    signals: libc::sigset_t,
    tty: Option<TtyTarget>,
}

/// Where a process's terminal goes, with runc's rules: a detached process (a sandbox, a
/// detached exec) needs a console socket for its terminal, and a console socket needs a
/// terminal to carry.
pub fn tty_target(
    terminal: bool,
    console_socket: Option<&Path>,
    detached: bool,
) -> Result<Option<TtyTarget>, RunError> {
    match (terminal, console_socket) {
        (true, Some(socket)) => Ok(Some(TtyTarget::Socket(socket.to_owned()))),
        (true, None) if detached => Err(RunError::Tty(
            "cannot allocate tty if runvm will detach without setting console socket".into(),
        )),
        (true, None) => Ok(Some(TtyTarget::Own)),
        (false, Some(_)) => Err(RunError::Tty(
            "cannot use console socket if runvm will not detach or allocate tty".into(),
        )),
        (false, None) => Ok(None),
    }
}

/// Writes `pid` to `path` atomically, mode 0644 whatever the umask (virtio-fs's
/// share server sets the process umask to 0 when a VM starts).
pub fn write_pid_file_for(path: &Path, pid: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            f.write_all(pid.to_string().as_bytes())
        })
        .and_then(|()| std::fs::rename(&tmp, path))
}

fn in_vm(
    opts: &Run<'_>,
    bundle: &Bundle,
    size: sizing::VmSize,
    config: Config,
    share: &SharedDir,
    tracker: &mut Tracker,
) -> Result<Exit, RunError> {
    let process = bundle
        .spec
        .process()
        .as_ref()
        .ok_or(RunError::Start("no process".into()))?;
    let binds: Vec<String> = share
        .binds
        .iter()
        .map(|b| format!("{GUEST_SHARE}/{}", b.display()))
        .collect();
    let mut exec = spec::exec_spec(
        bundle,
        process,
        &format!("{GUEST_SHARE}/rootfs"),
        &binds,
        STDIO_PORTS,
    )?;
    // Prepared at create, released at start.
    exec.hold = true;
    // The console socket gets its master now, during create, as runc sends it.
    let terminal = opts
        .tty
        .as_ref()
        .map(Terminal::open)
        .transpose()
        .map_err(|e| RunError::Tty(e.to_string()))?;
    if exec.console_size.is_none() {
        exec.console_size = terminal.as_ref().and_then(Terminal::size);
    }
    let net_slots = net::slots_for(&bundle.spec);
    let vm = MicroVm::start(&VmConfig {
        kernel: config.kernel,
        initramfs: Some(config.initramfs),
        vcpus: size.vcpus,
        memory_mib: size.memory_mib,
        extra_cmdline: String::new(),
        console_log: None,
        debug: opts.debug,
        allow_software_kvm: false,
        shared_dir: Some(share.root.clone()),
        share_config: shared_dir::share_config_for(share, bundle.spec.annotations().as_ref())?,
        net_slots: net_slots.count,
        net_offloads: net_slots.offloads,
    })?;
    if let Some(p) = opts.pid_file {
        write_pid_file_for(p, std::process::id()).map_err(io_err("cannot write the pid file"))?;
    }
    let agent = Arc::new(Agent::accept(&vm, GUEST_PATIENCE)?);
    // A kill for the memory limit in the guest is made seen in the host cgroup, where the
    // engines watch for it, before the killed process's end is handled.
    agent.on_oom(Box::new(|_| {
        if let Err(e) = host_oom::tell_host() {
            eprintln!("runvm: warning: an OOM kill in the guest is not shown on the host: {e}");
        }
    }));
    // A signalled process must not stay in a lock wait the guest kernel cannot interrupt.
    if let Some(canceller) = vm.fs_lock_canceller() {
        agent.on_signal(Arc::new(move || canceller.cancel()));
    }
    let t = GUEST_PATIENCE;
    agent.mount_share(SHARE_TAG, GUEST_SHARE, t)?;
    let ports = &STDIO_PORTS[..relay::stream_count(exec.terminal)];
    let listeners = relay::listen_stdio(vm.vsock(), ports)
        .map_err(io_err("cannot listen for the process's stdio"))?;
    tracker.before_prepare()?;
    // The hooks have run (docker 20.10 wires the namespace in its prestart hook): the NICs
    // the namespace has now, before the process is prepared; again at start (newer engines
    // wire between create and start); then whatever changes while it runs.
    let mut guest_net = GuestNet::new(vm.nics().to_vec(), vm.vsock(), &bundle.spec)?;
    guest_net.sync(&agent, t)?;
    agent.exec(exec, t)?;
    let streams = relay::accept_stdio(&listeners, t).map_err(|e| RunError::Start(e.to_string()))?;
    drop(listeners);
    // Output flows once the process is released; signals reach it (held, as the init of its
    // pid namespace, it takes none but those it could not refuse).
    let outputs = relay::relay_streams(streams, terminal.as_ref())
        .map_err(io_err("cannot relay the process's stdio"))?;
    let signaller = agent.signaller(0);
    if let Some((rows, cols)) = terminal.as_ref().and_then(Terminal::size) {
        signaller
            .resize(rows, cols)
            .map_err(io_err("cannot size the terminal"))?;
    }
    let resizer = signaller.clone();
    relay::spawn_forwarder(
        opts.signals,
        terminal.as_ref().map(Terminal::sizer),
        move |sig| signaller.signal(sig),
        move |rows, cols| resizer.resize(rows, cols),
    );
    tracker.created()?;
    guest_net.sync(&agent, t)?;
    agent.release(0, t)?;
    guest_net.follow(agent.clone());
    if let Some(fs) = vm.fs_share().filter(|fs| fs.watches_edits()) {
        host_edits::follow(
            fs,
            share.root.clone(),
            share.binds.clone(),
            agent.clone(),
            GUEST_SHARE,
        );
    }
    if let Some(control) = tracker.started()? {
        let joined = serve::Joined {
            bundle: bundle.clone(),
            root: format!("{GUEST_SHARE}/rootfs"),
            binds,
        };
        serve::spawn(
            control,
            agent.clone(),
            vm.pauser(),
            vm.vsock().clone(),
            joined,
        );
    }

    let (code, signal) = agent.wait_exit(0, || match vm.wait_stop(Duration::ZERO) {
        Some(reason) => Err(AgentError::vm_stopped(&vm, &reason, "process exited")),
        None => Ok(()),
    })?;
    relay::drain(outputs, DRAIN);
    if opts.debug
        && let Some(stats) = vm.fs_stats()
    {
        crate::cli::log::debug(&stats.summary());
    }
    agent.power_off(t)?;
    let _ = vm.wait_stop(t);
    vm.shutdown();
    Ok(Exit { code, signal })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_as_runc_takes_them() {
        for ok in ["a", "web-1", "x_y.z+1", &"a".repeat(1024)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            &"a".repeat(1025),
            "ünï",
        ] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
