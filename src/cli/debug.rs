//! `runvm debug`: tools for developers.
//! - `boot`: boot a guest, wait for guest-init's hello over vsock, ping it, power it off, and
//!   print one JSON line of measurements (phases, VM exits by kind, peak RSS).
//! - `share`: boot a guest with a host directory over virtio-fs, mount it, read and write
//!   files in it from the guest, print what happened as JSON.
//! - `initramfs`: write the initramfs holding a guest-init binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::agent::Agent;
use crate::config::Config;
use crate::runtime::shared_dir::{HostBind, SharedDir};
use crate::vmm::vcpu::StopReason;
use crate::vmm::vm::{MicroVm, VmConfig};

/// `runvm debug` verbs.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Boot a guest to guest-init's hello, power it off, print measurements as JSON.
    Boot(BootArgs),
    /// Boot a guest sharing a host directory; read and write files in it from the guest.
    Share(ShareArgs),
    /// Write the initramfs for a guest-init binary.
    Initramfs(InitramfsArgs),
}

/// Flags of `runvm debug share`.
#[derive(Debug, Args)]
pub struct ShareArgs {
    /// The directory that appears as `rootfs/` in the share.
    #[arg(long)]
    dir: PathBuf,
    /// A host file or directory that appears as `binds/<n>` in the share (repeatable).
    #[arg(long)]
    bind: Vec<PathBuf>,
    /// Where to assemble the share (in a private mount namespace; left empty afterwards).
    #[arg(long)]
    at: Option<PathBuf>,
    /// A path inside the share to read from the guest (repeatable).
    #[arg(long)]
    read: Vec<String>,
    /// `PATH=TEXT`: a file inside the share to write from the guest (repeatable).
    #[arg(long)]
    write: Vec<String>,
    /// Seconds to wait for the hello.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// Where the guest mounts the share.
const GUEST_SHARE: &str = "/mnt/share";

/// Flags of `runvm debug boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// Guest kernel (default: from the configuration).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Guest initramfs (default: from the configuration).
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u64,
    /// Seconds to wait for the hello.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Write the guest console here.
    #[arg(long)]
    console_log: Option<PathBuf>,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Only measure the VMM's set-up: build the VM, stop at the first vCPU entry. Allowed on
    /// kvm_pvm, where everything up to that point is native.
    #[arg(long)]
    setup_only: bool,
}

/// Flags of `runvm debug initramfs`.
#[derive(Debug, Args)]
pub struct InitramfsArgs {
    /// The static guest-init binary.
    #[arg(long)]
    init: PathBuf,
    /// Where to write the archive.
    #[arg(long, short)]
    output: PathBuf,
}

/// Phases of a boot, in milliseconds.
#[derive(Debug, Serialize)]
struct Phases {
    vmm_setup_to_first_entry: f64,
    kernel_start_to_init: f64,
    init_to_hello: f64,
    power_off: f64,
}

/// The JSON line `debug boot` prints.
#[derive(Debug, Serialize)]
struct BootReport {
    kernel_release: String,
    protocol: u32,
    vcpus: u8,
    guest_online_cpus: u32,
    memory_mib: u64,
    stop: &'static str,
    phases_ms: Phases,
    total_ms: f64,
    exits: std::collections::BTreeMap<&'static str, u64>,
    peak_rss_kib: i64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

fn peak_rss_kib() -> i64 {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return -1;
    }
    usage.ru_maxrss
}

