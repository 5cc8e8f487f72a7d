//! One queue of the device and the serving of its chains, by whichever thread serves it: a
//! request queue's workers (`workers.rs`), or the event loop (the hiprio queue, and every
//! queue when the device has no workers).
//!
//! The queue sits behind a mutex held only to take a chain and to give it back: the request
//! itself is served without it, so several threads can serve one queue at once and answer
//! out of order (virtio lets a device use chains in any order), and the event loop can give
//! back a lock wait's chain while the workers go on.
//!
//! **Notifications.** After every chain taken the queue is armed again for the next one
//! (with `VIRTIO_RING_F_EVENT_IDX`: `avail_event` set to it, so that the driver notifies once
//! for a burst and not for each chain), and a thread that finds the queue empty arms it and
//! looks once more: a chain published meanwhile is never left without a notification. A
//! thread that takes a chain while more are waiting wakes one of its peers. An interrupt
//! follows every chain given back, unless the driver asked for none with event indexes
//! (`used_event`; virtio-queue does not honour the ring's no-interrupt flag).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::lock_wait::{LockWaits, WaitingChain};
use super::request::{FsServer, handle_chain};
use super::server::{ShareFs, lock};
use super::stats::FsStats;
use crate::devices::virtio::{Interrupt, log_guest_error, notify_used};
use crate::vmm::GuestMemory;

/// What serving any queue of an active device needs, shared by the threads that serve.
pub(super) struct Serving {
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn Interrupt>,
    pub(super) server: Arc<FsServer>,
    pub(super) share: Arc<ShareFs>,
    pub(super) stats: Arc<FsStats>,
    pub(super) lock_waits: Arc<Mutex<LockWaits>>,
}

/// One queue of an active device.
pub(super) struct Lane {
    /// Its index among the device's queues.
    index: usize,
    queue: Mutex<Queue>,
    /// Its notification event (the transport's ioeventfd, duplicated).
    event: EventFd,
}

/// How a thread serves a lane.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pace {
    /// Chains served before the thread lets its other events run: the lane's event is then
    /// signalled, so that serving resumes.
    pub(super) batch: usize,
    /// Whether other threads serve the lane too (woken when more chains wait).
    pub(super) peers: bool,
}

impl Lane {
    /// Queue `index`, `queue`, notified through `event`.
    pub(super) fn new(index: usize, queue: Queue, event: &EventFd) -> std::io::Result<Lane> {
        Ok(Lane {
            index,
            queue: Mutex::new(queue),
            event: event.try_clone()?,
        })
    }

    /// Its index among the device's queues.
    pub(super) fn index(&self) -> usize {
        self.index
    }

    /// The queue's notification event.
    pub(super) fn event(&self) -> &EventFd {
        &self.event
    }

    /// Serves the lane's chains until it is empty (and armed for the next) or `pace.batch`
    /// chains are served.
    pub(super) fn serve(&self, serving: &Serving, pace: Pace, errors_seen: &mut u32) {
        let mem = &serving.mem;
        let mut served = 0;
        let mut looked_again = false;
        while served < pace.batch {
            let chain = {
                let mut queue = lock(&self.queue);
                let Some(chain) = queue.pop_descriptor_chain(mem) else {
                    // Armed, then looked at once more: a chain published in between is
                    // served, one published later is notified. Only once: a ring whose
                    // index lies (beyond the queue's size) yields no chain however often.
                    if !looked_again && matches!(queue.enable_notification(mem), Ok(true)) {
                        looked_again = true;
                        continue;
                    }
                    return;
                };
                looked_again = false;
                // Armed for the next chain; a peer serves it if one is already there.
                if queue.enable_notification(mem).unwrap_or(true) && pace.peers {
                    self.wake(errors_seen);
                }
                chain
            };
            served += 1;
            let head = chain.head_index();
            let started = Instant::now();
            let completion = handle_chain(&serving.server, &serving.share, mem, self.index, chain);
            serving.stats.record(
                completion.opcode,
                completion.request_len,
                completion.used_len,
                started.elapsed(),
                completion.error.is_some(),
            );
            if let Some(err) = completion.error {
                log_error(errors_seen, &err);
            }
            let mut used_len = completion.used_len;
            if let Some((blocked, waiting)) = completion.wait {
                match lock(&serving.lock_waits).start(blocked, waiting) {
                    // Given back when the wait ends (`give_back_waits`).
                    Ok(()) => continue,
                    Err((errno, waiting)) => used_len = waiting.write_reply(mem, errno),
                }
            }
            self.give_back(serving, head, used_len, errors_seen);
        }
        // More may wait: come back through the event.
        self.wake(errors_seen);
    }

    /// Gives the chain at `head` back with `used_len` bytes written, and interrupts the
    /// driver if it wants to be told.
    fn give_back(&self, serving: &Serving, head: u16, used_len: u32, errors_seen: &mut u32) {
        let mut queue = lock(&self.queue);
        if let Err(err) = queue.add_used(&serving.mem, head, used_len) {
            log_error(errors_seen, &err);
        }
        if let Err(err) = notify_used(&mut queue, &serving.mem, &*serving.interrupt) {
            log_error(errors_seen, &err);
        }
    }

    /// Gives back the chains of lock waits that ended on this lane, with their errno.
    pub(super) fn give_back_waits(
        &self,
        serving: &Serving,
        ended: &[(WaitingChain, i32)],
        errors_seen: &mut u32,
    ) {
        for (waiting, errno) in ended.iter().filter(|(w, _)| w.queue == self.index) {
            let used_len = waiting.write_reply(&serving.mem, *errno);
            self.give_back(serving, waiting.head, used_len, errors_seen);
        }
    }

    fn wake(&self, errors_seen: &mut u32) {
        if let Err(err) = self.event.write(1) {
            log_error(errors_seen, &err);
        }
    }
}

pub(super) fn log_error(errors_seen: &mut u32, err: &dyn std::fmt::Display) {
    log_guest_error("virtio-fs", errors_seen, err);
}
