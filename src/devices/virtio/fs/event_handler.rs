//! The event-loop side of the device: the [`VirtioFs`] watches the hiprio queue's event (and
//! the request queues' when it has no workers) and serves that queue's requests on each, and
//! the event of its lock waits (`lock_wait.rs`), giving back the SETLKW requests whose waits
//! ended. Queue events before activation are drained and ignored: activation kicks every
//! queue once to catch up.

use std::os::fd::{AsRawFd, RawFd};

use event_manager::{EventOps, Events, MutEventSubscriber};

use super::HIPRIO_QUEUE;
use super::device::VirtioFs;
use crate::devices::virtio::watcher::watch_inputs;

impl VirtioFs {
    /// The queues the event loop serves: hiprio, and the request queues without workers.
    fn loop_queues(&self) -> std::ops::Range<usize> {
        match self.loop_serves_requests() {
            true => HIPRIO_QUEUE..1 + self.request_queues(),
            false => HIPRIO_QUEUE..HIPRIO_QUEUE + 1,
        }
    }

    /// The queue served on the loop whose event is `fd`, if any.
    pub(super) fn queue_of_event(&self, fd: RawFd) -> Option<usize> {
        self.loop_queues()
            .find(|&i| self.queue_event(i).is_some_and(|e| e.as_raw_fd() == fd))
    }

    /// Handles a notification of queue `index`.
    pub(super) fn handle_queue_event(&mut self, index: usize) {
        // Clear the event (it is non-blocking: nothing to read is fine).
        if let Some(event) = self.queue_event(index) {
            let _ = event.read();
        }
        self.process_queue(index);
    }
}

impl MutEventSubscriber for VirtioFs {
    fn init(&mut self, ops: &mut EventOps) {
        let queue_events = self.loop_queues().filter_map(|i| self.queue_event(i));
        let lock_waits = std::iter::once(self.lock_wait_event());
        watch_inputs(
            ops,
            "virtio-fs",
            queue_events.chain(lock_waits).map(AsRawFd::as_raw_fd),
        );
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match self.queue_of_event(events.fd()) {
            Some(index) => self.handle_queue_event(index),
            None if events.fd() == self.lock_wait_event().as_raw_fd() => {
                self.answer_lock_waits();
            }
            None => eprintln!("virtio-fs: event on unknown fd {}", events.fd()),
        }
    }
}