/// Runs a `debug` verb.
pub fn run(cmd: &DebugCommand, debug: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::Boot(args) => boot(args, debug),
        DebugCommand::Share(args) => share(args, debug),
        DebugCommand::Initramfs(args) => {
            crate::image::write_initramfs(&args.init, &args.output)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The JSON line `debug boot --setup-only` prints.
#[derive(Debug, Serialize)]
struct SetupReport {
    vmm_setup_to_first_entry_ms: f64,
    peak_rss_kib: i64,
}

/// Stops the VM and prints the report as one JSON line.
fn finish<T: Serialize>(vm: MicroVm, report: &T) -> anyhow::Result<ExitCode> {
    vm.shutdown();
    println!(
        "{}",
        serde_json::to_string(report).context("cannot encode the report")?
    );
    Ok(ExitCode::SUCCESS)
}

fn setup_only(vm: MicroVm) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(t) = vm.first_entry() {
            break t;
        }
        if Instant::now() >= deadline {
            bail!("vCPU 0 did not enter the guest within 10 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let report = SetupReport {
        vmm_setup_to_first_entry_ms: ms(first.saturating_duration_since(vm.created())),
        peak_rss_kib: peak_rss_kib(),
    };
    finish(vm, &report)
}

fn boot(args: &BootArgs, debug: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load()?;
    let vm_config = VmConfig {
        kernel: args.kernel.clone().unwrap_or(config.kernel),
        initramfs: Some(args.initramfs.clone().unwrap_or(config.initramfs)),
        vcpus: args.vcpus,
        memory_mib: args.memory,
        extra_cmdline: args.cmdline.clone(),
        console_log: args.console_log.clone(),
        debug,
        allow_software_kvm: args.setup_only,
        shared_dir: None,
        share_config: Default::default(),
        net_slots: 0,
        net_offloads: true,
    };
    let vm = MicroVm::start(&vm_config).context("cannot start the VM")?;
    if args.setup_only {
        return setup_only(vm);
    }
    let agent = Agent::accept(&vm, Duration::from_secs(args.timeout))?;
    let hello_at = Instant::now();
    let hello = agent.hello().clone();
    agent.ping(Duration::from_secs(10))?;
    let off_at = Instant::now();
    agent.power_off(Duration::from_secs(10))?;
    let stop = match vm.wait_stop(Duration::from_secs(10)) {
        // The guest announced it, then pulsed the reset line: that is its power-off.
        Some(StopReason::Reset | StopReason::PowerOff) => "power_off",
        Some(StopReason::Error(e)) => bail!("the VM failed while powering off: {e}"),
        Some(other) => bail!(
            "the VM stopped unexpectedly while powering off: {}",
            other.name()
        ),
        None => bail!("the guest acknowledged power-off but the VM did not stop within 10 s"),
    };
    let stopped_at = Instant::now();
    let first_entry = vm.first_entry().unwrap_or(hello_at);
    let in_guest = hello_at.saturating_duration_since(first_entry);
    let report = BootReport {
        kernel_release: hello.kernel_release,
        protocol: hello.protocol,
        vcpus: args.vcpus,
        guest_online_cpus: hello.online_cpus,
        memory_mib: args.memory,
        stop,
        phases_ms: Phases {
            vmm_setup_to_first_entry: ms(first_entry.saturating_duration_since(vm.created())),
            kernel_start_to_init: ms(hello.boottime_at_init),
            init_to_hello: ms(in_guest.saturating_sub(hello.boottime_at_init)),
            power_off: ms(stopped_at.saturating_duration_since(off_at)),
        },
        total_ms: ms(stopped_at.saturating_duration_since(vm.created())),
        exits: vm.exit_counts(),
        peak_rss_kib: peak_rss_kib(),
    };
    finish(vm, &report)
}

/// One guest file operation's outcome, for the JSON report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Text(String),
    Done,
    Error(String),
}

fn share(args: &ShareArgs, debug: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load()?;
    let at = args.at.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("runvm-share-{}", std::process::id()))
    });
    // Still single-threaded here, as unsharing the mount namespace requires.
    let binds: Vec<HostBind> = args
        .bind
        .iter()
        .map(|source| HostBind {
            source: source.clone(),
            readonly: false,
        })
        .collect();
    let result = SharedDir::create(&at, &args.dir, &binds)
        .context("cannot assemble the share")
        .and_then(|_| share_in_vm(args, debug, config, &at));
    // The mounts vanish with this process's namespace; the empty mount point is ours to remove.
    let _ = SharedDir::remove(&at);
    result
}

fn share_in_vm(
    args: &ShareArgs,
    debug: bool,
    config: Config,
    at: &Path,
) -> anyhow::Result<ExitCode> {
    let vm_config = VmConfig {
        kernel: config.kernel,
        initramfs: Some(config.initramfs),
        vcpus: 1,
        memory_mib: 256,
        extra_cmdline: String::new(),
        console_log: None,
        debug,
        allow_software_kvm: false,
        shared_dir: Some(at.to_owned()),
        share_config: crate::runtime::shared_dir::share_config(None)?,
        net_slots: 0,
        net_offloads: true,
    };
    let vm = MicroVm::start(&vm_config).context("cannot start the VM")?;
    let agent = Agent::accept(&vm, Duration::from_secs(args.timeout))?;
    let t = Duration::from_secs(10);
    agent.mount_share(crate::vmm::vm::SHARE_TAG, GUEST_SHARE, t)?;
    let mut reads = std::collections::BTreeMap::new();
    for rel in &args.read {
        let outcome = match agent.read_file(&format!("{GUEST_SHARE}/{rel}"), t) {
            Ok(text) => Outcome::Text(text),
            Err(crate::agent::AgentError::Guest(e)) => Outcome::Error(e),
            Err(e) => return Err(e.into()),
        };
        reads.insert(rel.clone(), outcome);
    }
    let mut writes = std::collections::BTreeMap::new();
    for spec in &args.write {
        let Some((rel, text)) = spec.split_once('=') else {
            bail!("--write takes PATH=TEXT, not {spec}");
        };
        let outcome = match agent.write_file(&format!("{GUEST_SHARE}/{rel}"), text, t) {
            Ok(()) => Outcome::Done,
            Err(crate::agent::AgentError::Guest(e)) => Outcome::Error(e),
            Err(e) => return Err(e.into()),
        };
        writes.insert(rel.to_owned(), outcome);
    }
    agent.power_off(t)?;
    if vm.wait_stop(Duration::from_secs(10)).is_none() {
        bail!("the guest acknowledged power-off but the VM did not stop within 10 s");
    }
    let report = serde_json::json!({ "reads": reads, "writes": writes });
    finish(vm, &report)
}
