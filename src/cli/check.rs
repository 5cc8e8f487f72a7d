//! `runvm check [--json]`: can this host run runvm containers? One line per finding with a
//! verdict; exits 0 only when nothing failed.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::host::HostRoot;
use crate::host::check::{self, Verdict};

/// Flags of `runvm check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

/// Runs the checks and prints them.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load()?;
    let report = check::run(&HostRoot::system(), &config);
    if args.json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        println!("{text}");
    } else {
        for c in &report.checks {
            let verdict = match c.verdict {
                Verdict::Ok => "ok",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            println!("{:<10} {verdict:<4}  {}", c.name, c.detail);
        }
        let failed = report
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count();
        if failed == 0 {
            println!("runvm can run containers on this host");
        } else {
            println!("runvm cannot run containers on this host ({failed} failed)");
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
