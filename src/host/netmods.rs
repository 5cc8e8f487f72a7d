//! The host kernel pieces a guest NIC fed from the container's network namespace needs:
//! `vhost_net` (optional: the data path's speed) and the traffic-control pieces that move
//! frames between the engine's interface and the tap (the ingress qdisc, a classifier that
//! matches everything, u32 or flower, and the mirred action).
//!
//! A piece is *available* when it is built in (`modules.builtin`), already loaded
//! (`/sys/module/NAME`), or loadable (`modules.dep` of the running kernel lists it). A
//! kernel without a modules tree (a custom one, everything built in) cannot be told: its
//! pieces are *unknown*, not missing.

use serde::Serialize;

use super::HostRoot;

/// Where a kernel piece stands on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleState {
    /// Built into the kernel.
    BuiltIn,
    /// Loaded now.
    Loaded,
    /// A module of the running kernel, not loaded yet (loaded on first use).
    Loadable,
    /// Not found.
    Missing,
    /// Not loaded, and the running kernel has no modules tree to tell.
    Unknown,
}

impl ModuleState {
    /// Whether the piece can be used.
    pub fn available(self) -> bool {
        self != ModuleState::Missing
    }
}

/// The tc pieces: the ingress qdisc, the mirred action, and one of two match-all classifiers.
pub const TC_PIECES: [&str; 2] = ["sch_ingress", "act_mirred"];
/// Classifiers, either of which will do.
pub const TC_CLASSIFIERS: [&str; 2] = ["cls_u32", "cls_flower"];

/// Where module `name` stands on the host below `root`.
pub fn state(root: &HostRoot, name: &str) -> ModuleState {
    if root.exists(&format!("/sys/module/{name}")) {
        return ModuleState::Loaded;
    }
    let release = root.read("/proc/sys/kernel/osrelease");
    let release = release.trim();
    if release.is_empty() {
        return ModuleState::Missing;
    }
    let file = format!("/{name}.ko");
    // Module names use '_' where file names may use '-'.
    let listed = |text: &str| {
        text.lines().any(|line| {
            let path = line.split(':').next().unwrap_or_default();
            let path = path.trim_end_matches(".xz").trim_end_matches(".zst");
            let path = path.trim_end_matches(".gz").replace('-', "_");
            path.ends_with(&file)
        })
    };
    let dir = format!("/lib/modules/{release}");
    if !root.exists(&format!("{dir}/modules.dep"))
        && !root.exists(&format!("{dir}/modules.builtin"))
    {
        return ModuleState::Unknown;
    }
    if listed(&root.read(&format!("{dir}/modules.builtin"))) {
        ModuleState::BuiltIn
    } else if listed(&root.read(&format!("{dir}/modules.dep"))) {
        ModuleState::Loadable
    } else {
        ModuleState::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> (tempfile::TempDir, HostRoot) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("proc/sys/kernel")).unwrap();
        std::fs::write(p.join("proc/sys/kernel/osrelease"), "6.1.0-9-amd64\n").unwrap();
        let m = p.join("lib/modules/6.1.0-9-amd64");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(
            m.join("modules.builtin"),
            "kernel/net/sched/sch_ingress.ko\n",
        )
        .unwrap();
        std::fs::write(
            m.join("modules.dep"),
            "kernel/net/sched/act_mirred.ko.xz:\nkernel/net/sched/cls_u32.ko.xz:\n",
        )
        .unwrap();
        std::fs::create_dir_all(p.join("sys/module/vhost_net")).unwrap();
        let root = HostRoot::at(p);
        (d, root)
    }

    #[test]
    fn built_in_loaded_loadable_and_missing() {
        let (_d, root) = host();
        assert_eq!(state(&root, "sch_ingress"), ModuleState::BuiltIn);
        assert_eq!(state(&root, "act_mirred"), ModuleState::Loadable);
        assert_eq!(state(&root, "vhost_net"), ModuleState::Loaded);
        assert_eq!(state(&root, "cls_flower"), ModuleState::Missing);
        // A name is matched whole, not as a suffix of another module's.
        assert_eq!(state(&root, "u32"), ModuleState::Missing);
        assert!(!ModuleState::Missing.available());
        assert!(ModuleState::Loadable.available());
        assert!(ModuleState::Unknown.available());
    }

    #[test]
    fn a_kernel_without_a_modules_tree_is_unknown() {
        let (d, root) = host();
        std::fs::remove_dir_all(d.path().join("lib/modules")).unwrap();
        assert_eq!(state(&root, "act_mirred"), ModuleState::Unknown);
        assert_eq!(state(&root, "vhost_net"), ModuleState::Loaded);
    }

    #[test]
    fn no_kernel_release_means_missing() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            state(&HostRoot::at(d.path()), "act_mirred"),
            ModuleState::Missing
        );
    }
}
