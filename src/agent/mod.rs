//! The host side of the control protocol with guest-init: wait for the guest to connect and
//! say hello, then send requests and read answers, each bounded in time. A VM that stops
//! while we wait is reported with the last lines its console printed.
//!
//! One reader thread takes every frame the guest sends: a process's end goes to whoever
//! waits for that process ([`Agent::wait_exit`]), anything else is the answer to the one
//! request in flight (requests are serialised). Only ends of processes the host started are
//! kept, so a hostile guest cannot grow the host's memory.

mod reader;

use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reader::Exits;
pub use reader::OomHook;

use guest_init::protocol::{
    CONTROL_PORT, ExecSpec, GuestMessage, HostMessage, MAX_COMMAND, MAX_PROCESS_LIST,
    MAX_STAT_KEYS, NetSpec, PROTOCOL_VERSION, ProcessInfo, Resources, Stats, Touch, read_frame,
    write_frame,
};

use crate::vmm::vcpu::StopReason;
use crate::vmm::vm::MicroVm;

/// Errors talking to guest-init.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The guest did not connect or answer in time.
    #[error("the guest did not {what} within {secs} s{console}")]
    Timeout {
        /// What we waited for.
        what: &'static str,
        /// How long.
        secs: u64,
        /// The console's last lines, formatted for the message.
        console: String,
    },
    /// The VM stopped while we waited.
    #[error("the VM stopped ({reason}) before the guest {what}{console}")]
    VmStopped {
        /// How it stopped.
        reason: String,
        /// What we waited for.
        what: &'static str,
        /// The console's last lines, formatted for the message.
        console: String,
    },
    /// The guest broke the protocol.
    #[error("guest-init broke the protocol: {0}")]
    Protocol(String),
    /// guest-init could not do what was asked.
    #[error("guest-init: {0}")]
    Guest(String),
    /// A host-side socket failed.
    #[error("vsock: {0}")]
    Io(#[from] std::io::Error),
}

/// What the guest said in its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Its protocol version.
    pub protocol: u32,
    /// `uname -r` in the guest.
    pub kernel_release: String,
    /// Guest boot time when guest-init started.
    pub boottime_at_init: Duration,
    /// CPUs online in the guest.
    pub online_cpus: u32,
}

/// Called before each signal is sent into the guest (from the sending thread).
pub type SignalHook = Arc<dyn Fn() + Send + Sync>;

/// Sends signals and window sizes to one of the guest's processes (the guest does not
/// answer them).
#[derive(Clone)]
pub struct Signaller {
    writer: Arc<Mutex<UnixStream>>,
    process: u32,
    hook: Option<SignalHook>,
}

impl Signaller {
    /// Forwards `signal`; fails only if the connection is gone.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        self.send(signal, false)
    }

    /// Sends `signal` to every process of the container (`runvm kill --all`).
    pub fn signal_all(&self, signal: i32) -> std::io::Result<()> {
        self.send(signal, true)
    }

    /// Sets the window size of the process's terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.write(&HostMessage::Resize {
            process: self.process,
            rows,
            cols,
        })
    }

    fn send(&self, signal: i32, all: bool) -> std::io::Result<()> {
        if let Some(hook) = &self.hook {
            hook();
        }
        self.write(&HostMessage::Signal {
            process: self.process,
            signal,
            all,
        })
    }

    fn write(&self, msg: &HostMessage) -> std::io::Result<()> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut &*w, msg)
    }
}

/// A connected guest-init.
pub struct Agent {
    /// The write half, shared with [`Signaller`]s so frames never interleave.
    writer: Arc<Mutex<UnixStream>>,
    /// Answers, in order; holding the lock is having the one request in flight.
    answers: Mutex<Receiver<GuestMessage>>,
    exits: Arc<Exits>,
    hello: Hello,
    /// Run before every signal sent ([`Agent::on_signal`]).
    signal_hook: Mutex<Option<SignalHook>>,
}

