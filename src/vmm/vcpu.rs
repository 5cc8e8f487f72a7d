//! One thread per vCPU, each an explicit state machine: `Running` until the guest stops the
//! VM (reset line, triple fault, a KVM system event) or the VMM asks it to stop, then
//! `Exited` with the reason sent to the VM's controller.
//!
//! To stop a vCPU that sits in KVM_RUN, the controller sets the shared stop flag and sends
//! the thread a real-time signal whose handler does nothing: KVM_RUN returns EINTR and the
//! loop sees the flag. The signal is resent until the thread has exited, so a signal that
//! lands just before KVM_RUN is entered is not lost. Pausing works the same way: the loop
//! waits at the VM's pause gate between two KVM_RUNs (`pause`).

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use super::bus::{Bus, BusAction};
use super::pause::Gate;

/// Why the VM stopped, as one vCPU saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest pulsed the i8042 reset line (how runvm guests power off).
    Reset,
    /// KVM reported a shutdown system event.
    PowerOff,
    /// A triple fault (KVM_EXIT_SHUTDOWN), with the vCPU's registers at that moment.
    TripleFault(String),
    /// The VMM asked the vCPU to stop.
    Stopped,
    /// KVM failed, or the guest did something KVM could not run.
    Error(String),
}

impl StopReason {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::Reset => "reset",
            StopReason::PowerOff => "power_off",
            StopReason::TripleFault(_) => "triple_fault",
            StopReason::Stopped => "stopped",
            StopReason::Error(_) => "error",
        }
    }
}

/// The state of a vCPU thread.
enum State {
    Running,
    Exited(StopReason),
}

/// What a vCPU thread tells the VM's controller.
#[derive(Debug)]
pub struct VcpuExited {
    /// Which vCPU.
    pub index: u8,
    /// Why.
    pub reason: StopReason,
}

/// When vCPU 0 first entered the guest.
pub type FirstEntry = Arc<OnceLock<Instant>>;

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The kick signal: SIGRTMIN, with an empty handler installed once per process.
pub(crate) fn kick_signal() -> libc::c_int {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // A failure leaves the default action (terminate) in place; stopping then kills the
        // process, which is loud rather than a hang.
        let _ = register_signal_handler(SIGRTMIN(), on_kick);
    });
    SIGRTMIN()
}

/// A running vCPU thread.
pub struct VcpuThread {
    handle: JoinHandle<()>,
}

impl VcpuThread {
    /// Starts vCPU `index` on its own thread.
    pub fn spawn(
        index: u8,
        fd: VcpuFd,
        bus: Arc<Bus>,
        stop: Arc<AtomicBool>,
        gate: Arc<Gate>,
        first_entry: FirstEntry,
        exited: Sender<VcpuExited>,
    ) -> std::io::Result<Self> {
        kick_signal();
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                gate.register(index.into());
                let reason = run(index, fd, &bus, &stop, &gate, &first_entry);
                gate.unregister(index.into());
                let _ = exited.send(VcpuExited { index, reason });
            })?;
        Ok(VcpuThread { handle })
    }

    /// Kicks the thread out of KVM_RUN until it exits (at most `limit`), then joins it.
    /// Returns false if it did not exit in time (it is then left detached).
    pub fn stop_and_join(self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let signal = kick_signal();
        while !self.handle.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            // SAFETY: the pthread handle is valid: the thread is not joined yet (we own the
            // JoinHandle), and a no-op signal handler is installed for this signal.
            unsafe { libc::pthread_kill(self.handle.as_pthread_t(), signal) };
            std::thread::sleep(Duration::from_millis(2));
        }
        self.handle.join().is_ok()
    }
}

fn run(
    index: u8,
    mut fd: VcpuFd,
    bus: &Bus,
    stop: &AtomicBool,
    gate: &Gate,
    first_entry: &FirstEntry,
) -> StopReason {
    let mut state = State::Running;
    while let State::Running = state {
        gate.checkpoint(stop);
        if stop.load(Ordering::SeqCst) {
            state = State::Exited(StopReason::Stopped);
            continue;
        }
        if index == 0 {
            first_entry.get_or_init(Instant::now);
        }
        state = match fd.run() {
            Ok(exit) => handle_exit(exit, bus),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => State::Running,
            Err(e) => State::Exited(StopReason::Error(format!(
                "KVM_RUN failed on vCPU {index}: {e}"
            ))),
        };
    }
    match state {
        State::Exited(StopReason::TripleFault(_)) => StopReason::TripleFault(registers(&fd)),
        State::Exited(reason) => reason,
        State::Running => StopReason::Stopped,
    }
}

/// The registers that tell where and in what mode a vCPU was, as one line for reports; empty
/// when KVM already reset the vCPU (AMD SVM clears its state on a shutdown exit).
fn registers(fd: &VcpuFd) -> String {
    match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) if r.rip == 0xfff0 && s.cs.base == 0xffff_0000 => String::new(),
        (Ok(r), Ok(s)) => format!(
            "rip={:#x} rsp={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} \
             idt={:#x}/{:#x} gdt={:#x}/{:#x} cs={:#x}",
            r.rip,
            r.rsp,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.idt.base,
            s.idt.limit,
            s.gdt.base,
            s.gdt.limit,
            s.cs.selector
        ),
        (Err(e), _) | (_, Err(e)) => format!("registers unreadable: {e}"),
    }
}

fn handle_exit(exit: VcpuExit<'_>, bus: &Bus) -> State {
    match exit {
        VcpuExit::IoIn(port, data) => bus.pio_read(port, data),
        VcpuExit::IoOut(port, data) => {
            if bus.pio_write(port, data) == BusAction::Reset {
                return State::Exited(StopReason::Reset);
            }
        }
        VcpuExit::MmioRead(addr, data) => bus.mmio_read(addr, data),
        VcpuExit::MmioWrite(addr, data) => bus.mmio_write(addr, data),
        VcpuExit::Shutdown => {
            bus.stats.count_other();
            return State::Exited(StopReason::TripleFault(String::new()));
        }
        VcpuExit::SystemEvent(kind, _) => {
            bus.stats.count_other();
            return State::Exited(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => StopReason::PowerOff,
                KVM_SYSTEM_EVENT_RESET => StopReason::Reset,
                other => StopReason::Error(format!("unexpected KVM system event {other}")),
            });
        }
        VcpuExit::Hlt => {
            // With the in-kernel irqchip HLT does not exit; if it does, the guest is done.
            bus.stats.count_other();
            return State::Exited(StopReason::PowerOff);
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return State::Exited(StopReason::Error(format!(
                "KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
            )));
        }
        VcpuExit::InternalError => {
            return State::Exited(StopReason::Error(
                "KVM internal error (an instruction KVM cannot emulate)".into(),
            ));
        }
        other => {
            bus.stats.count_other();
            return State::Exited(StopReason::Error(format!("unexpected vCPU exit {other:?}")));
        }
    }
    State::Running
}
