//! `runvm check`'s findings: one [`Check`] per thing runvm needs, each with a verdict, and
//! an overall answer to "can runvm run containers on this host?".

use serde::Serialize;

use super::HostRoot;
use super::assets::{self, AssetRole};
use super::cgroup::{self, CgroupLayout};
use super::devices::{self, DeviceState};
use super::kvm::{self, KvmBackend, KvmReport};
use super::netmods::{self, ModuleState, TC_CLASSIFIERS, TC_PIECES};
use crate::config::Config;

/// How one finding bears on running containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Containers run, but something is missing (named in the detail).
    Warn,
    /// Containers cannot run.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name: `kvm`, `vsock`, `tun`, `tc`, `vhost-net`, `passt`, `cgroup`, `kernel`,
    /// `initramfs`.
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found, in one line.
    pub detail: String,
}

/// Every finding, plus the raw facts behind the important ones.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no check failed: runvm can run containers on this host.
    pub ok: bool,
    /// The findings, in a fixed order.
    pub checks: Vec<Check>,
    /// The KVM probe's facts.
    pub kvm: KvmReport,
    /// The host's cgroup layout.
    pub cgroup: CgroupLayout,
}

fn kvm_check(r: &KvmReport) -> Check {
    let (verdict, detail) = match (r.backend, &r.error) {
        (KvmBackend::Absent, _) => (
            Verdict::Fail,
            "no /dev/kvm: enable virtualisation in the firmware and load kvm_amd or kvm_intel"
                .to_owned(),
        ),
        (KvmBackend::Pvm, _) => (
            Verdict::Fail,
            "/dev/kvm is kvm_pvm, software nested virtualisation: ordinary guest kernels crawl \
             and crash under it, so runvm cannot run guests here (use hardware KVM, or the L1 \
             test VM: tests/vm/l1)"
                .to_owned(),
        ),
        (b, Some(e)) => (Verdict::Fail, format!("{}: {e}", b.describe())),
        (KvmBackend::Unknown, None) => (
            Verdict::Warn,
            format!(
                "{}, API {}: works, but not known to be hardware-backed",
                r.backend.describe(),
                r.api_version.unwrap_or_default()
            ),
        ),
        (b, None) => (
            Verdict::Ok,
            format!(
                "{}, API {}",
                b.describe(),
                r.api_version.unwrap_or_default()
            ),
        ),
    };
    Check {
        name: "kvm",
        verdict,
        detail,
    }
}

fn vsock_check(root: &HostRoot) -> Check {
    let vhost = match devices::open_state(root, "/dev/vhost-vsock") {
        DeviceState::Usable => "present",
        DeviceState::Missing => "absent",
        DeviceState::Unusable(_) => "present but not usable",
    };
    Check {
        name: "vsock",
        verdict: Verdict::Ok,
        detail: format!(
            "virtio-vsock is served in userspace by runvm; no host module needed \
             (/dev/vhost-vsock {vhost}, unused)"
        ),
    }
}

fn tun_check(root: &HostRoot) -> Check {
    let (verdict, detail) = match devices::open_state(root, "/dev/net/tun") {
        DeviceState::Usable => (Verdict::Ok, "/dev/net/tun usable".to_owned()),
        DeviceState::Missing => (
            Verdict::Warn,
            "no /dev/net/tun (load the tun module): containers get no network interface".to_owned(),
        ),
        DeviceState::Unusable(e) => (
            Verdict::Warn,
            format!("/dev/net/tun: {e}: containers get no network interface"),
        ),
    };
    Check {
        name: "tun",
        verdict,
        detail,
    }
}

