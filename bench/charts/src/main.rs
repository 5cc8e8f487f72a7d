//! `runvm-bench-charts SAMPLES.jsonl [BUDGET_MIB]`: the PNG charts of one benchmark run
//! (bench/run calls it), written beside the samples as `<date>-<chart>.png`. Text is
//! rendered from a TrueType font: DejaVu Sans (Debian's fonts-dejavu-core) unless
//! `BENCH_FONT` names another file.

mod bars;
mod charts;
mod samples;

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The default font file.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A chart could not be drawn (plotters' errors carry the backend's type; we keep the text).
#[derive(Debug, thiserror::Error)]
#[error("drawing a chart: {0}")]
pub struct DrawError(String);

impl DrawError {
    /// An error with this text.
    pub fn new(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl<E: std::error::Error + Send + Sync> From<plotters::drawing::DrawingAreaErrorKind<E>>
    for DrawError
{
    fn from(e: plotters::drawing::DrawingAreaErrorKind<E>) -> Self {
        Self(e.to_string())
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(samples_path) = args.next().map(PathBuf::from) else {
        bail!("usage: runvm-bench-charts SAMPLES.jsonl [BUDGET_MIB]");
    };
    let budget_mib: f64 = match args.next() {
        Some(b) => b
            .to_str()
            .and_then(|b| b.parse().ok())
            .context("BUDGET_MIB is a number of MiB")?,
        None => 1024.0,
    };
    let font_path = std::env::var_os("BENCH_FONT").unwrap_or_else(|| DEFAULT_FONT.into());
    let font = std::fs::read(&font_path).with_context(|| {
        format!(
            "reading the chart font {} (Debian: fonts-dejavu-core; or set BENCH_FONT)",
            font_path.to_string_lossy()
        )
    })?;
    // plotters keeps registered fonts for the life of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{} is not a TrueType font", font_path.to_string_lossy()))?;

    let samples = samples::read(&samples_path)?;
    let prefix = samples_path.with_extension("");
    for path in charts::draw_all(&samples, &prefix, budget_mib)? {
        println!("{}", path.display());
    }
    Ok(())
}
