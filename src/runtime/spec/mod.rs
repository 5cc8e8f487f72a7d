//! The bundle's OCI spec translated into the [`ExecSpec`] guest-init applies: mount options
//! to flags, bind sources to their place in the share, capability names to bits, rlimit
//! names to numbers, the seccomp profile to BPF. Everything the guest would otherwise have
//! to parse is settled here, on the host, where errors are reported before a VM starts.

pub mod mounts;
pub mod seccomp;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use guest_init::spec::{CapSets, DeviceSpec, ExecSpec, MountSpec, Rlimit, User};
use oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxDeviceType, PosixRlimitType, Process, Spec,
};

use super::bundle::Bundle;
use super::shared_dir::HostBind;

/// Errors translating a spec, each one line.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The seccomp profile.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// A mount the guest cannot make.
    #[error("mount {0}: {1}")]
    Mount(PathBuf, &'static str),
    /// A device the guest cannot create.
    #[error("device {0}: {1}")]
    Device(PathBuf, &'static str),
}

/// The host sources of the spec's bind mounts, in spec order: relative sources are relative
/// to the bundle, as with runc.
pub fn host_binds(bundle: &Bundle) -> Vec<HostBind> {
    bundle
        .spec
        .mounts()
        .iter()
        .flatten()
        .filter_map(|m| {
            let options = m.options().clone().unwrap_or_default();
            if !mounts::is_bind(m.typ().as_deref(), &options) {
                return None;
            }
            let source = m.source().clone().unwrap_or_default();
            Some(HostBind {
                source: bundle.dir.join(source),
                readonly: mounts::parse(&options).flags & libc::MS_RDONLY != 0,
            })
        })
        .collect()
}

/// What the guest runs: `binds` are the guest paths of [`host_binds`]'s sources, in order.
pub fn exec_spec(
    bundle: &Bundle,
    process: &Process,
    root: &str,
    binds: &[String],
    stdio_ports: [u32; 3],
) -> Result<ExecSpec, SpecError> {
    let spec = &bundle.spec;
    let linux = spec.linux().as_ref();
    let user = process.user();
    Ok(ExecSpec {
        process: 0,
        join: false,
        args: process.args().clone().unwrap_or_default(),
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().to_string_lossy().into_owned(),
        root: root.to_owned(),
        hostname: spec.hostname().clone(),
        stdio_ports,
        root_readonly: spec.root().as_ref().and_then(|r| r.readonly()) == Some(true),
        root_propagation: linux
            .and_then(|l| l.rootfs_propagation().as_deref())
            .and_then(mounts::propagation),
        mounts: guest_mounts(spec, binds)?,
        devices: devices(spec)?,
        sysctl: linux
            .and_then(|l| l.sysctl().clone())
            .map(|m| {
                let mut v: Vec<_> = m.into_iter().collect();
                v.sort();
                v
            })
            .unwrap_or_default(),
        rlimits: process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| Rlimit {
                resource: rlimit_number(r.typ()),
                soft: r.soft(),
                hard: r.hard(),
            })
            .collect(),
        user: User {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
        },
        capabilities: process.capabilities().as_ref().map(cap_sets),
        no_new_privileges: process.no_new_privileges() == Some(true),
        seccomp: linux
            .and_then(|l| l.seccomp().as_ref())
            .map(seccomp::compile)
            .transpose()?,
        masked_paths: linux
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default(),
        readonly_paths: linux
            .and_then(|l| l.readonly_paths().clone())
            .unwrap_or_default(),
        oom_score_adj: process.oom_score_adj(),
        terminal: process.terminal() == Some(true),
        console_size: process
            .console_size()
            .as_ref()
            .map(|b| (clamp16(b.height()), clamp16(b.width()))),
        hold: false,
        resources: linux
            .and_then(|l| l.resources().as_ref())
            .and_then(super::resources::guest_limits),
        cgroup_ns: linux
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter()
                    .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Cgroup)
            }),
    })
}

/// A window dimension as the kernel's 16-bit field holds it.
fn clamp16(n: u64) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn guest_mounts(spec: &Spec, binds: &[String]) -> Result<Vec<MountSpec>, SpecError> {
    let mut binds = binds.iter();
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let options = m.options().clone().unwrap_or_default();
        let parsed = mounts::parse(&options);
        let target = m.destination().to_string_lossy().into_owned();
        let (source, fstype) = if mounts::is_bind(m.typ().as_deref(), &options) {
            let Some(b) = binds.next() else {
                return Err(SpecError::Mount(
                    m.destination().clone(),
                    "bind source not shared",
                ));
            };
            (b.clone(), String::new())
        } else {
            let fstype = m.typ().clone().unwrap_or_default();
            // The guest has one cgroup hierarchy, v2, whatever the host has: a v1 request
            // (docker on a v1 host) gets the guest's cgroup2.
            let fstype = if fstype == "cgroup" {
                "cgroup2".to_owned()
            } else {
                fstype
            };
            let source = m
                .source()
                .as_deref()
                .map_or_else(|| fstype.clone(), |s| s.to_string_lossy().into_owned());
            (source, fstype)
        };
        if !Path::new(&target).is_absolute() {
            return Err(SpecError::Mount(
                m.destination().clone(),
                "destination is not absolute",
            ));
        }
        out.push(MountSpec {
            target,
            source,
            fstype,
            flags: parsed.flags,
            propagation: parsed.propagation,
            data: parsed.data,
        });
    }
    Ok(out)
}

fn devices(spec: &Spec) -> Result<Vec<DeviceSpec>, SpecError> {
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    list.iter()
        .map(|d| {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => 'c',
                LinuxDeviceType::B => 'b',
                LinuxDeviceType::P => 'p',
                LinuxDeviceType::A => {
                    return Err(SpecError::Device(d.path().clone(), "type a is not a node"));
                }
            };
            let number = |n: i64| u32::try_from(n).map_err(|_| "bad device number");
            let (major, minor) = number(d.major())
                .and_then(|ma| Ok((ma, number(d.minor())?)))
                .map_err(|e| SpecError::Device(d.path().clone(), e))?;
            Ok(DeviceSpec {
                path: d.path().to_string_lossy().into_owned(),
                kind,
                major,
                minor,
                mode: d.file_mode().unwrap_or(0o666),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            })
        })
        .collect()
}

fn rlimit_number(t: PosixRlimitType) -> u32 {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// A set of capability names as bits, by the caps crate's numbering (the kernel's).
fn bits(set: Option<&Capabilities>) -> u64 {
    set.into_iter()
        .flatten()
        .filter_map(|c| {
            // The spec's own name (`CAP_CHOWN`), as oci-spec serialises it.
            let name = serde_json::to_value(c).ok()?;
            caps::Capability::from_str(name.as_str()?).ok()
        })
        .fold(0, |b, c| b | c.bitmask())
}

fn cap_sets(c: &LinuxCapabilities) -> CapSets {
    CapSets {
        bounding: bits(c.bounding().as_ref()),
        effective: bits(c.effective().as_ref()),
        inheritable: bits(c.inheritable().as_ref()),
        permitted: bits(c.permitted().as_ref()),
        ambient: bits(c.ambient().as_ref()),
    }
}

#[cfg(test)]
mod tests;
