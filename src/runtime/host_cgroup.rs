//! The container's cgroup on the host: the sandbox (the VMM, every vCPU and device thread)
//! enters `linux.cgroupsPath` in every cgroup hierarchy mounted under /sys/fs/cgroup (the
//! v2 one, or each v1 controller and the hybrid `unified` one), so engines find the
//! container's host usage where they look for runc's. The limits themselves apply inside
//! the VM (`resources`): a host limit at the container's size would starve the VMM.
//!
//! The directories runvm made are recorded in the container's directory before anything
//! joins them; `delete` (or the end of `runvm run`, or a failed create, after moving the
//! process back where it was) removes them, deepest first.

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// The file in the container's directory that lists the cgroups runvm made.
const RECORD: &str = "cgroups.json";
/// Where the hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Errors of the host cgroup, one line each.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The path is not one runvm accepts.
    #[error("invalid cgroupsPath {0:?}")]
    BadPath(String),
    /// A cgroup file or directory.
    #[error("cgroup {path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The container's cgroup path inside each hierarchy: `linux.cgroupsPath`, or `/<id>`
/// (runc's default). With `--systemd-cgroup`, `slice:prefix:name` becomes the path systemd
/// gives that scope (`/system.slice/prefix-name.scope`).
pub fn cgroup_path(spec: &Spec, id: &str, systemd: bool) -> Result<String, CgroupError> {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = if systemd && given.matches(':').count() == 2 {
        let mut parts = given.splitn(3, ':');
        let (slice, prefix, name) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        format!("{}/{prefix}-{name}.scope", expand_slice(slice)?)
    } else if given.is_empty() {
        format!("/{id}")
    } else {
        format!("/{}", given.trim_start_matches('/'))
    };
    let ok = path.len() <= 4096
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(path)
    } else {
        Err(CgroupError::BadPath(given))
    }
}

/// systemd's nesting of a slice name: `a-b.slice` is `/a.slice/a-b.slice`.
fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    let bad = || CgroupError::BadPath(slice.to_owned());
    let name = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if name == "-" {
        return Ok(String::new());
    }
    if name.is_empty() || name.contains('/') || name.starts_with('-') || name.ends_with('-') {
        return Err(bad());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if part.is_empty() {
            return Err(bad());
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push_str(&format!("/{prefix}.slice"));
    }
    Ok(path)
}

/// One mounted hierarchy: where, and whether it has the cpuset controller (v1).
struct Hierarchy {
    mount: PathBuf,
    /// The part of the hierarchy the mount shows (`/` but in a container).
    root: String,
    /// v1: its controllers (and `name=...`), from the super options; empty for v2.
    controllers: Vec<String>,
}

impl Hierarchy {
    fn cpuset(&self) -> bool {
        self.controllers.iter().any(|c| c == "cpuset")
    }
}

/// Super options of a v1 cgroup mount that are not controllers.
const GENERIC_OPTIONS: [&str; 6] = [
    "rw",
    "ro",
    "xattr",
    "clone_children",
    "noprefix",
    "cpuset_v2_mode",
];

/// The cgroup hierarchies mounted under /sys/fs/cgroup, from a mountinfo text.
fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(mount), Some(fstype), Some(options)) = (
            fields.get(3),
            fields.get(4),
            fields.get(sep + 1),
            fields.get(sep + 3),
        ) else {
            continue;
        };
        let under = *mount == CGROUP_ROOT || mount.starts_with("/sys/fs/cgroup/");
        if under && (*fstype == "cgroup" || *fstype == "cgroup2") {
            found.push(Hierarchy {
                mount: PathBuf::from(mount),
                root: (*root).to_owned(),
                controllers: match *fstype {
                    "cgroup" => options
                        .split(',')
                        .filter(|o| !GENERIC_OPTIONS.contains(o) && !o.contains("_agent="))
                        .map(str::to_owned)
                        .collect(),
                    _ => Vec::new(),
                },
            });
        }
    }
    found
}

/// Where this process is in each hierarchy, to go back to before its cgroups are removed.
pub struct Joined {
    /// `(hierarchy mount, our original path in it)`.
    origins: Vec<(PathBuf, String)>,
    /// The container's directory, where the record is.
    dir: PathBuf,
}

