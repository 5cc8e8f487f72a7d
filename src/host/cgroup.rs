//! Which cgroup layout the host has: the unified v2 hierarchy, v1 with a v2 hierarchy beside
//! it (hybrid), or v1 alone. The sandbox process enters the container's host cgroup in any of
//! them; the guest always uses cgroup v2 inside the VM.

use serde::Serialize;

use super::HostRoot;

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupLayout {
    /// cgroup2 mounted at `/sys/fs/cgroup`.
    Unified,
    /// cgroup v1 controllers, plus cgroup2 at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// cgroup v1 controllers only.
    Legacy,
    /// Nothing mounted at `/sys/fs/cgroup`.
    None,
}

impl CgroupLayout {
    /// How a person would name it.
    pub fn describe(self) -> &'static str {
        match self {
            CgroupLayout::Unified => "v2 (unified)",
            CgroupLayout::Hybrid => "v1 (hybrid: cgroup2 at /sys/fs/cgroup/unified)",
            CgroupLayout::Legacy => "v1 (legacy)",
            CgroupLayout::None => "none mounted at /sys/fs/cgroup",
        }
    }
}

/// Reads the layout from `/proc/self/mountinfo` below `root`.
pub fn layout(root: &HostRoot) -> CgroupLayout {
    layout_from_mountinfo(&root.read("/proc/self/mountinfo"))
}

/// Decides the layout from the text of a mountinfo file.
fn layout_from_mountinfo(mountinfo: &str) -> CgroupLayout {
    let mut v1 = false;
    let mut unified_beside = false;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(mount_point), Some(sep)) = (fields.get(4), fields.iter().position(|f| *f == "-"))
        else {
            continue;
        };
        let Some(fstype) = fields.get(sep + 1) else {
            continue;
        };
        match (*fstype, *mount_point) {
            ("cgroup2", "/sys/fs/cgroup") => return CgroupLayout::Unified,
            ("cgroup2", "/sys/fs/cgroup/unified") => unified_beside = true,
            ("cgroup", m) if m.starts_with("/sys/fs/cgroup/") => v1 = true,
            _ => {}
        }
    }
    match (v1, unified_beside) {
        (true, true) => CgroupLayout::Hybrid,
        (true, false) => CgroupLayout::Legacy,
        // cgroup2 only at .../unified with no v1 controller is still usable as v2.
        (false, true) => CgroupLayout::Hybrid,
        (false, false) => CgroupLayout::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid() {
        assert_eq!(layout_from_mountinfo(HYBRID), CgroupLayout::Hybrid);
    }

    #[test]
    fn unified() {
        let m = "30 23 0:27 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(layout_from_mountinfo(m), CgroupLayout::Unified);
    }

    #[test]
    fn legacy() {
        let m =
            "32 31 0:29 / /sys/fs/cgroup/memory rw shared:1 master:2 - cgroup cgroup rw,memory\n";
        assert_eq!(layout_from_mountinfo(m), CgroupLayout::Legacy);
    }

    #[test]
    fn nothing_and_garbage() {
        assert_eq!(layout_from_mountinfo(""), CgroupLayout::None);
        assert_eq!(layout_from_mountinfo("a b\n- -\n\n"), CgroupLayout::None);
    }
}