/// The most characters of guest-supplied text a message carries.
const MAX_GUEST_TEXT: usize = 512;

/// Guest-supplied text made safe for a one-line message: control characters (newlines,
/// escape sequences) become spaces and the length is bounded.
fn guest_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_GUEST_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_GUEST_TEXT).is_some() {
        out.push_str("...");
    }
    out
}

/// A protocol error for an answer that is not the one expected; the guest's message is
/// shown bounded.
fn unexpected(expected: &str, got: &GuestMessage) -> AgentError {
    AgentError::Protocol(guest_text(&format!("expected {expected}, got {got:?}")))
}

/// What the console says about the guest's end, as a message suffix: the kernel's panic line
/// if there is one, else the last lines.
fn console_suffix(vm: &MicroVm) -> String {
    if let Some(panic) = vm.console().panic_line() {
        return format!(": {}", guest_text(&panic));
    }
    let lines = vm.console().last_lines(8);
    if lines.is_empty() {
        String::from(" (the guest console printed nothing)")
    } else {
        let lines: Vec<String> = lines.iter().map(|l| guest_text(l)).collect();
        format!("; last console lines: {}", lines.join(" | "))
    }
}

fn stop_reason_text(reason: &StopReason) -> String {
    match reason {
        StopReason::Error(e) => e.clone(),
        StopReason::TripleFault(regs) if !regs.is_empty() => format!("triple fault, {regs}"),
        r => r.name().replace('_', " "),
    }
}

impl AgentError {
    /// The VM stopped for `reason` while the host waited for the guest to do `what`; the
    /// message carries the kernel's panic line or the console's last lines.
    pub fn vm_stopped(vm: &MicroVm, reason: &StopReason, what: &'static str) -> AgentError {
        AgentError::VmStopped {
            reason: stop_reason_text(reason),
            what,
            console: console_suffix(vm),
        }
    }
}

