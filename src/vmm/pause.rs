//! Pausing a VM's vCPUs (`runvm pause`): a gate every vCPU thread passes between two
//! KVM_RUNs. [`Gate::pause`] closes it and kicks each vCPU out of KVM_RUN with the kick
//! signal until all of them wait at the gate; [`Gate::resume`] opens it. Stopping the VM
//! opens it too ([`Gate::wake`]), so a paused VM can always be shut down. Guest memory and
//! devices stay as they are; the guest's clock jumps when it resumes, as after a host
//! suspend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a pause failed, one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    /// No vCPU runs any more.
    #[error("the VM is not running")]
    NotRunning,
    /// Some vCPU did not reach the gate in time (the gate is opened again).
    #[error("the vCPUs did not pause within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Default)]
struct Inner {
    /// vCPU threads waiting at the gate.
    parked: usize,
    /// The live vCPU threads, by index (None once exited): kicked only while registered,
    /// so a thread that has ended is never signalled.
    threads: Vec<Option<libc::pthread_t>>,
}

/// The pause gate of one VM.
#[derive(Debug, Default)]
pub struct Gate {
    /// Closed: written only with `inner` locked, read without it first so that the vCPU
    /// loop takes no lock while the VM runs.
    paused: AtomicBool,
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by vCPU thread `index` when it starts.
    pub fn register(&self, index: usize) {
        let mut inner = self.lock();
        if inner.threads.len() <= index {
            inner.threads.resize(index + 1, None);
        }
        // SAFETY: pthread_self has no preconditions.
        inner.threads[index] = Some(unsafe { libc::pthread_self() });
    }

    /// Called by vCPU thread `index` as it ends.
    pub fn unregister(&self, index: usize) {
        let mut inner = self.lock();
        if let Some(t) = inner.threads.get_mut(index) {
            *t = None;
        }
        self.changed.notify_all();
    }

    /// Where a vCPU thread waits while the VM is paused (returns at once otherwise, or when
    /// `stop` is set).
    pub fn checkpoint(&self, stop: &AtomicBool) {
        if !self.paused.load(Ordering::SeqCst) {
            return;
        }
        let mut inner = self.lock();
        if !self.paused.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
            return;
        }
        inner.parked += 1;
        self.changed.notify_all();
        while self.paused.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            inner = self.changed.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
        inner.parked -= 1;
    }

    /// Pauses every vCPU: returns once all wait at the gate, kicking them out of KVM_RUN
    /// with `kick` meanwhile. On failure the gate is open again.
    pub fn pause(&self, kick: libc::c_int, limit: Duration) -> Result<(), PauseError> {
        let deadline = Instant::now() + limit;
        let mut inner = self.lock();
        self.paused.store(true, Ordering::SeqCst);
        loop {
            let live: Vec<libc::pthread_t> = inner.threads.iter().flatten().copied().collect();
            if live.is_empty() {
                self.paused.store(false, Ordering::SeqCst);
                return Err(PauseError::NotRunning);
            }
            if inner.parked >= live.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.paused.store(false, Ordering::SeqCst);
                self.changed.notify_all();
                return Err(PauseError::Timeout(limit));
            }
            for t in live {
                // SAFETY: `t` is a registered thread, which unregisters (under this lock,
                // held here) before it ends; the kick signal's handler does nothing.
                unsafe { libc::pthread_kill(t, kick) };
            }
            inner = self
                .changed
                .wait_timeout(inner, Duration::from_millis(2))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) {
        let _guard = self.lock();
        self.paused.store(false, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Wakes every waiting vCPU so that it sees the stop flag.
    pub fn wake(&self) {
        let _guard = self.lock();
        self.changed.notify_all();
    }

    /// Whether the gate is closed.
    #[cfg(test)]
    fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::vmm::vcpu::kick_signal;

    /// Threads that loop like vCPUs (sleeping stands in for KVM_RUN), counting rounds.
    fn spinners(gate: &Arc<Gate>, stop: &Arc<AtomicBool>, n: usize) -> Vec<Arc<AtomicU64>> {
        (0..n)
            .map(|i| {
                let (gate, stop) = (gate.clone(), stop.clone());
                let rounds = Arc::new(AtomicU64::new(0));
                let r = rounds.clone();
                std::thread::spawn(move || {
                    gate.register(i);
                    while !stop.load(Ordering::SeqCst) {
                        gate.checkpoint(&stop);
                        r.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    gate.unregister(i);
                });
                rounds
            })
            .collect()
    }

    #[test]
    fn paused_threads_make_no_progress_until_resumed_and_stop_wakes_them() {
        let gate = Arc::new(Gate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = spinners(&gate, &stop, 2);
        std::thread::sleep(Duration::from_millis(50));
        gate.pause(kick_signal(), Duration::from_secs(5)).unwrap();
        assert!(gate.is_paused());
        let before: Vec<u64> = rounds.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        std::thread::sleep(Duration::from_millis(100));
        let after: Vec<u64> = rounds.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(before, after);
        gate.resume();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            rounds
                .iter()
                .zip(&after)
                .all(|(r, a)| r.load(Ordering::SeqCst) > *a)
        );

        // A paused VM can still be stopped.
        gate.pause(kick_signal(), Duration::from_secs(5)).unwrap();
        stop.store(true, Ordering::SeqCst);
        gate.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.lock().threads.iter().flatten().count() > 0 {
            assert!(Instant::now() < deadline, "threads did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            gate.pause(kick_signal(), Duration::from_secs(1)),
            Err(PauseError::NotRunning)
        );
    }

    #[test]
    fn a_thread_that_never_reaches_the_gate_times_the_pause_out() {
        let gate = Arc::new(Gate::default());
        // A registered thread that never passes the gate.
        let stuck = Arc::new(AtomicBool::new(false));
        let (g, s) = (gate.clone(), stuck.clone());
        let kick = kick_signal();
        let t = std::thread::spawn(move || {
            g.register(0);
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            g.unregister(0);
        });
        std::thread::sleep(Duration::from_millis(20));
        let e = gate.pause(kick, Duration::from_millis(100)).unwrap_err();
        assert_eq!(e, PauseError::Timeout(Duration::from_millis(100)));
        assert!(!gate.is_paused());
        stuck.store(true, Ordering::SeqCst);
        t.join().unwrap();
    }
}
