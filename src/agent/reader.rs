//! The agent's reader thread: every frame from guest-init passes here. A process's end is
//! recorded for the process's waiter, if the host started that process; anything else is
//! handed on as the answer to the request in flight. When the connection ends, waiters and
//! the requester learn why.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use guest_init::protocol::{GuestMessage, read_frame};

use super::AgentError;

/// Answers the reader may hold before the guest's next frame waits: one request is in
/// flight at a time, so more is a guest talking out of turn.
const ANSWER_BACKLOG: usize = 4;
/// The most processes whose end the host waits for at once.
const MAX_WAITED: usize = 4096;
/// How long the reader waits for the OOM hook before it handles the next frame.
const OOM_HOOK_PATIENCE: Duration = Duration::from_secs(10);
/// The least time between two runs of the OOM hook: each makes a real OOM kill on the host,
/// and a guest must not be able to make them at will.
const OOM_HOOK_INTERVAL: Duration = Duration::from_secs(1);
/// The most runs of the OOM hook over a sandbox's life: the engines need to see that kills
/// happened, and a guest reporting rising counts forever must not cost the host a process
/// and a cgroup squeeze every second.
const OOM_HOOK_BUDGET: u32 = 16;

/// `(code, signal)` of an ended process.
pub type End = (Option<i32>, Option<i32>);

/// What the reader calls when the guest reports that the kernel killed a process for the
/// container's memory limit (the container's `oom_kill` count so far). It runs on the reader
/// thread, before any later frame (the killed process's end) is handled.
pub type OomHook = Box<dyn Fn(u64) + Send + Sync>;

/// The ends of the processes the host waits for.
#[derive(Default)]
pub struct Exits {
    state: Mutex<ExitState>,
    changed: Condvar,
    oom_hook: Mutex<Option<OomHook>>,
    oom_seen: Mutex<OomSeen>,
}

/// What the guest reported of OOM kills, and the hook's runs so far.
#[derive(Default)]
struct OomSeen {
    /// The highest count reported.
    count: u64,
    /// When the hook last ran.
    last_run: Option<std::time::Instant>,
    /// How many times it ran.
    runs: u32,
}

impl OomSeen {
    /// Records a report of `oom_kills` at `now`; true when the hook should run for it: the
    /// count rose, the last run is [`OOM_HOOK_INTERVAL`] old, and the budget is not spent.
    fn admit(&mut self, oom_kills: u64, now: std::time::Instant) -> bool {
        let rose = oom_kills > self.count;
        self.count = self.count.max(oom_kills);
        let rested = self
            .last_run
            .is_none_or(|t| now.duration_since(t) >= OOM_HOOK_INTERVAL);
        if !rose || !rested || self.runs >= OOM_HOOK_BUDGET {
            return false;
        }
        self.last_run = Some(now);
        self.runs += 1;
        true
    }
}

#[derive(Default)]
struct ExitState {
    /// Processes the host started, and their end once known.
    waited: HashMap<u32, Option<End>>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

impl Exits {
    fn lock(&self) -> MutexGuard<'_, ExitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for the end of `process`, about to be started.
    pub fn expect(&self, process: u32) -> Result<(), AgentError> {
        let mut state = self.lock();
        if state.waited.contains_key(&process) {
            return Err(AgentError::Protocol(format!(
                "process {process} is already running"
            )));
        }
        if state.waited.len() >= MAX_WAITED {
            return Err(AgentError::Protocol(format!(
                "more than {MAX_WAITED} processes"
            )));
        }
        state.waited.insert(process, None);
        Ok(())
    }

    /// Stops waiting for `process` (it did not start).
    pub fn forget(&self, process: u32) {
        self.lock().waited.remove(&process);
    }

