//! The container's processes, found in /proc: those whose pid namespace is the container
//! init's. `runvm ps` lists them with the pids the container sees; `runvm kill --all`
//! signals each.

use std::collections::HashMap;
use std::fs;

use guest_init::protocol::{MAX_COMMAND, MAX_PROCESS_LIST, ProcessInfo};

/// The guest pids of the processes in the pid namespace of `init` (a guest pid), at most
/// [`MAX_PROCESS_LIST`].
fn members(init: i32) -> Vec<i32> {
    let Ok(ns) = fs::read_link(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() == Some(&ns))
        .collect();
    pids.sort_unstable();
    pids.truncate(MAX_PROCESS_LIST);
    pids
}

/// Sends `signal` to every process of the container whose init is `init`.
pub fn signal_all(init: i32, signal: i32) {
    for pid in members(init) {
        // SAFETY: kill takes no pointers.
        unsafe { libc::kill(pid, signal) };
    }
}

/// The container's processes, by pid, as the container sees them.
pub fn list(init: i32) -> Vec<ProcessInfo> {
    let found: Vec<(i32, Status)> = members(init)
        .into_iter()
        .filter_map(|pid| Some((pid, status(pid)?)))
        .collect();
    // Guest pid -> pid inside the container, to translate parents.
    let inner: HashMap<i32, i32> = found.iter().map(|(pid, s)| (*pid, s.nspid)).collect();
    let mut list: Vec<ProcessInfo> = found
        .iter()
        .map(|(pid, s)| ProcessInfo {
            pid: s.nspid,
            ppid: inner.get(&s.ppid).copied().unwrap_or(0),
            uid: s.uid,
            command: command(*pid, &s.name),
        })
        .collect();
    list.sort_by_key(|p| p.pid);
    list
}

struct Status {
    name: String,
    ppid: i32,
    uid: u32,
    /// The pid in the innermost pid namespace.
    nspid: i32,
}

fn status(pid: i32) -> Option<Status> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    Some(Status {
        name: field("Name:")?.to_owned(),
        ppid: field("PPid:")?.parse().ok()?,
        uid: field("Uid:")?.split_whitespace().next()?.parse().ok()?,
        nspid: field("NSpid:")?.split_whitespace().last()?.parse().ok()?,
    })
}

fn command(pid: i32, name: &str) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut line = if words.is_empty() {
        format!("[{name}]")
    } else {
        words.join(" ")
    };
    if line.len() > MAX_COMMAND {
        let mut end = MAX_COMMAND;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_listed_in_its_own_pid_namespace() {
        let me = std::process::id() as i32;
        let list = list(me);
        let mut me_cmd = std::env::args().collect::<Vec<_>>().join(" ");
        me_cmd.truncate(MAX_COMMAND);
        let mine = list.iter().find(|p| p.command == me_cmd).unwrap();
        // SAFETY: getuid has no preconditions.
        assert_eq!(mine.uid, unsafe { libc::getuid() });
        assert!(list.len() <= MAX_PROCESS_LIST);
        assert!(list.windows(2).all(|w| w[0].pid < w[1].pid));
        assert!(list.iter().all(|p| p.command.len() <= MAX_COMMAND));
    }

    #[test]
    fn a_process_without_a_command_line_shows_its_name() {
        assert_eq!(command(-1, "x"), "[x]");
    }
}