/// Our path below the mount of hierarchy `h`, from /proc/self/cgroup (v2: `0::/p`; v1:
/// `N:controllers:/p`, the controllers those the mount has), the mount's own root taken off.
fn own_path(proc_cgroup: &str, h: &Hierarchy) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let matches = if h.controllers.is_empty() {
            controllers.is_empty()
        } else {
            !controllers.is_empty()
                && controllers
                    .split(',')
                    .all(|c| h.controllers.iter().any(|m| m == c))
        };
        if !matches {
            return None;
        }
        let below = match h.root.as_str() {
            "/" => path,
            root => path.strip_prefix(root)?,
        };
        Some(if below.is_empty() {
            "/".to_owned()
        } else {
            below.to_owned()
        })
    })
}

/// A v1 cpuset cgroup takes no process until it has CPUs and memory nodes: copy its
/// parent's, as runc does.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if std::fs::read_to_string(&own).is_ok_and(|t| !t.trim().is_empty()) {
            continue;
        }
        let Some(parent) = dir.parent() else { continue };
        let value = std::fs::read_to_string(parent.join(file)).map_err(io_at(&own))?;
        std::fs::write(&own, value.trim()).map_err(io_at(&own))?;
    }
    Ok(())
}

/// Puts this process into `path` in every hierarchy, making what is missing; the
/// directories made are recorded in `dir` first. On failure it is back where it was and
/// what it made is gone.
pub fn join(path: &str, dir: &Path) -> Result<Joined, CgroupError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let found = hierarchies(&mountinfo);
    let mut made = Vec::new();
    let mut plans = Vec::new();
    for h in &found {
        let target = h.mount.join(path.trim_start_matches('/'));
        let mut missing = Vec::new();
        let mut at = target.as_path();
        while !at.exists() && at != h.mount {
            missing.push(at.to_owned());
            at = at.parent().unwrap_or(&h.mount);
        }
        missing.reverse();
        made.extend(missing.iter().cloned());
        plans.push((h, target, missing));
    }
    record(dir, &made)?;
    let mut joined = Joined {
        origins: Vec::new(),
        dir: dir.to_owned(),
    };
    match enter(&plans, &own, &mut joined) {
        Ok(()) => Ok(joined),
        Err(e) => {
            joined.leave();
            Err(e)
        }
    }
}

/// Makes the missing directories and moves this process in, hierarchy by hierarchy.
fn enter(
    plans: &[(&Hierarchy, PathBuf, Vec<PathBuf>)],
    own: &str,
    joined: &mut Joined,
) -> Result<(), CgroupError> {
    for (h, target, missing) in plans {
        for m in missing {
            match std::fs::create_dir(m) {
                // Another container made the same parent meanwhile.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => other.map_err(io_at(m))?,
            }
            if h.cpuset() {
                inherit_cpuset(m)?;
            }
        }
        if h.controllers.is_empty() {
            enable_controllers(&h.mount, target);
        }
        if let Some(origin) = own_path(own, h) {
            joined.origins.push((h.mount.clone(), origin));
        }
        let procs = target.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string()).map_err(io_at(&procs))?;
    }
    Ok(())
}

/// cgroup v2: makes every controller available along the way to `target` (below `mount`)
/// available in it too, as runc does, so its limits and event files (`memory.max`,
/// `memory.events`, which engines watch) exist. A controller a cgroup cannot hand down (it
/// holds processes itself, or the controller is threaded-only there) is passed over.
fn enable_controllers(mount: &Path, target: &Path) {
    let Ok(below) = target.strip_prefix(mount) else {
        return;
    };
    let mut dir = mount.to_path_buf();
    for part in below.iter() {
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let enabled =
            std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        for controller in available.split_whitespace() {
            if !enabled.split_whitespace().any(|c| c == controller) {
                let _ =
                    std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"));
            }
        }
        dir.push(part);
    }
}

fn record(dir: &Path, made: &[PathBuf]) -> Result<(), CgroupError> {
    let path = dir.join(RECORD);
    let text = serde_json::to_vec(made).unwrap_or_default();
    std::fs::write(&path, text).map_err(io_at(&path))
}

impl Joined {
    /// The `cgroup.procs` files of the cgroups this process was in before.
    pub fn origin_procs(&self) -> Vec<std::ffi::CString> {
        self.origins
            .iter()
            .filter_map(|(mount, origin)| {
                let procs = mount
                    .join(origin.trim_start_matches('/'))
                    .join("cgroup.procs");
                std::ffi::CString::new(procs.into_os_string().into_encoded_bytes()).ok()
            })
            .collect()
    }

