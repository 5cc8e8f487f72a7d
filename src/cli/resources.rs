//! `runvm update` and `runvm events`, with runc's flags: new limits for a running
//! container (`--resources FILE|-` as containerd's shim passes them, or single flags), and
//! its resource use as runc's JSON `stats` events, once (`--stats`) or every `--interval`,
//! with an `oom` event when the kernel killed a process for the memory limit meanwhile.
//!
//! The limits apply to the container's cgroup inside its VM; the VM keeps the size it was
//! created with.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use oci_spec::runtime::LinuxResources;

use crate::runtime::run::validate_id;
use crate::runtime::{pausing, resources};

/// The most bytes `--resources` reads.
const MAX_RESOURCES: u64 = 1 << 20;

/// Flags of `runvm update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The new resources as OCI `linux.resources` JSON, from a file or `-` for stdin.
    #[arg(long, short)]
    resources: Option<String>,
    /// Memory limit in bytes (suffixes k, m, g).
    #[arg(long, short)]
    memory: Option<String>,
    /// CFS quota in microseconds (-1: none).
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    /// CPU shares (converted to a cgroup v2 weight as runc does).
    #[arg(long = "cpu-share")]
    cpu_share: Option<u64>,
    /// Maximum number of processes (0 or -1: none).
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    /// The container id.
    id: String,
}

/// Flags of `runvm events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print one stats event and exit.
    #[arg(long)]
    stats: bool,
    /// Time between stats events (`5s`, `500ms`, `1m`).
    #[arg(long, default_value = "5s")]
    interval: String,
    /// The container id.
    id: String,
}

/// `1024`, `64k`, `512m`, `2g` (binary units, as runc's flags take them).
fn parse_bytes(text: &str) -> anyhow::Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: i64 = digits
        .parse()
        .with_context(|| format!("invalid size {text:?}"))?;
    if n < 0 {
        return Ok(-1);
    }
    n.checked_mul(1 << shift)
        .ok_or_else(|| anyhow!("size {text:?} is too large"))
}

/// A Go-style duration of one unit: `250ms`, `5s`, `2m`, `1h`.
fn parse_interval(text: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow!("invalid interval {text:?} (use e.g. 500ms, 5s, 1m)");
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        bail!("the interval must be positive");
    }
    Ok(d)
}

/// The resources `update` was given: the JSON first, the single flags over it.
fn requested(args: &UpdateArgs) -> anyhow::Result<LinuxResources> {
    let mut r = match args.resources.as_deref() {
        None => LinuxResources::default(),
        Some(source) => {
            let mut text = String::new();
            if source == "-" {
                std::io::stdin()
                    .take(MAX_RESOURCES)
                    .read_to_string(&mut text)
                    .context("cannot read the resources from stdin")?;
            } else {
                std::fs::File::open(source)
                    .and_then(|f| f.take(MAX_RESOURCES).read_to_string(&mut text))
                    .with_context(|| format!("cannot read the resources file {source}"))?;
            }
            serde_json::from_str(&text).context("invalid resources JSON")?
        }
    };
    let mut value = serde_json::to_value(&r)?;
    // Indexing a missing section makes it.
    let mut set = |path: [&str; 2], v: serde_json::Value| value[path[0]][path[1]] = v;
    if let Some(m) = &args.memory {
        set(["memory", "limit"], parse_bytes(m)?.into());
    }
    if let Some(q) = args.cpu_quota {
        set(["cpu", "quota"], q.into());
    }
    if let Some(p) = args.cpu_period {
        set(["cpu", "period"], p.into());
    }
    if let Some(s) = args.cpu_share {
        set(["cpu", "shares"], s.into());
    }
    if let Some(p) = args.pids_limit {
        set(["pids", "limit"], p.into());
    }
    r = serde_json::from_value(value).context("invalid resources")?;
    Ok(r)
}

/// Applies the new limits.
pub fn update(args: &UpdateArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    let r = requested(args)?;
    let Some(limits) = resources::guest_limits(&r) else {
        // Nothing runvm applies (devices, blkio, hugepages...): accepted, as runc would
        // leave an unset cgroup file alone.
        return Ok(ExitCode::SUCCESS);
    };
    pausing::update(root, &args.id, limits).map_err(|e| anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}

/// Prints stats events until the container stops (or once).
pub fn events(args: &EventsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    let interval = parse_interval(&args.interval)?;
    let mut first = true;
    let mut oom_kills = None;
    loop {
        let stats = match pausing::stats(root, &args.id) {
            Ok(s) => s,
            // The container ended while we watched: the stream ends.
            Err(_) if !first => return Ok(ExitCode::SUCCESS),
            Err(e) => bail!("{e}"),
        };
        first = false;
        let mut out = std::io::stdout().lock();
        // An OOM kill since the last look is an `oom` event, as runc reports one.
        if oom_kills.is_some_and(|seen| stats.oom_kills > seen) {
            writeln!(out, "{}", resources::oom_event(&args.id))?;
        }
        oom_kills = Some(stats.oom_kills);
        let line = resources::stats_event(&args.id, &stats).to_string();
        writeln!(out, "{line}").and_then(|()| out.flush())?;
        if args.stats {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_intervals_as_runc_takes_them() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_interval("0s").is_err() && parse_interval("5").is_err());
    }

    #[test]
    fn flags_go_over_the_json() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.json");
        std::fs::write(&file, r#"{"memory":{"limit":1000},"pids":{"limit":5}}"#).unwrap();
        let args = UpdateArgs {
            resources: Some(file.to_str().unwrap().into()),
            memory: Some("2m".into()),
            cpu_quota: Some(20_000),
            cpu_period: None,
            cpu_share: None,
            pids_limit: None,
            id: "c".into(),
        };
        let r = requested(&args).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(2 << 20));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 5);
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(20_000));
    }
}
