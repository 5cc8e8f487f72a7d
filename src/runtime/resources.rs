//! A container's resources seen from runvm: the spec's (and `runvm update`'s) Linux
//! resources translated into the limits of the container's cgroup in the guest, and the
//! guest's figures rendered as runc's `events` JSON.
//!
//! The VM's own size comes from the spec at create (`sizing`); `update` changes the limits
//! inside the VM, not the VM's memory or vCPUs.

use guest_init::protocol::Stats;
use guest_init::spec::Resources;
use oci_spec::runtime::LinuxResources;
use serde_json::{Value, json};

/// runc's conversion of cgroup v1 CPU shares (2..262144) to a v2 weight (1..10000).
fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The guest cgroup limits `r` asks for (memory limit, CPU quota, period and shares, pids
/// limit); `None` if it asks for none of them. A zero memory limit, quota, period or shares
/// is unset, as runc reads them (engines write zeros for what the user did not ask).
pub fn guest_limits(r: &LinuxResources) -> Option<Resources> {
    let memory = r.memory().as_ref();
    let cpu = r.cpu().as_ref();
    let limits = Resources {
        memory_max: memory.and_then(|m| m.limit()).filter(|n| *n != 0),
        cpu_quota: cpu.and_then(|c| c.quota()).filter(|n| *n != 0),
        cpu_period: cpu.and_then(|c| c.period()).filter(|n| *n != 0),
        cpu_weight: cpu
            .and_then(|c| c.shares())
            .map(shares_to_weight)
            .filter(|w| *w > 0),
        pids_max: r.pids().as_ref().map(|p| p.limit()),
    };
    (limits != Resources::default()).then_some(limits)
}

/// runc's `events` record of type `oom` for container `id`.
pub fn oom_event(id: &str) -> Value {
    json!({ "type": "oom", "id": id })
}

/// runc's `events` record of type `stats` for container `id`.
pub fn stats_event(id: &str, s: &Stats) -> Value {
    let raw: serde_json::Map<String, Value> = s
        .memory_stat
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {
                "usage": {
                    "total": s.cpu_total_ns,
                    "user": s.cpu_user_ns,
                    "kernel": s.cpu_kernel_ns,
                },
                "throttling": {
                    "periods": s.cpu_periods,
                    "throttledPeriods": s.cpu_throttled_periods,
                    "throttledTime": s.cpu_throttled_ns,
                },
            },
            "memory": {
                "usage": { "limit": s.memory_limit, "usage": s.memory_usage },
                "raw": raw,
            },
            "pids": { "current": s.pids_current, "limit": s.pids_limit },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_as_runc_sets_them_on_cgroup_v2() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864},"cpu":{"quota":50000,"period":100000,"shares":1024},
                "pids":{"limit":32}}"#,
        )
        .unwrap();
        let l = guest_limits(&r).unwrap();
        assert_eq!(l.memory_max, Some(64 << 20));
        assert_eq!((l.cpu_quota, l.cpu_period), (Some(50_000), Some(100_000)));
        assert_eq!(l.cpu_weight, Some(39));
        assert_eq!(l.pids_max, Some(32));
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(guest_limits(&LinuxResources::default()), None);
        let zeros: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":0},"cpu":{"quota":0,"period":0,"shares":0}}"#,
        )
        .unwrap();
        assert_eq!(guest_limits(&zeros), None);
    }

    #[test]
    fn stats_render_as_runcs_event() {
        let s = Stats {
            cpu_total_ns: 5,
            memory_usage: 7,
            memory_limit: 9,
            memory_stat: vec![("anon".into(), 3)],
            pids_current: 2,
            ..Stats::default()
        };
        let e = stats_event("c", &s);
        assert_eq!(e["type"], "stats");
        assert_eq!(e["data"]["cpu"]["usage"]["total"], 5);
        assert_eq!(e["data"]["memory"]["usage"]["usage"], 7);
        assert_eq!(e["data"]["memory"]["raw"]["anon"], 3);
        assert_eq!(e["data"]["pids"]["current"], 2);
    }
}
