//! An out-of-memory kill in the guest, made visible on the host as runc's would be.
//!
//! Under runc the container's processes live in its host cgroup, so a kill for the memory
//! limit shows in that cgroup's `memory.events` (`oom`, `oom_kill`; v1: the `memory`
//! controller's OOM notification), where containerd's shim and conmon watch for it (docker's
//! `OOMKilled`, the `oom` event). Under runvm the kill happens inside the guest, and the host
//! cgroup holds only the sandbox. When guest-init reports one, [`tell_host`] makes a real,
//! harmless OOM kill in the sandbox's own host cgroup:
//!
//! 1. a sacrificial child (`runvm` itself, hidden verb `oom-sacrifice`) starts in the
//!    sandbox's cgroup, sets its `oom_score_adj` to 1000 and says it is ready;
//! 2. the sandbox tries to make itself unkillable (`oom_score_adj` -1000, which needs
//!    CAP_SYS_RESOURCE), then lowers the cgroup's memory limit to its current use plus a
//!    margin, and lets the child allocate;
//! 3. the child reaches the limit and the kernel's OOM killer picks it (its score is the
//!    highest there), counting the kill in the cgroup's events;
//! 4. the limit and the sandbox's score are put back as they were, at once.
//!
//! The child is spawned, not forked: a fork would copy the page tables of the guest's RAM.

use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden verb the sacrificial child runs.
pub const SACRIFICE_VERB: &str = "oom-sacrifice";
/// Room left above the cgroup's current use while the child allocates: the sandbox (the
/// guest's RAM) may still grow meanwhile without reaching the limit itself.
const MARGIN: u64 = 32 << 20;
/// The most the child allocates before giving up (it is killed long before, normally).
const SACRIFICE_MAX: usize = 1 << 30;
/// How long the child may take to be ready, and to be killed.
const PATIENCE: Duration = Duration::from_secs(5);

/// Why no kill could be made.
#[derive(Debug, thiserror::Error)]
pub enum HostOomError {
    /// The sandbox is in no memory cgroup with a limit file (the root cgroup, or the memory
    /// controller is not enabled for it).
    #[error("no memory cgroup with a limit for the sandbox ({0})")]
    NoCgroup(String),
    /// A cgroup file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The child could not be started or did not behave.
    #[error("the sacrificial process: {0}")]
    Child(String),
}

/// The files of one memory cgroup that the kill uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MemoryCgroup {
    /// The limit (`memory.max`, v1 `memory.limit_in_bytes`).
    limit: PathBuf,
    /// The current use (`memory.current`, v1 `memory.usage_in_bytes`).
    usage: PathBuf,
    /// v2's swap limit (`memory.swap.max`), set to 0 while squeezing: with swap allowed the
    /// kernel would swap the guest's RAM out rather than kill the child. (v1's
    /// `memory.memsw.limit_in_bytes` cannot go below the limit it bounds: left alone.)
    swap: Option<PathBuf>,
}

/// This process's memory cgroup from `/proc/self/cgroup` text, below `mount` (normally
/// /sys/fs/cgroup): cgroup v2's `0::/path`, or a v1 `N:...memory...:/path` line.
fn memory_cgroup(proc_cgroup: &str, mount: &Path) -> Option<MemoryCgroup> {
    let v1 = proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let (dir, limit, usage, swap) = match v1 {
        Some(path) => (
            mount.join("memory").join(path.trim_start_matches('/')),
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            None,
        ),
        None => {
            let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
            (
                mount.join(path.trim_start_matches('/')),
                "memory.max",
                "memory.current",
                Some("memory.swap.max"),
            )
        }
    };
    (dir != mount && dir != mount.join("memory")).then(|| MemoryCgroup {
        limit: dir.join(limit),
        usage: dir.join(usage),
        swap: swap.map(|f| dir.join(f)),
    })
}

fn read(path: &Path) -> Result<String, HostOomError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|source| HostOomError::Io {
            path: path.to_owned(),
            source,
        })
}

