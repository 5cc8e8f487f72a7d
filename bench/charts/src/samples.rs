//! The samples of one benchmark run: the JSON lines bench/run and bench/in-vm print, each
//! tagged with its `bench` kind, and the summary statistics the charts show.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Why the samples could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The samples file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a sample we know.
    #[error("{path}:{line}: not a benchmark sample: {source}")]
    Parse {
        /// The samples file.
        path: String,
        /// The 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// Which runtime a sample measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// This project.
    Runvm,
    /// The reference.
    Runc,
}

impl Runtime {
    /// Both, in the order the charts show them.
    pub const ALL: [Runtime; 2] = [Runtime::Runvm, Runtime::Runc];

    /// The name on the charts.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Runvm => "runvm",
            Runtime::Runc => "runc",
        }
    }
}

/// One JSON line.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "bench", rename_all = "snake_case")]
pub enum Sample {
    /// VMM start to vCPU 0's first entry, on the host (in the report's tables only).
    Setup {},
    /// Where the in-VM part ran (in the report's header only).
    Env {},
    /// One whole boot of `runvm debug boot`.
    Boot {
        /// Milliseconds per phase, in boot order.
        phases_ms: serde_json::Map<String, serde_json::Value>,
        /// VM exits by kind.
        exits: BTreeMap<String, u64>,
    },
    /// One `run` of `true`.
    Run {
        /// The runtime.
        runtime: Runtime,
        /// Wall time.
        ms: f64,
    },
    /// One `exec` of `true`.
    Exec {
        /// The runtime.
        runtime: Runtime,
        /// Wall time.
        ms: f64,
    },
    /// One idle container's PSS once all of its fill run (in the report's tables only).
    Memory {},
    /// The drop of MemAvailable once all of a fill run (in the report's tables only).
    MemoryHost {},
    /// How much of a sandbox's PSS is guest RAM (in the report's tables only).
    MemorySplit {},
    /// The running totals after the `n`th of `count` idle containers started.
    Fill {
        /// The runtime.
        runtime: Runtime,
        /// The size of this fill.
        count: u32,
        /// Containers running.
        n: u32,
        /// Sum of their PSS.
        pss_total_kib: u64,
        /// Drop of MemAvailable since the fill began.
        used_kib: i64,
    },
    /// File I/O in the container's root.
    Fs {
        /// The runtime.
        runtime: Runtime,
        /// Size written then read.
        mib: f64,
        /// Sequential write with fsync.
        write_ms: f64,
        /// Sequential read.
        read_ms: f64,
        /// Untar of the file tree.
        untar_ms: f64,
    },
    /// Real file-system work in a Debian root file system, one container run.
    Work {
        /// The runtime.
        runtime: Runtime,
        /// `stat` of every file of the tree.
        stat_ms: f64,
        /// `make -j2` of the C project.
        make_ms: f64,
        /// `git clone` of the local repository.
        clone_ms: f64,
    },
    /// One iperf3 run between the host and a container on docker's bridge.
    NetTcp {
        /// The runtime.
        runtime: Runtime,
        /// `host_to_container` or `container_to_host`.
        direction: String,
        /// Throughput as the receiver counted it.
        bits_per_second: f64,
    },
    /// One TCP round trip between the host and an echo in a container.
    NetRr {
        /// The runtime.
        runtime: Runtime,
        /// Wall time.
        ms: f64,
    },
    /// One `docker run --rm IMAGE true`.
    NetRun {
        /// The runtime.
        runtime: Runtime,
        /// `bridge` or `none`.
        network: String,
        /// Wall time.
        ms: f64,
    },
}

/// Reads a samples file; lines that are not JSON objects (progress) are skipped.
pub fn read(path: &Path) -> Result<Vec<Sample>, SampleError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SampleError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&text, &name)
}

fn parse(text: &str, name: &str) -> Result<Vec<Sample>, SampleError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.starts_with('{'))
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| SampleError::Parse {
                path: name.to_owned(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// Median and 90th percentile (nearest rank, as bench/report computes them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// The 90th percentile.
    pub p90: f64,
}

/// The summary of `values`, `None` when there are none.
pub fn summary(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let rank = (0.9 * (n - 1) as f64).round() as usize;
    Some(Summary {
        median,
        p90: sorted[rank.min(n - 1)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tagged_lines_and_skips_progress() {
        let text = "bench: run\n\
            {\"bench\": \"run\", \"runtime\": \"runc\", \"ms\": 12.5}\n\
            {\"bench\": \"fill\", \"runtime\": \"runvm\", \"count\": 3, \"n\": 2, \
             \"pss_total_kib\": 70000, \"used_kib\": 81000}\n";
        let samples = parse(text, "x").expect("parses");
        assert_eq!(samples.len(), 2);
        assert!(matches!(
            samples[0],
            Sample::Run { runtime: Runtime::Runc, ms } if ms == 12.5
        ));
        assert!(matches!(samples[1], Sample::Fill { n: 2, .. }));
    }

    #[test]
    fn an_unknown_kind_names_its_line() {
        let err = parse(
            "{\"bench\": \"setup\", \"vmm_setup_to_first_entry_ms\": 1}\n{\"bench\": \"nope\"}",
            "f",
        )
        .expect_err("an unknown kind");
        assert!(err.to_string().starts_with("f:2:"), "{err}");
    }

    #[test]
    fn median_and_p90() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = summary(&values).expect("some");
        assert_eq!(s.median, 5.5);
        assert_eq!(s.p90, 9.0);
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[3.0]).map(|s| s.p90), Some(3.0));
    }
}
