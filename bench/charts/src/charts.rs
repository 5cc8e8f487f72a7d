//! The charts of a run: start latency, boot, memory (the density curve), file I/O, real
//! file-system work (stat, make, git clone) and network, each a PNG beside the run's
//! Markdown report. A chart whose samples are missing from the run is not drawn.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::DrawError;
use crate::bars::{Bar, PLAIN, RUNC, RUNVM, panel};
use crate::samples::{Runtime, Sample, summary};

fn color(rt: Runtime) -> RGBColor {
    match rt {
        Runtime::Runvm => RUNVM,
        Runtime::Runc => RUNC,
    }
}

/// Draws every chart the samples allow as `<prefix>-<name>.png`; returns the files written.
pub fn draw_all(
    samples: &[Sample],
    prefix: &Path,
    budget_mib: f64,
) -> Result<Vec<PathBuf>, DrawError> {
    let mut written = Vec::new();
    let mut out = |name: &str| {
        let mut file = prefix.as_os_str().to_owned();
        file.push(format!("-{name}.png"));
        let path = PathBuf::from(file);
        written.push(path.clone());
        path
    };
    let latency = latency_bars(samples);
    if !latency.iter().all(|(_, bars)| bars.is_empty()) {
        let path = out("latency");
        let root = BitMapBackend::new(&path, (1000, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(DrawError::from)?;
        let (left, right) = root.split_horizontally(500);
        panel(&left, &latency[0].0, "ms", 0, &latency[0].1)?;
        panel(&right, &latency[1].0, "ms", 0, &latency[1].1)?;
        root.present().map_err(DrawError::from)?;
    }
    if let Some((phases, exits)) = boot_bars(samples) {
        let path = out("boot");
        let root = BitMapBackend::new(&path, (1000, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(DrawError::from)?;
        let (left, right) = root.split_horizontally(560);
        panel(&left, "boot phases, median (whisker p90)", "ms", 0, &phases)?;
        panel(&right, "VM exits per boot, median", "exits", 0, &exits)?;
        root.present().map_err(DrawError::from)?;
    }
    if samples.iter().any(|s| matches!(s, Sample::Fill { .. })) {
        let path = out("memory");
        let root = BitMapBackend::new(&path, (1000, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(DrawError::from)?;
        fill_curve(&root, samples, budget_mib)?;
        root.present().map_err(DrawError::from)?;
    }
    if let Some([write, read, untar]) = fs_bars(samples) {
        let path = out("fs");
        let root = BitMapBackend::new(&path, (1000, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(DrawError::from)?;
        let areas = root.split_evenly((1, 3));
        panel(&areas[0], "sequential write", "MiB/s", 0, &write)?;
        panel(&areas[1], "sequential read", "MiB/s", 0, &read)?;
        panel(&areas[2], "untar 10,000 files", "s", 1, &untar)?;
        root.present().map_err(DrawError::from)?;
    }
    if let Some(panels) = work_bars(samples) {
        let path = out("work");
        let root = BitMapBackend::new(&path, (1200, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(DrawError::from)?;
        for (area, (title, bars)) in root.split_evenly((1, 3)).iter().zip(&panels) {
            panel(area, title, "s", 1, bars)?;
        }
        root.present().map_err(DrawError::from)?;
    }
    if let Some([tcp, rr, run]) = net_bars(samples) {
        let path = out("net");
        let root = BitMapBackend::new(&path, (1300, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(DrawError::from)?;
        // The last panel's four labels are the longest.
        let (left, rest) = root.split_horizontally(420);
        let (middle, right) = rest.split_horizontally(320);
        panel(&left, "TCP in / out, median", "Mbit/s", 0, &tcp)?;
        panel(&middle, "TCP round trip, median (p90)", "ms", 2, &rr)?;
        panel(&right, "docker run true, median (p90)", "s", 1, &run)?;
        root.present().map_err(DrawError::from)?;
    }
    Ok(written)
}

/// Network: iperf3 throughput each way (median), the round trip and `docker run` on the
/// bridge and with `--network none` (median, p90 whisker), per runtime.
fn net_bars(samples: &[Sample]) -> Option<[Vec<Bar>; 3]> {
    let mut out: [Vec<Bar>; 3] = Default::default();
    for (direction, short) in [("host_to_container", "in"), ("container_to_host", "out")] {
        for rt in Runtime::ALL {
            let values: Vec<f64> = samples
                .iter()
                .filter_map(|s| match s {
                    Sample::NetTcp {
                        runtime,
                        direction: d,
                        bits_per_second,
                    } if *runtime == rt && d == direction => Some(bits_per_second / 1e6),
                    _ => None,
                })
                .collect();
            if let Some(s) = summary(&values) {
                out[0].push(Bar {
                    label: format!("{} {short}", rt.name()),
                    value: s.median,
                    whisker: None,
                    color: color(rt),
                });
            }
        }
    }
    for rt in Runtime::ALL {
        let values: Vec<f64> = samples
            .iter()
            .filter_map(|s| match *s {
                Sample::NetRr { runtime, ms } if runtime == rt => Some(ms),
                _ => None,
            })
            .collect();
        if let Some(s) = summary(&values) {
            out[1].push(Bar {
                label: rt.name().to_owned(),
                value: s.median,
                whisker: Some(s.p90),
                color: color(rt),
            });
        }
    }
    for rt in Runtime::ALL {
        for network in ["bridge", "none"] {
            let values: Vec<f64> = samples
                .iter()
                .filter_map(|s| match s {
                    Sample::NetRun {
                        runtime,
                        network: n,
                        ms,
                    } if *runtime == rt && n == network => Some(ms / 1000.0),
                    _ => None,
                })
                .collect();
            if let Some(s) = summary(&values) {
                out[2].push(Bar {
                    label: format!("{} {network}", rt.name()),
                    value: s.median,
                    whisker: Some(s.p90),
                    color: color(rt),
                });
            }
        }
    }
    out.iter().any(|bars| !bars.is_empty()).then_some(out)
}

/// `run` and `exec` of `true`: a median bar with its p90 whisker per runtime.
fn latency_bars(samples: &[Sample]) -> [(String, Vec<Bar>); 2] {
    let pick = |exec: bool, rt: Runtime| -> Vec<f64> {
        samples
            .iter()
            .filter_map(|s| match *s {
                Sample::Run { runtime, ms } if !exec && runtime == rt => Some(ms),
                Sample::Exec { runtime, ms } if exec && runtime == rt => Some(ms),
                _ => None,
            })
            .collect()
    };
    [false, true].map(|exec| {
        let bars: Vec<Bar> = Runtime::ALL
            .iter()
            .filter_map(|&rt| {
                summary(&pick(exec, rt)).map(|s| Bar {
                    label: rt.name().to_owned(),
                    value: s.median,
                    whisker: Some(s.p90),
                    color: color(rt),
                })
            })
            .collect();
        let what = if exec { "exec" } else { "run" };
        let title = match (bars.first(), bars.get(1)) {
            (Some(a), Some(b)) if b.value > 0.0 => {
                format!("`{what}` of true: {:.1}x runc", a.value / b.value)
            }
            _ => format!("`{what}` of true"),
        };
        (title, bars)
    })
}

/// Boot phases (median, p90) and VM exits by kind (median) over the whole boots.
fn boot_bars(samples: &[Sample]) -> Option<(Vec<Bar>, Vec<Bar>)> {
    let boots: Vec<_> = samples
        .iter()
        .filter_map(|s| match s {
            Sample::Boot { phases_ms, exits } => Some((phases_ms, exits)),
            _ => None,
        })
        .collect();
    let (first, _) = boots.first()?;
    let mut order: Vec<&String> = first.keys().collect();
    order.sort_by_key(|phase| {
        PHASES
            .iter()
            .position(|p| p == phase)
            .unwrap_or(PHASES.len())
    });
    let phases = order
        .into_iter()
        .filter_map(|phase| {
            let values: Vec<f64> = boots
                .iter()
                .filter_map(|(p, _)| p.get(phase).and_then(serde_json::Value::as_f64))
                .collect();
            summary(&values).map(|s| Bar {
                label: short(phase),
                value: s.median,
                whisker: Some(s.p90),
                color: RUNVM,
            })
        })
        .collect();
    let mut kinds: Vec<&String> = boots.iter().flat_map(|(_, e)| e.keys()).collect();
    kinds.sort();
    kinds.dedup();
    let exits = kinds
        .into_iter()
        .filter_map(|kind| {
            let values: Vec<f64> = boots
                .iter()
                .map(|(_, e)| e.get(kind).copied().unwrap_or(0) as f64)
                .collect();
            summary(&values).map(|s| Bar {
                label: kind.replace('_', " "),
                value: s.median,
                whisker: None,
                color: PLAIN,
            })
        })
        .collect();
    Some((phases, exits))
}

/// The phases of `runvm debug boot` in boot order (its JSON object's keys come sorted).
const PHASES: [&str; 4] = [
    "vmm_setup_to_first_entry",
    "kernel_start_to_init",
    "init_to_hello",
    "power_off",
];

/// A phase's name short enough to sit under its bar.
fn short(phase: &str) -> String {
    match phase {
        "vmm_setup_to_first_entry" => "VMM set-up".to_owned(),
        "kernel_start_to_init" => "kernel".to_owned(),
        "init_to_hello" => "guest-init".to_owned(),
        other => other.replace('_', " "),
    }
}

/// Host memory while idle containers start one after another: the drop of MemAvailable and
/// the sum of their PSS, per runtime (the largest fill of the run), with the budget line.
fn fill_curve<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    samples: &[Sample],
    budget_mib: f64,
) -> Result<(), DrawError> {
    let mut series = Vec::new();
    for rt in Runtime::ALL {
        let largest = samples
            .iter()
            .filter_map(|s| match *s {
                Sample::Fill { runtime, count, .. } if runtime == rt => Some(count),
                _ => None,
            })
            .max();
        let Some(largest) = largest else { continue };
        let mut used = Vec::new();
        let mut pss = Vec::new();
        for s in samples {
            if let Sample::Fill {
                runtime,
                count,
                n,
                pss_total_kib,
                used_kib,
            } = *s
                && runtime == rt
                && count == largest
            {
                used.push((n, used_kib as f64 / 1024.0));
                pss.push((n, pss_total_kib as f64 / 1024.0));
            }
        }
        series.push((rt, used, pss));
    }
    let max_n = series
        .iter()
        .flat_map(|(_, u, _)| u.iter().map(|(n, _)| *n))
        .max()
        .unwrap_or(1);
    let top = series
        .iter()
        .flat_map(|(_, u, p)| u.iter().chain(p).map(|(_, v)| *v))
        .fold(budget_mib, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "host memory with N idle containers (sleep) running",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..max_n + 1, 0f64..top)
        .map_err(DrawError::from)?;
    chart
        .configure_mesh()
        .x_desc("idle containers running")
        .y_desc("MiB")
        .light_line_style(WHITE)
        .y_label_formatter(&|v| crate::bars::axis_label(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(DrawError::from)?;
    let fit_text: Vec<String> = series
        .iter()
        .map(|(rt, used, _)| match fits(used, budget_mib) {
            Some(k) => format!("{} fit {k}", rt.name()),
            None => format!("{} fit all {}", rt.name(), used.len()),
        })
        .collect();
    for (rt, used, pss) in series {
        let c = color(rt);
        chart
            .draw_series(LineSeries::new(used, c.stroke_width(3)))
            .map_err(DrawError::from)?
            .label(format!("{}: MemAvailable drop", rt.name()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        let light = c.mix(0.45);
        chart
            .draw_series(LineSeries::new(pss, light.stroke_width(2)))
            .map_err(DrawError::from)?
            .label(format!("{}: sum of PSS", rt.name()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], light.stroke_width(2))
            });
    }
    let budget = RGBColor(0xb0, 0x20, 0x20);
    chart
        .draw_series(LineSeries::new(
            [(0, budget_mib), (max_n + 1, budget_mib)],
            budget.stroke_width(2),
        ))
        .map_err(DrawError::from)?
        .label(format!(
            "budget {budget_mib:.0} MiB: {}",
            fit_text.join(", ")
        ))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], budget.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(DrawError::from)?;
    Ok(())
}

/// How many containers of a fill ran before the memory they used passed `budget_mib`
/// (`None`: the budget held for the whole fill).
fn fits(used: &[(u32, f64)], budget_mib: f64) -> Option<u32> {
    used.iter()
        .find(|(_, mib)| *mib > budget_mib)
        .map(|(n, _)| n.saturating_sub(1))
}

/// Write and read throughput and untar time per runtime.
fn fs_bars(samples: &[Sample]) -> Option<[Vec<Bar>; 3]> {
    let mut out: [Vec<Bar>; 3] = Default::default();
    for s in samples {
        if let Sample::Fs {
            runtime,
            mib,
            write_ms,
            read_ms,
            untar_ms,
        } = *s
        {
            let values = [
                mib / (write_ms.max(1.0) / 1000.0),
                mib / (read_ms.max(1.0) / 1000.0),
                untar_ms / 1000.0,
            ];
            for (bars, value) in out.iter_mut().zip(values) {
                bars.push(Bar {
                    label: runtime.name().to_owned(),
                    value,
                    whisker: None,
                    color: color(runtime),
                });
            }
        }
    }
    (!out[0].is_empty()).then_some(out)
}

/// The work part's three figures, one panel each.
const WORK: [&str; 3] = [
    "stat 10,000 files",
    "make -j2, 60 C files",
    "git clone, 5,000 files",
];

/// stat, make and git clone in seconds, the median per runtime (a run has one sample each),
/// one panel per figure, titled with runvm's ratio to runc when both ran.
fn work_bars(samples: &[Sample]) -> Option<[(String, Vec<Bar>); 3]> {
    let times = |rt: Runtime, figure: usize| -> Vec<f64> {
        samples
            .iter()
            .filter_map(|s| match *s {
                Sample::Work {
                    runtime,
                    stat_ms,
                    make_ms,
                    clone_ms,
                } if runtime == rt => Some([stat_ms, make_ms, clone_ms][figure] / 1000.0),
                _ => None,
            })
            .collect()
    };
    let panels = [0, 1, 2].map(|figure| {
        let bars: Vec<Bar> = Runtime::ALL
            .iter()
            .filter_map(|&rt| {
                summary(&times(rt, figure)).map(|s| Bar {
                    label: rt.name().to_owned(),
                    value: s.median,
                    whisker: None,
                    color: color(rt),
                })
            })
            .collect();
        let title = match (bars.first(), bars.get(1)) {
            (Some(a), Some(b)) if b.value > 0.0 => {
                format!("{}: {:.1}x runc", WORK[figure], a.value / b.value)
            }
            _ => WORK[figure].to_owned(),
        };
        (title, bars)
    });
    (!panels[0].1.is_empty()).then_some(panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(runtime: Runtime, ms: f64) -> Sample {
        Sample::Run { runtime, ms }
    }

    #[test]
    fn latency_titles_carry_the_ratio_of_medians() {
        let samples = [
            run(Runtime::Runvm, 300.0),
            run(Runtime::Runvm, 500.0),
            run(Runtime::Runvm, 400.0),
            run(Runtime::Runc, 100.0),
        ];
        let [(run_title, run_bars), (exec_title, exec_bars)] = latency_bars(&samples);
        assert_eq!(run_title, "`run` of true: 4.0x runc");
        assert_eq!(run_bars[0].value, 400.0);
        assert_eq!(run_bars[0].whisker, Some(500.0));
        assert_eq!(exec_title, "`exec` of true");
        assert!(exec_bars.is_empty());
    }

    #[test]
    fn fits_counts_the_containers_before_the_budget_breaks() {
        let used = [(1, 40.0), (2, 80.0), (3, 120.0)];
        assert_eq!(fits(&used, 100.0), Some(2));
        assert_eq!(fits(&used, 30.0), Some(0));
        assert_eq!(fits(&used, 500.0), None);
    }

    #[test]
    fn fs_bars_turn_times_into_throughput() {
        let samples = [Sample::Fs {
            runtime: Runtime::Runc,
            mib: 256.0,
            write_ms: 2000.0,
            read_ms: 500.0,
            untar_ms: 3500.0,
        }];
        let [w, r, u] = fs_bars(&samples).expect("bars");
        assert_eq!((w[0].value, r[0].value, u[0].value), (128.0, 512.0, 3.5));
        assert!(fs_bars(&[]).is_none());
    }

    #[test]
    fn work_bars_show_seconds_and_the_ratio_to_runc() {
        let work = |runtime, stat_ms, make_ms, clone_ms| Sample::Work {
            runtime,
            stat_ms,
            make_ms,
            clone_ms,
        };
        let samples = [
            work(Runtime::Runc, 1000.0, 25_000.0, 0.0),
            work(Runtime::Runvm, 3000.0, 50_000.0, 20_000.0),
            work(Runtime::Runvm, 5000.0, 40_000.0, 30_000.0),
            work(Runtime::Runvm, 4000.0, 60_000.0, 10_000.0),
        ];
        let [(stat, s), (make, m), (clone, c)] = work_bars(&samples).expect("bars");
        // Medians, runvm first.
        assert_eq!(stat, "stat 10,000 files: 4.0x runc");
        assert_eq!(make, "make -j2, 60 C files: 2.0x runc");
        // No ratio to a runc time of zero.
        assert_eq!(clone, "git clone, 5,000 files");
        assert_eq!((s[0].value, s[1].value), (4.0, 1.0));
        assert_eq!((m[0].label.as_str(), m[1].value), ("runvm", 25.0));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].value, 20.0);
        let [(only, bars), ..] = work_bars(&samples[..1]).expect("runc alone");
        assert_eq!(
            (only.as_str(), bars[0].label.as_str()),
            ("stat 10,000 files", "runc")
        );
        assert!(work_bars(&[]).is_none());
    }

    #[test]
    fn net_bars_group_by_direction_and_network() {
        let tcp = |runtime, direction: &str, bits_per_second| Sample::NetTcp {
            runtime,
            direction: direction.to_owned(),
            bits_per_second,
        };
        let run = |runtime, network: &str, ms| Sample::NetRun {
            runtime,
            network: network.to_owned(),
            ms,
        };
        let samples = [
            tcp(Runtime::Runc, "container_to_host", 2e9),
            tcp(Runtime::Runvm, "host_to_container", 1e8),
            tcp(Runtime::Runvm, "host_to_container", 3e8),
            tcp(Runtime::Runvm, "host_to_container", 2e8),
            Sample::NetRr {
                runtime: Runtime::Runc,
                ms: 0.25,
            },
            run(Runtime::Runvm, "none", 4000.0),
            run(Runtime::Runvm, "bridge", 6000.0),
        ];
        let [t, rr, r] = net_bars(&samples).expect("bars");
        let labels = |bars: &[Bar]| bars.iter().map(|b| b.label.clone()).collect::<Vec<_>>();
        assert_eq!(labels(&t), ["runvm in", "runc out"]);
        assert_eq!((t[0].value, t[1].value), (200.0, 2000.0));
        assert_eq!(labels(&rr), ["runc"]);
        assert_eq!(labels(&r), ["runvm bridge", "runvm none"]);
        assert_eq!((r[0].value, r[1].value), (6.0, 4.0));
        assert!(net_bars(&[]).is_none());
    }
}