    /// Moves this process back where it was; the cgroups stay for `delete`.
    pub fn step_out(&self) {
        for (mount, origin) in &self.origins {
            let procs = mount
                .join(origin.trim_start_matches('/'))
                .join("cgroup.procs");
            if let Err(e) = std::fs::write(&procs, std::process::id().to_string()) {
                eprintln!(
                    "runvm: warning: cannot move back to {}: {e}",
                    procs.display()
                );
            }
        }
    }

    /// Moves this process back where it was and removes the cgroups runvm made.
    pub fn leave(self) {
        self.step_out();
        remove_recorded(&self.dir);
    }
}

/// Removes the cgroups recorded in the container's directory `dir`, deepest first; a parent
/// another container still uses stays quietly, a cgroup with processes in it stays with a
/// warning.
pub fn remove_recorded(dir: &Path) {
    let Ok(text) = std::fs::read(dir.join(RECORD)) else {
        return;
    };
    let Ok(mut made) = serde_json::from_slice::<Vec<PathBuf>>(&text) else {
        return;
    };
    made.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in &made {
        // Only directories below the hierarchies, whatever the record says.
        if !m.starts_with(CGROUP_ROOT) || m.components().any(|c| c.as_os_str() == "..") {
            continue;
        }
        // A parent (another container's cgroup may be below it) stays quietly if busy.
        let parent = made.iter().any(|o| o != m && o.starts_with(m));
        match std::fs::remove_dir(m) {
            Ok(()) => {}
            // Never made (the join failed before it).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
            Err(e) if parent && matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {
            }
            Err(e) => eprintln!("runvm: warning: cannot remove cgroup {}: {e}", m.display()),
        }
    }
    let _ = std::fs::remove_file(dir.join(RECORD));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(path: Option<&str>) -> Spec {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(path.map(PathBuf::from));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn paths_as_runc_makes_them() {
        let p = |given, systemd| cgroup_path(&spec_with(given), "c1", systemd);
        assert_eq!(p(None, false).unwrap(), "/c1");
        assert_eq!(p(Some("/docker/abc"), false).unwrap(), "/docker/abc");
        assert_eq!(p(Some("kube/pod1/c"), false).unwrap(), "/kube/pod1/c");
        assert_eq!(
            p(Some("system.slice:docker:abc"), true).unwrap(),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(
            p(
                Some("kubepods-besteffort-pod1.slice:cri-containerd:x"),
                true
            )
            .unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/\
             cri-containerd-x.scope"
        );
        assert!(p(Some("/a/../../etc"), false).is_err());
        assert!(p(Some("bad-.slice:x:y"), true).is_err());
    }

    #[test]
    fn hierarchies_and_our_place_in_them() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
34 31 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
50 23 0:40 / /mnt/other rw - cgroup2 cgroup2 rw
";
        let found = hierarchies(mountinfo);
        let mounts: Vec<_> = found.iter().map(|h| h.mount.to_str().unwrap()).collect();
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
        );
        assert!(found[1].cpuset() && !found[0].cpuset());
        let own = "12:cpuset:/a\n4:cpu,cpuacct:/b\n1:name=systemd:/s\n0::/u\n";
        let at = |i: usize| own_path(own, &found[i]);
        assert_eq!(at(0).as_deref(), Some("/b"));
        assert_eq!(at(1).as_deref(), Some("/a"));
        assert_eq!(at(2).as_deref(), Some("/s"));
        assert_eq!(at(3).as_deref(), Some("/u"));
        // A mount that shows only part of its hierarchy (runvm in a container).
        let inner = hierarchies("30 23 0:27 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(own_path("0::/outer/x\n", &inner[0]).as_deref(), Some("/x"));
        assert_eq!(own_path("0::/elsewhere\n", &inner[0]), None);
    }

    #[test]
    fn only_recorded_directories_under_the_hierarchies_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("keep");
        std::fs::create_dir(&outside).unwrap();
        record(dir.path(), std::slice::from_ref(&outside)).unwrap();
        remove_recorded(dir.path());
        assert!(outside.exists());
        assert!(!dir.path().join(RECORD).exists());
    }
}
