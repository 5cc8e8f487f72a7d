//! The event-loop side of the device: what the [`Vsock`] watches and what it does on each
//! event.
//!
//! Watched: the three queue events (rx: the guest added buffers; tx: it queued packets; event:
//! ignored), the wake-up event of the [`VsockHandle`](super::VsockHandle)s, a timer for
//! connection deadlines, and each connection's socket, added and removed as its interest
//! changes. Queue events before activation are drained and ignored. After every event the
//! device fills the rx queue, refreshes the socket watch list and re-arms the timer.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::Vsock;
use super::{NUM_QUEUES, RX_QUEUE, TX_QUEUE};
use crate::devices::virtio::watcher::{EventOpsWatcher, FdWatcher, watch_inputs};

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventSource {
    /// The driver notified queue `index`.
    Queue(usize),
    /// A [`VsockHandle`](super::VsockHandle) queued a request.
    Wake,
    /// A connection deadline may have passed.
    Timer,
    /// A connection socket is ready (or hung up).
    Socket(RawFd),
}

impl Vsock {
    /// What the event on `fd` is about.
    pub(super) fn event_source(&self, fd: RawFd) -> EventSource {
        if let Some(index) =
            (0..NUM_QUEUES).find(|&i| self.queue_event(i).is_some_and(|e| e.as_raw_fd() == fd))
        {
            EventSource::Queue(index)
        } else if fd == self.wake.as_raw_fd() {
            EventSource::Wake
        } else if fd == self.timer.as_raw_fd() {
            EventSource::Timer
        } else {
            EventSource::Socket(fd)
        }
    }

    /// Handles one event; `watcher` applies changes to the watched connection sockets.
    pub(super) fn handle_event(
        &mut self,
        source: EventSource,
        events: EventSet,
        now: Instant,
        watcher: &mut dyn FdWatcher,
    ) {
        match source {
            EventSource::Queue(index) => {
                // Clear the event (it is non-blocking: nothing to read is fine).
                if let Some(event) = self.queue_event(index) {
                    let _ = event.read();
                }
                match index {
                    RX_QUEUE => self.process_rx(now),
                    TX_QUEUE => self.process_tx(now),
                    // The device never posts to the event queue.
                    _ => {}
                }
            }
            EventSource::Wake => {
                let _ = self.wake.read();
                self.process_host_requests();
                self.process_rx(now);
            }
            EventSource::Timer => {
                self.process_deadlines(now);
                self.process_rx(now);
            }
            EventSource::Socket(fd) => {
                self.muxer.handle_host_event(fd, events);
                self.process_rx(now);
            }
        }
        self.sync_interests(watcher);
        self.arm_timer(now, false);
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        let queue_events = (0..NUM_QUEUES).filter_map(|i| self.queue_event(i));
        let fds = queue_events
            .map(AsRawFd::as_raw_fd)
            .chain([self.wake.as_raw_fd(), self.timer.as_raw_fd()]);
        watch_inputs(ops, "vsock", fds);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let source = self.event_source(events.fd());
        let mut watcher = EventOpsWatcher::new(ops);
        self.handle_event(source, events.event_set(), Instant::now(), &mut watcher);
    }
}
