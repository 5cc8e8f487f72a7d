//! Running out of memory as under runc: the container's memory limit, enforced by its
//! cgroup in the guest, is what ends a process that allocates too much, not the VM's size.
//!
//! - [`set_policy`]: the guest always grants allocations (`vm.overcommit_memory = 1`, as a
//!   host with far more memory than the container's limit effectively does), so a process
//!   that allocates past its limit is killed by the OOM killer when it touches the memory
//!   (exit 137), instead of seeing `malloc` fail because the VM is small. guest-init itself
//!   is never chosen (`oom_score_adj` -1000).
//! - [`Watch`]: every rise of the container cgroup's `oom_kill` count is reported to the host
//!   ([`GuestMessage::OomKilled`]) as it happens, and always before the killed process's
//!   `Exited`, so the host can tell its engine before the exit.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use guest_init::protocol::{GuestMessage, write_frame};

/// The container cgroup's event counters.
const EVENTS: &str = "/sys/fs/cgroup/container/memory.events";

/// Sets the guest's memory policy (see the module docs).
pub fn set_policy() -> io::Result<()> {
    std::fs::write("/proc/sys/vm/overcommit_memory", "1")?;
    std::fs::write("/proc/self/oom_score_adj", "-1000")
}

/// The `oom_kill` count of a `memory.events` text.
fn oom_kills(events: &str) -> u64 {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads the container's `oom_kill` count now.
fn read_count() -> u64 {
    std::fs::read_to_string(EVENTS).map_or(0, |t| oom_kills(&t))
}

/// Reports rises of the container's `oom_kill` count on the control connection.
pub struct Watch<W: io::Write + Send + 'static> {
    /// The count last reported.
    reported: Mutex<u64>,
    control: Arc<Mutex<W>>,
}

impl<W: io::Write + Send + 'static> Watch<W> {
    /// A watch writing to `control`; nothing is reported until the count rises.
    pub fn new(control: Arc<Mutex<W>>) -> Arc<Self> {
        Arc::new(Watch {
            reported: Mutex::new(read_count()),
            control,
        })
    }

    /// Sends [`GuestMessage::OomKilled`] if the count rose since the last report. Called by
    /// the watching thread and before every `Exited`, under one lock, so the report of a kill
    /// always precedes the end of the process it killed.
    pub fn report_new(&self) {
        self.report(read_count());
    }

    /// Sends [`GuestMessage::OomKilled`] if `now` is above the count last reported.
    fn report(&self, now: u64) {
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if now > *reported {
            *reported = now;
            let msg = GuestMessage::OomKilled { oom_kills: now };
            let mut w = self.control.lock().unwrap_or_else(|p| p.into_inner());
            let _ = write_frame(&mut *w, &msg);
        }
    }

    /// Starts the thread that waits for changes of `memory.events` (the kernel signals each
    /// one as POLLPRI on an open descriptor of the file) and reports rises.
    pub fn spawn(self: &Arc<Self>) -> io::Result<()> {
        let mut file = File::open(EVENTS)?;
        let watch = self.clone();
        std::thread::Builder::new()
            .name("oom-watch".into())
            .spawn(move || {
                let mut text = String::new();
                loop {
                    // This read is the count, and it arms the notification for the next change.
                    text.clear();
                    if file.seek(SeekFrom::Start(0)).is_err()
                        || file.read_to_string(&mut text).is_err()
                    {
                        return;
                    }
                    watch.report(oom_kills(&text));
                    let mut pfd = libc::pollfd {
                        fd: file.as_raw_fd(),
                        events: libc::POLLPRI,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
                    if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        return;
                    }
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_count_is_read_from_memory_events() {
        let text = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kills(text), 2);
        assert_eq!(oom_kills("low 0\n"), 0);
        assert_eq!(oom_kills("oom_kill x\n"), 0);
    }
}
