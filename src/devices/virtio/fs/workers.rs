//! The request queues' worker threads: each request queue is served by threads of its own
//! (`vmm-fs-q<queue>`), off the event loop, so that one request's host I/O (an fsync, a
//! large write, a cold directory) holds up neither the other queues nor the requests other
//! workers of its queue can take meanwhile.
//!
//! A worker sleeps in an epoll set of its own on its queue's event and the workers' stop
//! event, and serves the queue until it is empty (`lanes.rs`). A notification wakes every
//! sleeping worker of the queue; those that find nothing to take sleep again. Not
//! `EPOLLEXCLUSIVE`: an exclusive wake-up can land in the epoll set of a worker busy with a
//! request, and the chain then waits for that request although a peer sleeps. Stopping (a reset, the device dropped) signals
//! the stop event and joins every worker: a worker in the middle of a request finishes it
//! and at most the rest of its batch of chains first, so no thread outlives the queues it
//! served.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::QUEUE_SIZE;
use super::lanes::{Lane, Pace, Serving, log_error};

/// The most worker threads for one request queue.
pub const MAX_WORKERS_PER_QUEUE: usize = 4;

/// What an epoll event's data says.
const QUEUE_EVENT: u64 = 0;
const STOP_EVENT: u64 = 1;

/// The running workers of a device's request queues.
pub(super) struct Workers {
    /// Signalled once to stop them all (never read: it stays readable).
    stop: Arc<EventFd>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `per_lane` workers for each of `lanes`. When a thread cannot be started, those
    /// started are stopped again.
    pub(super) fn start(
        serving: &Arc<Serving>,
        lanes: &[Arc<Lane>],
        per_lane: usize,
    ) -> std::io::Result<Workers> {
        let mut workers = Workers {
            stop: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?),
            threads: Vec::new(),
        };
        // Bounded: a guest refilling the queue as fast as it is drained must not keep a
        // worker from seeing the stop event (a reset joins the workers).
        let pace = Pace {
            batch: usize::from(QUEUE_SIZE),
            peers: per_lane > 1,
        };
        for lane in lanes {
            for _ in 0..per_lane {
                let epoll = worker_epoll(lane, &workers.stop)?;
                let (serving, lane) = (Arc::clone(serving), Arc::clone(lane));
                let thread = std::thread::Builder::new()
                    .name(format!("vmm-fs-q{}", lane.index()))
                    .spawn(move || run(&epoll, &serving, &lane, pace))?;
                workers.threads.push(thread);
            }
        }
        Ok(workers)
    }

    /// The number of worker threads.
    pub(super) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Stops every worker and waits for it.
    fn stop(&mut self) {
        let _ = self.stop.write(1);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A worker's epoll set: `lane`'s event and `stop`.
fn worker_epoll(lane: &Lane, stop: &EventFd) -> std::io::Result<Epoll> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        lane.event().as_raw_fd(),
        EpollEvent::new(EventSet::IN, QUEUE_EVENT),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, STOP_EVENT),
    )?;
    Ok(epoll)
}

/// A worker: serves `lane` at each of its notifications until stopped.
fn run(epoll: &Epoll, serving: &Serving, lane: &Lane, pace: Pace) {
    let mut errors_seen = 0;
    let mut events = [EpollEvent::default(); 2];
    loop {
        let ready = match epoll.wait(-1, &mut events) {
            Ok(n) => events.get(..n).unwrap_or_default(),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // Cannot happen with a valid epoll set; the queue's other workers (if any)
                // and a reset carry on.
                log_error(&mut errors_seen, &err);
                return;
            }
        };
        if ready.iter().any(|e| e.data() == STOP_EVENT) {
            return;
        }
        // Cleared before serving: a notification after this wakes a worker again.
        let _ = lane.event().read();
        lane.serve(serving, pace, &mut errors_seen);
    }
}