impl Agent {
    /// Waits up to `timeout` for guest-init to connect to the control port and say hello.
    pub fn accept(vm: &MicroVm, timeout: Duration) -> Result<Agent, AgentError> {
        let listener = vm.vsock().listen(CONTROL_PORT)?;
        let deadline = Instant::now() + timeout;
        let stream = loop {
            if let Some(s) = listener.accept_timeout(Duration::from_millis(50))? {
                break s;
            }
            if let Some(reason) = vm.wait_stop(Duration::ZERO) {
                return Err(AgentError::vm_stopped(vm, &reason, "connected"));
            }
            if Instant::now() >= deadline {
                return Err(AgentError::Timeout {
                    what: "connect over vsock",
                    secs: timeout.as_secs(),
                    console: console_suffix(vm),
                });
            }
        };
        stream.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))?;
        let first: Option<GuestMessage> = read_frame(&mut &stream).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => AgentError::Timeout {
                what: "say hello",
                secs: timeout.as_secs(),
                console: console_suffix(vm),
            },
            _ => AgentError::Protocol(e.to_string()),
        })?;
        let hello = match first {
            Some(GuestMessage::Hello {
                protocol,
                kernel_release,
                boottime_at_init_ns,
                online_cpus,
            }) => Hello {
                protocol,
                kernel_release,
                boottime_at_init: Duration::from_nanos(boottime_at_init_ns),
                online_cpus,
            },
            Some(other) => {
                return Err(unexpected("hello", &other));
            }
            None => {
                return Err(AgentError::Protocol(
                    "connection closed before hello".into(),
                ));
            }
        };
        if hello.protocol != PROTOCOL_VERSION {
            return Err(AgentError::Protocol(format!(
                "guest speaks protocol {}, runvm speaks {PROTOCOL_VERSION}",
                hello.protocol
            )));
        }
        stream.set_read_timeout(None)?;
        let writer = Arc::new(Mutex::new(stream.try_clone()?));
        let exits = Arc::new(Exits::default());
        let answers = reader::spawn(stream, exits.clone())?;
        Ok(Agent {
            writer,
            answers: Mutex::new(answers),
            exits,
            hello,
            signal_hook: Mutex::new(None),
        })
    }

    /// The guest's hello.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Sends `msg` and reads the answer within `timeout`.
    fn request(&self, msg: &HostMessage, timeout: Duration) -> Result<GuestMessage, AgentError> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        // An answer that came after its request timed out must not answer this one.
        while answers.try_recv().is_ok() {}
        self.send(msg)?;
        match answers.recv_timeout(timeout) {
            Ok(GuestMessage::Error { message }) => Err(AgentError::Guest(guest_text(&message))),
            Ok(answer) => Ok(answer),
            Err(RecvTimeoutError::Timeout) => Err(AgentError::Timeout {
                what: "answer",
                secs: timeout.as_secs(),
                console: String::new(),
            }),
            Err(RecvTimeoutError::Disconnected) => Err(AgentError::Protocol(self.exits.closed())),
        }
    }

    /// Round trip: ping, expect pong.
    pub fn ping(&self, timeout: Duration) -> Result<(), AgentError> {
        match self.request(&HostMessage::Ping, timeout)? {
            GuestMessage::Pong => Ok(()),
            other => Err(unexpected("pong", &other)),
        }
    }

    fn send(&self, msg: &HostMessage) -> Result<(), AgentError> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut &*w, msg)?;
        Ok(())
    }

    /// Starts the process of `spec` in the guest; `Ok(pid)`, or the guest's reason (runc's
    /// words) in [`AgentError::Guest`]. Its end is kept for [`Agent::wait_exit`].
    pub fn exec(&self, spec: ExecSpec, timeout: Duration) -> Result<i32, AgentError> {
        let process = spec.process;
        self.exits.expect(process)?;
        let answer = self.request(&HostMessage::Exec(Box::new(spec)), timeout);
        let result = match answer {
            Ok(GuestMessage::Started { pid }) => Ok(pid),
            Ok(GuestMessage::ExecFailed { message }) => {
                Err(AgentError::Guest(guest_text(&message)))
            }
            Ok(other) => Err(unexpected("started", &other)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.exits.forget(process);
        }
        result
    }

    /// Waits for process `process` to end: `(code, signal)`; every second `vm_alive` is
    /// asked whether to keep waiting.
    pub fn wait_exit(
        &self,
        process: u32,
        mut vm_alive: impl FnMut() -> Result<(), AgentError>,
    ) -> Result<(Option<i32>, Option<i32>), AgentError> {
        loop {
            if let Some(end) = self.exits.wait(process, Duration::from_secs(1))? {
                return Ok(end);
            }
            vm_alive()?;
        }
    }

    /// Lets process `process`, started held ([`ExecSpec::hold`]), exec its program.
    pub fn release(&self, process: u32, timeout: Duration) -> Result<(), AgentError> {
        self.request_done(&HostMessage::Release { process }, timeout)
    }

    /// Sets what runs when the guest reports that the kernel killed a process for the
    /// container's memory limit; it runs before that process's end is seen by its waiter.
    pub fn on_oom(&self, hook: OomHook) {
        self.exits.on_oom(hook);
    }

    /// A handle that sends signals to process `process` from another thread.
    pub fn signaller(&self, process: u32) -> Signaller {
        Signaller {
            writer: self.writer.clone(),
            process,
            hook: self
                .signal_hook
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Runs `hook` before every signal the signallers made from now on send (the sandbox
    /// ends the guest's lock waits then: a signalled process must not stay stuck in one).
    pub fn on_signal(&self, hook: SignalHook) {
        *self.signal_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Sends a request whose success is [`GuestMessage::Done`].
    fn request_done(&self, msg: &HostMessage, timeout: Duration) -> Result<(), AgentError> {
        match self.request(msg, timeout)? {
            GuestMessage::Done => Ok(()),
            other => Err(unexpected("done", &other)),
        }
    }

    /// Has guest-init repeat a host edit (paths beneath the share's mount point `root`)
    /// through the guest's file system calls.
    pub fn touch(&self, root: &str, touch: Touch, timeout: Duration) -> Result<(), AgentError> {
        let msg = HostMessage::Touch {
            root: root.to_owned(),
            touch,
        };
        match self.request(&msg, timeout)? {
            GuestMessage::Touched => Ok(()),
            other => Err(unexpected("touched", &other)),
        }
    }

    /// Mounts the VM's virtio-fs share `tag` at `target` in the guest.
    pub fn mount_share(
        &self,
        tag: &str,
        target: &str,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        let msg = HostMessage::MountShare {
            tag: tag.to_owned(),
            target: target.to_owned(),
        };
        self.request_done(&msg, timeout)
    }

    /// Changes the limits of the container's cgroup in the guest (`runvm update`).
    pub fn update(&self, resources: Resources, timeout: Duration) -> Result<(), AgentError> {
        self.request_done(&HostMessage::Update(resources), timeout)
    }

    /// Makes the guest's network match `spec` (its NICs' names, addresses, routes).
    pub fn network(&self, spec: NetSpec, timeout: Duration) -> Result<(), AgentError> {
        self.request_done(&HostMessage::Network(Box::new(spec)), timeout)
    }

    /// The container's resource use (`runvm events`).
    pub fn stats(&self, timeout: Duration) -> Result<Stats, AgentError> {
        match self.request(&HostMessage::Stats, timeout)? {
            GuestMessage::Stats(stats) if stats.memory_stat.len() <= MAX_STAT_KEYS => Ok(*stats),
            other => Err(unexpected("stats", &other)),
        }
    }

    /// The container's processes (checked: at most [`MAX_PROCESS_LIST`], each command at
    /// most [`MAX_COMMAND`] bytes).
    pub fn processes(&self, timeout: Duration) -> Result<Vec<ProcessInfo>, AgentError> {
        match self.request(&HostMessage::ListProcesses, timeout)? {
            GuestMessage::Processes { processes }
                if processes.len() <= MAX_PROCESS_LIST
                    && processes.iter().all(|p| p.command.len() <= MAX_COMMAND) =>
            {
                Ok(processes)
            }
            other => Err(unexpected("processes", &other)),
        }
    }

    /// Reads a guest file's text (at most 64 KiB).
    pub fn read_file(&self, path: &str, timeout: Duration) -> Result<String, AgentError> {
        let msg = HostMessage::ReadFile {
            path: path.to_owned(),
        };
        match self.request(&msg, timeout)? {
            GuestMessage::File { text } => Ok(text),
            other => Err(unexpected("file", &other)),
        }
    }

    /// Writes a guest file.
    pub fn write_file(&self, path: &str, text: &str, timeout: Duration) -> Result<(), AgentError> {
        let msg = HostMessage::WriteFile {
            path: path.to_owned(),
            text: text.to_owned(),
        };
        self.request_done(&msg, timeout)
    }

    /// Tells the guest to power off and waits for its acknowledgement, then closes the
    /// connection: guest-init waits for that close before it
    /// restarts the VM, so its acknowledgement cannot be lost in the restart.
    pub fn power_off(&self, timeout: Duration) -> Result<(), AgentError> {
        let answer = self.request(&HostMessage::PowerOff, timeout);
        self.close();
        match answer? {
            GuestMessage::PoweringOff => Ok(()),
            other => Err(unexpected("powering_off", &other)),
        }
    }

    /// Closes the connection both ways: the guest sees the close, the reader thread ends.
    fn close(&self) {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_one_bounded_line() {
        assert_eq!(
            guest_text("exec: \"x\": bad\n\x1b[2Jcleared\r"),
            "exec: \"x\": bad  [2Jcleared "
        );
        let long = "a".repeat(MAX_GUEST_TEXT + 10);
        let t = guest_text(&long);
        assert_eq!(t.len(), MAX_GUEST_TEXT + 3);
        assert!(t.ends_with("..."));
        assert_eq!(guest_text("short"), "short");
    }
}