fn write(path: &Path, text: &str) -> Result<(), HostOomError> {
    std::fs::write(path, text).map_err(|source| HostOomError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Makes one OOM kill in this process's host memory cgroup (see the module docs). Returns
/// once the limit is restored.
pub fn tell_host() -> Result<(), HostOomError> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroup = memory_cgroup(&text, Path::new("/sys/fs/cgroup"))
        .filter(|c| c.limit.exists())
        .ok_or_else(|| HostOomError::NoCgroup(text.lines().next().unwrap_or("").to_owned()))?;
    let old_limit = read(&cgroup.limit)?;
    // A swap limit file exists only where swap is accounted; its old value, to put back.
    let swap = cgroup
        .swap
        .as_deref()
        .and_then(|path| Some((path, read(path).ok()?)));
    let mut child = spawn_sacrifice()?;
    let old_adj = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default();
    // Without CAP_SYS_RESOURCE this fails, and the child's higher score is what protects us.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    let result = match swap {
        Some((path, _)) => write(path, "0").and_then(|()| squeeze(&cgroup, &mut child)),
        None => squeeze(&cgroup, &mut child),
    };
    let restored = write(&cgroup.limit, &old_limit);
    let restored = match swap {
        Some((path, old)) => restored.and(write(path, &old)),
        None => restored,
    };
    if !old_adj.trim().is_empty() {
        let _ = std::fs::write("/proc/self/oom_score_adj", old_adj.trim());
    }
    let _ = child.kill();
    let _ = child.wait();
    result.and(restored)
}

/// Starts the child and waits for its ready byte.
fn spawn_sacrifice() -> Result<Child, HostOomError> {
    let mut child = Command::new("/proc/self/exe")
        .arg(SACRIFICE_VERB)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| HostOomError::Child(format!("cannot start it: {e}")))?;
    let mut ready = [0u8; 1];
    let got = child
        .stdout
        .as_mut()
        .filter(|out| readable_within(&**out, PATIENCE))
        .map(|out| out.read(&mut ready));
    if !matches!(got, Some(Ok(1))) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(HostOomError::Child("it did not get ready".into()));
    }
    Ok(child)
}

/// Whether `fd` has something to read (or its end) within `patience`.
fn readable_within(fd: &impl std::os::fd::AsRawFd, patience: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = i32::try_from(patience.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut poll, 1, timeout) > 0 }
}

/// Lowers the limit to the use now plus [`MARGIN`], lets the child allocate, and waits for
/// the kernel to kill it.
fn squeeze(cgroup: &MemoryCgroup, child: &mut Child) -> Result<(), HostOomError> {
    let usage: u64 = read(&cgroup.usage)?
        .parse()
        .map_err(|_| HostOomError::Child("unreadable memory use".into()))?;
    let page = 4096;
    let limit = (usage + MARGIN).div_ceil(page) * page;
    write(&cgroup.limit, &limit.to_string())?;
    child
        .stdin
        .as_mut()
        .map(|i| i.write_all(b"g"))
        .transpose()
        .map_err(|e| HostOomError::Child(format!("cannot tell it to start: {e}")))?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.signal() == Some(libc::SIGKILL) => return Ok(()),
            Ok(Some(status)) => {
                return Err(HostOomError::Child(format!(
                    "it ended without being killed ({status})"
                )));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => return Err(HostOomError::Child("it was not killed in time".into())),
            Err(e) => return Err(HostOomError::Child(e.to_string())),
        }
    }
}

/// The child's side (`runvm oom-sacrifice`): the highest OOM score, a ready byte on stdout,
/// then, once told on stdin, memory touched a megabyte at a time until the kernel kills it.
pub fn sacrifice() -> io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", "1000")?;
    io::stdout().write_all(b"r")?;
    io::stdout().flush()?;
    let mut go = [0u8; 1];
    if io::stdin().read(&mut go)? != 1 {
        return Ok(());
    }
    let mut held: Vec<Vec<u8>> = Vec::new();
    let chunk = 1 << 20;
    while held.len() * chunk < SACRIFICE_MAX {
        // Written, so every page is really charged to the cgroup.
        held.push(vec![1u8; chunk]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cgroup_of_v2_and_v1() {
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(
            memory_cgroup("0::/docker/abc\n", mount),
            Some(MemoryCgroup {
                limit: mount.join("docker/abc/memory.max"),
                usage: mount.join("docker/abc/memory.current"),
                swap: Some(mount.join("docker/abc/memory.swap.max")),
            })
        );
        let v1 = "12:pids:/x\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(
            memory_cgroup(v1, mount),
            Some(MemoryCgroup {
                limit: mount.join("memory/docker/abc/memory.limit_in_bytes"),
                usage: mount.join("memory/docker/abc/memory.usage_in_bytes"),
                swap: None,
            })
        );
        // The root cgroup has no limit to lower.
        assert_eq!(memory_cgroup("0::/\n", mount), None);
        assert_eq!(memory_cgroup("4:memory:/\n", mount), None);
        assert_eq!(memory_cgroup("", mount), None);
    }
}