/// The traffic-control pieces that move frames between an engine's interface and the tap.
fn tc_check(root: &HostRoot) -> Check {
    let states: Vec<(&str, ModuleState)> = TC_PIECES
        .iter()
        .chain(TC_CLASSIFIERS.iter())
        .map(|&name| (name, netmods::state(root, name)))
        .collect();
    let available = |name: &str| states.iter().any(|(n, s)| *n == name && s.available());
    let missing: Vec<&str> = TC_PIECES
        .iter()
        .copied()
        .filter(|name| !available(name))
        .chain(
            (!TC_CLASSIFIERS.iter().any(|name| available(name))).then_some("cls_u32 or cls_flower"),
        )
        .collect();
    let mut found = states
        .iter()
        .map(|(name, state)| format!("{name} {}", describe(*state)))
        .collect::<Vec<_>>()
        .join(", ");
    if states.iter().any(|(_, s)| *s == ModuleState::Unknown) {
        found.push_str(" (the running kernel has no modules tree to tell)");
    }
    let (verdict, detail) = if missing.is_empty() {
        (Verdict::Ok, found)
    } else {
        (
            Verdict::Warn,
            format!(
                "missing {}: containers on an engine's network get no interface ({found})",
                missing.join(", ")
            ),
        )
    };
    Check {
        name: "tc",
        verdict,
        detail,
    }
}

fn vhost_net_check(root: &HostRoot) -> Check {
    let device = match devices::open_state(root, "/dev/vhost-net") {
        DeviceState::Usable => "/dev/vhost-net usable".to_owned(),
        DeviceState::Missing => "no /dev/vhost-net".to_owned(),
        DeviceState::Unusable(e) => format!("/dev/vhost-net: {e}"),
    };
    let module = describe(netmods::state(root, "vhost_net"));
    Check {
        name: "vhost-net",
        verdict: Verdict::Ok,
        detail: format!("{device} (vhost_net {module}); not required"),
    }
}

/// Where passt is looked for (the engines run runvm with a system `PATH`).
const PASST_PATHS: [&str; 4] = [
    "/usr/bin/passt",
    "/usr/sbin/passt",
    "/usr/local/bin/passt",
    "/bin/passt",
];

/// passt gives `--network host` containers the host's network; without it they fail to
/// start (with a line that says so) and nothing else changes.
fn passt_check(root: &HostRoot) -> Check {
    let (verdict, detail) = match PASST_PATHS.iter().find(|p| root.path(p).is_file()) {
        Some(path) => (
            Verdict::Ok,
            format!("{path}: --network host containers get the host's network"),
        ),
        None => (
            Verdict::Warn,
            "no passt: --network host containers cannot start (apt install passt)".to_owned(),
        ),
    };
    Check {
        name: "passt",
        verdict,
        detail,
    }
}

fn describe(state: ModuleState) -> &'static str {
    match state {
        ModuleState::BuiltIn => "built in",
        ModuleState::Loaded => "loaded",
        ModuleState::Loadable => "loadable",
        ModuleState::Missing => "missing",
        ModuleState::Unknown => "unknown",
    }
}

fn cgroup_check(layout: CgroupLayout) -> Check {
    let verdict = match layout {
        CgroupLayout::None => Verdict::Warn,
        _ => Verdict::Ok,
    };
    Check {
        name: "cgroup",
        verdict,
        detail: layout.describe().to_owned(),
    }
}

fn asset_check(name: &'static str, path: &std::path::Path, role: AssetRole) -> Check {
    match assets::check(path, role) {
        Ok(detail) => Check {
            name,
            verdict: Verdict::Ok,
            detail,
        },
        Err(detail) => Check {
            name,
            verdict: Verdict::Fail,
            detail,
        },
    }
}