    /// The end of `process`, waiting up to `timeout` for it: `Ok(None)` if it still runs.
    pub fn wait(&self, process: u32, timeout: Duration) -> Result<Option<End>, AgentError> {
        let mut state = self.lock();
        for _ in 0..2 {
            if let Some(Some(end)) = state.waited.get(&process) {
                let end = *end;
                state.waited.remove(&process);
                return Ok(Some(end));
            }
            if let Some(why) = &state.closed {
                return Err(AgentError::Protocol(why.clone()));
            }
            if !state.waited.contains_key(&process) {
                return Err(AgentError::Protocol(format!(
                    "process {process} was not started"
                )));
            }
            state = self
                .changed
                .wait_timeout(state, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(None)
    }

    /// Why the connection ended ("connection closed" if it has not).
    pub fn closed(&self) -> String {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| "connection closed".into())
    }

    /// Sets what runs when the guest reports an OOM kill (replacing any earlier hook).
    pub fn on_oom(&self, hook: OomHook) {
        *self.oom_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Runs the hook on a thread of its own and waits for it, at most [`OOM_HOOK_PATIENCE`]:
    /// a hook that hangs must not stop the reader.
    /// Reports that do not raise the count, come within [`OOM_HOOK_INTERVAL`] of the last
    /// run or past [`OOM_HOOK_BUDGET`] runs are passed over: the engines need to see a kill,
    /// not each one.
    fn oom_killed(self: &std::sync::Arc<Self>, oom_kills: u64) {
        let admitted = self
            .oom_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(oom_kills, std::time::Instant::now());
        if !admitted {
            return;
        }
        let (done, finished) = sync_channel::<()>(1);
        let exits = self.clone();
        let spawned = std::thread::Builder::new()
            .name("oom-hook".into())
            .spawn(move || {
                if let Some(hook) = &*exits.oom_hook.lock().unwrap_or_else(|p| p.into_inner()) {
                    hook(oom_kills);
                }
                let _ = done.send(());
            });
        if spawned.is_ok() {
            let _ = finished.recv_timeout(OOM_HOOK_PATIENCE);
        }
    }

    fn ended(&self, process: u32, end: End) {
        let mut state = self.lock();
        // The end of a process the host did not start is passed over.
        if let Some(slot) = state.waited.get_mut(&process) {
            *slot = Some(end);
            self.changed.notify_all();
        }
    }

    fn close(&self, why: String) {
        self.lock().closed = Some(why);
        self.changed.notify_all();
    }
}

/// Starts the reader on `stream`; returns where the answers arrive.
pub fn spawn(
    stream: UnixStream,
    exits: std::sync::Arc<Exits>,
) -> std::io::Result<Receiver<GuestMessage>> {
    let (tx, rx) = sync_channel(ANSWER_BACKLOG);
    std::thread::Builder::new()
        .name("agent-reader".into())
        .spawn(move || read_all(stream, &exits, &tx))?;
    Ok(rx)
}

fn read_all(stream: UnixStream, exits: &std::sync::Arc<Exits>, answers: &SyncSender<GuestMessage>) {
    let why = loop {
        match read_frame::<_, GuestMessage>(&mut &stream) {
            Ok(Some(GuestMessage::Exited {
                process,
                code,
                signal,
            })) => exits.ended(process, (code, signal)),
            Ok(Some(GuestMessage::OomKilled { oom_kills })) => exits.oom_killed(oom_kills),
            Ok(Some(answer)) => {
                if answers.send(answer).is_err() {
                    break "the agent is gone".to_owned();
                }
            }
            Ok(None) => break "connection closed".to_owned(),
            Err(e) => break e.to_string(),
        }
    };
    exits.close(why);
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_init::protocol::write_frame;
    use std::sync::Arc;

    #[test]
    fn ends_go_to_their_waiters_and_answers_to_the_requester() {
        let (host, guest) = UnixStream::pair().unwrap();
        let exits = Arc::new(Exits::default());
        exits.expect(7).unwrap();
        let answers = spawn(host, exits.clone()).unwrap();
        let exited = |process, code| GuestMessage::Exited {
            process,
            code: Some(code),
            signal: None,
        };
        // The end of a process nobody started is dropped, not stored.
        write_frame(&mut &guest, &exited(99, 1)).unwrap();
        write_frame(&mut &guest, &GuestMessage::Pong).unwrap();
        write_frame(&mut &guest, &exited(7, 3)).unwrap();
        assert_eq!(
            answers.recv_timeout(Duration::from_secs(5)).unwrap(),
            GuestMessage::Pong
        );
        let end = loop {
            if let Some(end) = exits.wait(7, Duration::from_millis(100)).unwrap() {
                break end;
            }
        };
        assert_eq!(end, (Some(3), None));
        assert!(exits.lock().waited.is_empty());
        assert!(
            exits.expect(7).is_ok(),
            "an ended process's number is free again"
        );

        drop(guest);
        let err = loop {
            match exits.wait(7, Duration::from_millis(100)) {
                Ok(None) => continue,
                Ok(Some(end)) => panic!("no end was sent: {end:?}"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("connection closed"), "{err}");
        assert!(answers.recv_timeout(Duration::from_secs(5)).is_err());
    }

    #[test]
    fn an_oom_report_runs_the_hook_before_the_end_that_follows() {
        let (host, guest) = UnixStream::pair().unwrap();
        let exits = Arc::new(Exits::default());
        exits.expect(0).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let probe = exits.clone();
        exits.on_oom(Box::new(move |n| {
            // The end sent after the report is not recorded yet.
            let ended = matches!(probe.lock().waited.get(&0), Some(Some(_)));
            log.lock().unwrap().push((n, ended));
        }));
        let _answers = spawn(host, exits.clone()).unwrap();
        write_frame(&mut &guest, &GuestMessage::OomKilled { oom_kills: 2 }).unwrap();
        write_frame(
            &mut &guest,
            &GuestMessage::Exited {
                process: 0,
                code: None,
                signal: Some(9),
            },
        )
        .unwrap();
        let end = loop {
            if let Some(end) = exits.wait(0, Duration::from_millis(100)).unwrap() {
                break end;
            }
        };
        assert_eq!(end, (None, Some(9)));
        assert_eq!(*seen.lock().unwrap(), vec![(2, false)]);
    }

    #[test]
    fn oom_reports_that_do_not_rise_or_come_too_fast_are_passed_over() {
        let exits = Arc::new(Exits::default());
        let runs = Arc::new(Mutex::new(Vec::new()));
        let log = runs.clone();
        exits.on_oom(Box::new(move |n| log.lock().unwrap().push(n)));
        for n in [1, 1, 0, 2, 3] {
            exits.oom_killed(n);
        }
        assert_eq!(*runs.lock().unwrap(), vec![1]);
    }

    #[test]
    fn the_oom_hook_runs_at_most_its_budget() {
        let mut seen = OomSeen::default();
        let start = std::time::Instant::now();
        let admitted = (1..=OOM_HOOK_BUDGET as u64 + 5)
            .filter(|&n| seen.admit(n, start + OOM_HOOK_INTERVAL * n as u32))
            .count();
        assert_eq!(admitted, OOM_HOOK_BUDGET as usize);
        // A rising count within the interval is passed over, but remembered.
        let mut seen = OomSeen::default();
        assert!(seen.admit(1, start));
        assert!(!seen.admit(5, start));
        assert!(!seen.admit(5, start + OOM_HOOK_INTERVAL));
        assert!(seen.admit(6, start + OOM_HOOK_INTERVAL));
    }

    #[test]
    fn waiting_for_a_process_never_started_fails() {
        let exits = Exits::default();
        assert!(exits.wait(1, Duration::from_millis(1)).is_err());
        exits.expect(1).unwrap();
        assert!(exits.expect(1).is_err());
        assert!(matches!(exits.wait(1, Duration::from_millis(1)), Ok(None)));
        exits.forget(1);
        assert!(exits.wait(1, Duration::from_millis(1)).is_err());
    }
}
