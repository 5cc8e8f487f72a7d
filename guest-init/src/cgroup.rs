//! The container's cgroup in the guest: cgroup2 at /sys/fs/cgroup with the cpu, memory and
//! pids controllers enabled, and one child, `container`, that every process runvm starts
//! enters before its stage runs. Its limits come from the spec (and `runvm update`); its
//! figures answer `runvm events`.

use std::fs;
use std::io;

use guest_init::protocol::{MAX_STAT_KEYS, Stats};
use guest_init::spec::Resources;

/// Where cgroup2 is mounted in the guest.
const ROOT: &str = "/sys/fs/cgroup";
/// The container's cgroup.
const CONTAINER: &str = "/sys/fs/cgroup/container";
/// The file a process writes `0` to, to enter the container's cgroup.
pub const PROCS: &std::ffi::CStr = c"/sys/fs/cgroup/container/cgroup.procs";

/// Mounts cgroup2, enables the controllers for children and makes the container's cgroup.
pub fn set_up() -> io::Result<()> {
    fs::create_dir_all(ROOT)?;
    guest_init::mount::mount(
        Some(std::path::Path::new("cgroup2")),
        std::path::Path::new(ROOT),
        Some("cgroup2"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    fs::write(
        format!("{ROOT}/cgroup.subtree_control"),
        "+cpu +memory +pids",
    )?;
    fs::create_dir_all(CONTAINER)
}

fn write(file: &str, value: &str) -> Result<(), String> {
    fs::write(format!("{CONTAINER}/{file}"), value)
        .map_err(|e| format!("cannot set {file} to {value}: {e}"))
}

/// Applies the limits `r` sets.
pub fn apply(r: &Resources) -> Result<(), String> {
    if let Some(max) = r.memory_max {
        write("memory.max", &limit_text(max))?;
    }
    if r.cpu_quota.is_some() || r.cpu_period.is_some() {
        let quota = r.cpu_quota.map_or("max".to_owned(), limit_text);
        let period = match r.cpu_period {
            Some(p) => p.to_string(),
            None => current_period(),
        };
        write("cpu.max", &format!("{quota} {period}"))?;
    }
    if let Some(weight) = r.cpu_weight {
        write("cpu.weight", &weight.clamp(1, 10_000).to_string())?;
    }
    if let Some(max) = r.pids_max {
        write(
            "pids.max",
            &if max > 0 {
                max.to_string()
            } else {
                "max".into()
            },
        )?;
    }
    Ok(())
}

fn limit_text(n: i64) -> String {
    if n < 0 { "max".into() } else { n.to_string() }
}

/// The period `cpu.max` has now (a quota alone keeps it).
fn current_period() -> String {
    read(&format!("{CONTAINER}/cpu.max"))
        .split_whitespace()
        .nth(1)
        .unwrap_or("100000")
        .to_owned()
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// A number file; `max` (no limit) and errors read as `None`.
fn number(file: &str) -> Option<u64> {
    read(&format!("{CONTAINER}/{file}")).trim().parse().ok()
}

/// `key value` lines as pairs, at most [`MAX_STAT_KEYS`].
fn keyed(file: &str) -> Vec<(String, u64)> {
    read(&format!("{CONTAINER}/{file}"))
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .take(MAX_STAT_KEYS)
        .collect()
}

/// The guest's memory, the limit of an unlimited container.
fn guest_memory() -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The container's figures now.
pub fn stats() -> Stats {
    let cpu = keyed("cpu.stat");
    let get = |k: &str| cpu.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
    Stats {
        cpu_total_ns: get("usage_usec").saturating_mul(1000),
        cpu_user_ns: get("user_usec").saturating_mul(1000),
        cpu_kernel_ns: get("system_usec").saturating_mul(1000),
        cpu_periods: get("nr_periods"),
        cpu_throttled_periods: get("nr_throttled"),
        cpu_throttled_ns: get("throttled_usec").saturating_mul(1000),
        memory_usage: number("memory.current").unwrap_or(0),
        memory_limit: number("memory.max").unwrap_or_else(guest_memory),
        memory_stat: keyed("memory.stat"),
        pids_current: number("pids.current").unwrap_or(0),
        pids_limit: number("pids.max").unwrap_or(0),
        oom_kills: keyed("memory.events")
            .iter()
            .find(|(k, _)| k == "oom_kill")
            .map_or(0, |(_, v)| *v),
    }
}
