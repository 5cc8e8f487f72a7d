//! `runvm state ID`, `runvm list [--format table|json] [--quiet]` and `runvm ps [--format
//! table|json] ID`, in runc's output formats (ps: a table of the guest's processes with the
//! pids the container sees, or, as runc, a JSON array of the container's host pids, which
//! engines look up in the host's process table: the sandbox's, the one host process of a
//! container whose processes live in a VM):
//! the state as indented JSON; the list as runc's table (columns padded to at least 12), a
//! JSON array, or the ids alone.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::runtime::pausing;
use crate::runtime::run::validate_id;
use crate::runtime::state::{ContainerState, Store};

/// Flags of `runvm state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The container id.
    id: String,
}

/// How `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// runc's table.
    Table,
    /// A JSON array of states.
    Json,
}

/// Flags of `runvm list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
    /// Print the ids only.
    #[arg(long, short)]
    quiet: bool,
}

/// Prints the state of one container.
pub fn state(args: &StateArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    let state = Store::new(root).load(&args.id)?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(ExitCode::SUCCESS)
}

/// Prints every container.
pub fn list(args: &ListArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = Store::new(root);
    let states: Vec<ContainerState> = store
        .ids()?
        .iter()
        .filter_map(|id| store.load(id).ok())
        .collect();
    if args.quiet {
        for s in &states {
            println!("{}", s.id);
        }
    } else if args.format == ListFormat::Json {
        println!("{}", serde_json::to_string(&states)?);
    } else {
        print!("{}", table(&states));
    }
    Ok(ExitCode::SUCCESS)
}

/// runc's table: each column but the last as wide as its widest cell plus 3, at least 12.
fn table(states: &[ContainerState]) -> String {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
    for s in states {
        rows.push([
            s.id.clone(),
            s.pid.to_string(),
            s.status.name().to_owned(),
            s.bundle.display().to_string(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len() + 3)
                .max()
                .unwrap_or(0)
                .max(12)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (c, cell) in r.iter().enumerate() {
            if c == 5 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::{OCI_VERSION, Status};

    fn s_id() -> &'static str {
        "a-rather-long-container-id"
    }

    #[test]
    fn the_table_has_runcs_columns_and_padding() {
        let s = ContainerState {
            oci_version: OCI_VERSION.into(),
            id: "a-rather-long-container-id".into(),
            pid: 42,
            status: Status::Running,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-11-22T17:00:00.000000001Z".into(),
            owner: String::new(),
            annotations: Default::default(),
            pid_start: 0,
        };
        let t = table(&[s]);
        let lines: Vec<&str> = t.lines().collect();
        let header = format!(
            "{:<29}{:<12}{:<12}{:<12}{:<33}OWNER",
            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
        );
        assert_eq!(lines[0], header);
        assert!(lines[1].starts_with(&format!("{:<29}{:<12}{:<12}/b", s_id(), "42", "running")));
    }
}

/// Flags of `runvm ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Output format: a table of the guest's processes, or a JSON array of host pids.
    #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
    /// The container id.
    id: String,
    /// `ps` options, accepted for runc compatibility (runvm lists the guest's processes
    /// itself).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

/// Prints the container's processes: the guest's, or its host pids (`--format json`).
pub fn ps(args: &PsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    validate_id(&args.id)?;
    if args.format == ListFormat::Json {
        let pids = pausing::host_pids(root, &args.id).map_err(|e| anyhow::anyhow!(e))?;
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = pausing::processes(root, &args.id).map_err(|e| anyhow::anyhow!(e))?;
    println!("{:<8} {:>7} {:>7} CMD", "UID", "PID", "PPID");
    for p in &list {
        // The command comes from the guest: no control characters reach the terminal.
        let cmd: String = p
            .command
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        println!("{:<8} {:>7} {:>7} {cmd}", p.uid, p.pid, p.ppid);
    }
    Ok(ExitCode::SUCCESS)
}
