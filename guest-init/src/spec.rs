//! What the host tells guest-init about a container's process: the OCI spec already
//! translated by runvm into what the guest applies directly (mount flags as numbers,
//! capabilities as bit sets, seccomp as compiled BPF), so guest-init needs no OCI parser.
//! Every part but the core is optional on the wire; an absent part changes nothing.

use serde::{Deserialize, Serialize};

/// A process to run: its stdin, stdout and stderr connect to the host's vsock ports
/// `stdio_ports`, its root becomes `root`, it starts in `cwd` (created if missing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The host's number for this process, echoed in [`crate::protocol::GuestMessage::Exited`]:
    /// 0 for the container's first process.
    #[serde(default)]
    pub process: u32,
    /// Join the namespaces of the running container's first process instead of creating
    /// new ones (`runvm exec`): the root, mounts, devices, hostname and sysctls are theirs,
    /// and only the process's own settings (cwd, user, capabilities, rlimits, seccomp) apply.
    #[serde(default)]
    pub join: bool,
    /// argv; `args[0]` is looked up in the PATH of `env` when it has no `/`.
    pub args: Vec<String>,
    /// `NAME=value` strings.
    pub env: Vec<String>,
    /// Working directory, inside `root`.
    pub cwd: String,
    /// The guest directory that becomes the process's root.
    pub root: String,
    /// The hostname of its UTS namespace, if set.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Host vsock ports for stdin, stdout and stderr.
    pub stdio_ports: [u32; 3],
    /// The root is remounted read-only once everything is mounted.
    #[serde(default)]
    pub root_readonly: bool,
    /// Propagation flags of the root mount (`MS_SHARED`, `MS_SLAVE`...); private if absent.
    #[serde(default)]
    pub root_propagation: Option<u64>,
    /// Mounts, in order, inside the new root.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// Device nodes to create in `/dev` besides the default ones.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// `(key, value)` kernel parameters, the key dotted (`kernel.shmmax`).
    #[serde(default)]
    pub sysctl: Vec<(String, String)>,
    /// Resource limits.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Who the process runs as.
    #[serde(default)]
    pub user: User,
    /// Capability sets; all of root's are kept when absent.
    #[serde(default)]
    pub capabilities: Option<CapSets>,
    /// Sets `no_new_privs` before exec.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// A seccomp filter to install.
    #[serde(default)]
    pub seccomp: Option<Seccomp>,
    /// Paths made unreadable (a read-only empty tmpfs over directories, /dev/null over files).
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// Paths remounted read-only.
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// Written to `/proc/self/oom_score_adj`.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// Give the process a terminal: the stage makes a pty in the container's devpts, the
    /// slave becomes the process's stdin, stdout, stderr and controlling terminal, and
    /// guest-init relays the master over the one stream of `stdio_ports[0]`.
    #[serde(default)]
    pub terminal: bool,
    /// The terminal's first window size, `(rows, columns)`.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// Stop once the process is ready to exec and wait for the host's release (`runvm
    /// create` prepares, `runvm start` releases).
    #[serde(default)]
    pub hold: bool,
    /// Limits of the container's cgroup in the guest (the container's first process only).
    #[serde(default)]
    pub resources: Option<Resources>,
    /// A cgroup namespace rooted at the container's cgroup (the spec lists one), so that
    /// its cgroup2 mount shows its own limits at /sys/fs/cgroup, as with runc.
    #[serde(default)]
    pub cgroup_ns: bool,
}

/// Limits of the container's cgroup (v2) in the guest; an absent one is left as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `memory.max` in bytes; negative for no limit.
    #[serde(default)]
    pub memory_max: Option<i64>,
    /// The CFS quota in microseconds per period (`cpu.max`); negative for no limit.
    #[serde(default)]
    pub cpu_quota: Option<i64>,
    /// The CFS period in microseconds (`cpu.max`).
    #[serde(default)]
    pub cpu_period: Option<u64>,
    /// `cpu.weight`, 1 to 10000.
    #[serde(default)]
    pub cpu_weight: Option<u64>,
    /// `pids.max`; negative or zero for no limit.
    #[serde(default)]
    pub pids_max: Option<i64>,
}