/// Runs every check against the host below `root` with the assets `config` names.
pub fn run(root: &HostRoot, config: &Config) -> Report {
    let kvm = kvm::probe(root);
    let cgroup = cgroup::layout(root);
    let checks = vec![
        kvm_check(&kvm),
        vsock_check(root),
        tun_check(root),
        tc_check(root),
        vhost_net_check(root),
        passt_check(root),
        cgroup_check(cgroup),
        asset_check("kernel", &config.kernel, AssetRole::Kernel),
        asset_check("initramfs", &config.initramfs, AssetRole::Initramfs),
    ];
    Report {
        ok: checks.iter().all(|c| c.verdict != Verdict::Fail),
        checks,
        kvm,
        cgroup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict_of(report: &Report, name: &str) -> Verdict {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.verdict)
            .unwrap()
    }

    #[test]
    fn pvm_host_with_assets_still_fails_on_kvm() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("sys/module/kvm_pvm")).unwrap();
        std::fs::create_dir_all(p.join("dev")).unwrap();
        std::fs::write(p.join("dev/kvm"), "").unwrap();
        std::fs::write(p.join("vmlinux"), b"\x7fELF").unwrap();
        std::fs::write(p.join("initramfs.img"), b"070701").unwrap();
        let report = run(&HostRoot::at(p), &Config::defaults(p));
        assert_eq!(verdict_of(&report, "kvm"), Verdict::Fail);
        assert_eq!(verdict_of(&report, "kernel"), Verdict::Ok);
        assert_eq!(verdict_of(&report, "initramfs"), Verdict::Ok);
        assert_eq!(verdict_of(&report, "tun"), Verdict::Warn);
        // No kernel release, no modules tree: the tc pieces are missing, a warning only.
        assert_eq!(verdict_of(&report, "tc"), Verdict::Warn);
        assert_eq!(verdict_of(&report, "vhost-net"), Verdict::Ok);
        // No passt: a warning that names the package.
        assert_eq!(verdict_of(&report, "passt"), Verdict::Warn);
        std::fs::create_dir_all(p.join("usr/bin")).unwrap();
        std::fs::write(p.join("usr/bin/passt"), b"\x7fELF").unwrap();
        let with_passt = run(&HostRoot::at(p), &Config::defaults(p));
        assert_eq!(verdict_of(&with_passt, "passt"), Verdict::Ok);
        assert!(!report.ok);
        let kvm = report.checks.iter().find(|c| c.name == "kvm").unwrap();
        assert!(kvm.detail.contains("kvm_pvm"), "{}", kvm.detail);
    }

    #[test]
    fn tc_is_ok_with_either_classifier() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("proc/sys/kernel")).unwrap();
        std::fs::write(p.join("proc/sys/kernel/osrelease"), "6.1.0\n").unwrap();
        std::fs::create_dir_all(p.join("lib/modules/6.1.0")).unwrap();
        std::fs::write(p.join("lib/modules/6.1.0/modules.dep"), "").unwrap();
        for m in ["sch_ingress", "act_mirred", "cls_flower"] {
            std::fs::create_dir_all(p.join("sys/module").join(m)).unwrap();
        }
        let tc = tc_check(&HostRoot::at(p));
        assert_eq!(tc.verdict, Verdict::Ok, "{}", tc.detail);
        assert!(tc.detail.contains("cls_u32 missing"), "{}", tc.detail);
        std::fs::remove_dir(p.join("sys/module/act_mirred")).unwrap();
        let tc = tc_check(&HostRoot::at(p));
        assert_eq!(tc.verdict, Verdict::Warn);
        assert!(
            tc.detail.starts_with("missing act_mirred:"),
            "{}",
            tc.detail
        );
    }

    #[test]
    fn json_names_every_check_in_order() {
        let d = tempfile::tempdir().unwrap();
        let report = run(&HostRoot::at(d.path()), &Config::defaults(d.path()));
        let v = serde_json::to_value(&report).unwrap();
        let names: Vec<&str> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "kvm",
                "vsock",
                "tun",
                "tc",
                "vhost-net",
                "passt",
                "cgroup",
                "kernel",
                "initramfs"
            ]
        );
        assert_eq!(v["kvm"]["backend"], "absent");
        assert_eq!(v["ok"], false);
    }
}