/// One mount inside the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Where, inside the root.
    pub target: String,
    /// What: a device or file system name, or for a bind mount the guest path of its source
    /// (in the share).
    pub source: String,
    /// The file system type (ignored for binds).
    #[serde(default)]
    pub fstype: String,
    /// `MS_*` flags other than propagation (`MS_BIND`, `MS_REC`, `MS_RDONLY`...).
    #[serde(default)]
    pub flags: u64,
    /// Propagation flags applied after mounting, one call each (`MS_PRIVATE|MS_REC`...).
    #[serde(default)]
    pub propagation: Vec<u64>,
    /// File-system specific options (`mode=755,size=65536k`).
    #[serde(default)]
    pub data: String,
}

/// A device node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Its path, under `/dev`.
    pub path: String,
    /// `'c'`, `'b'` or `'p'` (fifo).
    pub kind: char,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// One resource limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_*` number.
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The process's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// The file mode creation mask; 0o022 when absent (runc's default).
    #[serde(default)]
    pub umask: Option<u32>,
}

/// Capability sets as bit masks (bit N = capability N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Ambient set.
    pub ambient: u64,
}

/// A compiled seccomp filter: programs installed in order (the kernel applies the most
/// restrictive answer of all), each a list of classic BPF instructions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seccomp {
    /// The programs.
    pub programs: Vec<Vec<BpfInstruction>>,
    /// `SECCOMP_FILTER_FLAG_*` flags for every program.
    #[serde(default)]
    pub flags: u32,
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfInstruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// Limits a hostile or broken host message could otherwise push past what the guest should
/// ever do; checked by [`ExecSpec::validate`].
pub mod limits {
    /// Most mounts.
    pub const MOUNTS: usize = 1024;
    /// Most devices.
    pub const DEVICES: usize = 1024;
    /// Most seccomp programs.
    pub const SECCOMP_PROGRAMS: usize = 64;
    /// Most instructions in one seccomp program (the kernel's BPF_MAXINSNS).
    pub const BPF_INSTRUCTIONS: usize = 4096;
}

impl ExecSpec {
    /// Checks the counts against [`limits`]; the message names what is too large.
    pub fn validate(&self) -> Result<(), String> {
        let too_many = |what: &str, n: usize, max: usize| {
            if n > max {
                Err(format!("{n} {what}, more than the {max} allowed"))
            } else {
                Ok(())
            }
        };
        too_many("mounts", self.mounts.len(), limits::MOUNTS)?;
        too_many("devices", self.devices.len(), limits::DEVICES)?;
        if let Some(s) = &self.seccomp {
            too_many(
                "seccomp programs",
                s.programs.len(),
                limits::SECCOMP_PROGRAMS,
            )?;
            for p in &s.programs {
                too_many("seccomp instructions", p.len(), limits::BPF_INSTRUCTIONS)?;
            }
        }
        if self.args.is_empty() {
            return Err("no command given".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_spec_parses_with_everything_optional_absent() {
        let body = r#"{"args":["true"],"env":[],"cwd":"/","root":"/r","stdio_ports":[1,2,3]}"#;
        let spec: ExecSpec = serde_json::from_str(body).unwrap();
        assert_eq!(spec.hostname, None);
        assert!(spec.mounts.is_empty() && spec.capabilities.is_none() && !spec.root_readonly);
        assert_eq!(spec.user, User::default());
        spec.validate().unwrap();
    }

    #[test]
    fn validation_names_what_is_too_large() {
        let mut spec = ExecSpec {
            args: vec!["true".into()],
            ..ExecSpec::default()
        };
        spec.seccomp = Some(Seccomp {
            programs: vec![vec![
                BpfInstruction::default();
                limits::BPF_INSTRUCTIONS + 1
            ]],
            flags: 0,
        });
        let err = spec.validate().unwrap_err();
        assert!(err.contains("seccomp instructions"), "{err}");
        spec.seccomp = None;
        spec.args.clear();
        assert_eq!(spec.validate().unwrap_err(), "no command given");
    }
}
