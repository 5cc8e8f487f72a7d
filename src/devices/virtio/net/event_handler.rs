//! The event-loop side of the device: what the [`Net`] watches and what it does on each
//! event.
//!
//! Watched from the start: the two queue events (rx: the guest added buffers; tx: it queued
//! frames) and the wake-up event of the [`NetHandle`](super::NetHandle)s. The tap joins the
//! event loop when the handle attaches it and leaves it before it is closed (detach, or
//! another tap). While registered, the tap is watched for readability only when the device
//! is active and the guest has rx buffers; otherwise its interest is empty: epoll is
//! level-triggered, and a readable tap with nowhere to put its frames would wake the loop
//! forever. The device asks the guest to notify the rx queue when it next adds buffers (it
//! does not want to hear about them otherwise), which makes the tap watched again; a frame
//! already read and waiting for buffers goes first. An error or hang-up on the tap is final:
//! epoll reports those even with an empty interest, so the tap leaves the loop, and frames
//! are dropped until the handle attaches another. After every event the tap's watch is
//! brought in line with the device's state.
//!
//! vhost-net (`vhost.rs`) adds its call eventfds, watched from the start. Before and after
//! every event the device starts vhost-net if it should run; while it runs, the queue events
//! stay registered with an empty interest (one already reported is read and ignored), the
//! tap is not watched, and each call becomes an interrupt.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::{Net, log_error};
use super::{NUM_QUEUES, NetError, RX_QUEUE, TX_QUEUE};
use crate::devices::virtio::watcher::{EventOpsWatcher, FdWatcher, watch_inputs};

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventSource {
    /// The driver notified queue `index`.
    Queue(usize),
    /// A [`NetHandle`](super::NetHandle) changed the backend, or the device was reset.
    Wake,
    /// vhost-net used buffers of queue `index` and the guest is to be interrupted.
    Call(usize),
    /// The tap is readable (or failed).
    Tap,
    /// A descriptor the device does not know (any more).
    Unknown(RawFd),
}

impl Net {
    /// What the event on `fd` is about.
    pub(super) fn event_source(&self, fd: RawFd) -> EventSource {
        if let Some(index) =
            (0..NUM_QUEUES).find(|&i| self.queue_event(i).is_some_and(|e| e.as_raw_fd() == fd))
        {
            EventSource::Queue(index)
        } else if fd == self.shared.wake.as_raw_fd() {
            EventSource::Wake
        } else if let Some(index) = self.vhost.call_index(fd) {
            EventSource::Call(index)
        } else if self.watched.is_some_and(|watched| watched.fd == fd) {
            EventSource::Tap
        } else {
            EventSource::Unknown(fd)
        }
    }

    /// Handles one event; `watcher` applies the changes to the tap's watch.
    pub(super) fn handle_event(
        &mut self,
        source: EventSource,
        events: EventSet,
        watcher: &mut dyn FdWatcher,
    ) {
        // A device the driver has just activated goes to vhost-net before it touches a queue.
        self.sync_vhost(watcher);
        match source {
            EventSource::Queue(index) => {
                // Clear the event (it is non-blocking: nothing to read is fine).
                if let Some(event) = self.queue_event(index) {
                    let _ = event.read();
                }
                // While vhost-net runs, it was woken by the same kick.
                match index {
                    _ if self.vhost_running() => {}
                    RX_QUEUE => {
                        // New buffers (or at least a look at the queue): read the tap again.
                        self.rx_starved = false;
                        self.process_rx();
                    }
                    TX_QUEUE => self.process_tx(),
                    _ => {}
                }
            }
            EventSource::Call(index) => self.relay_call(index),
            EventSource::Wake => {
                let _ = self.shared.wake.read();
                self.apply_pending(watcher);
                if !self.vhost_running() {
                    self.process_rx();
                }
            }
            EventSource::Tap => {
                // Frames still queued in the tap are delivered first.
                self.process_rx();
                if events.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                    self.fail_backend();
                }
            }
            EventSource::Unknown(fd) => {
                // Only our own descriptors reach us: one we lost track of (a failed watch
                // change) is dropped from the loop rather than left to fire forever.
                let _ = watcher.unwatch(fd);
                let err = io::Error::other(format!("event on unknown fd {fd}"));
                log_error(&mut self.errors_seen, &NetError::EventLoop(err));
            }
        }
        // After a backend change: vhost-net for the new tap, or the queue events back.
        self.sync_vhost(watcher);
        self.sync_interest(watcher);
    }

    /// Gives up on the tap after it reported an error or a hang-up.
    fn fail_backend(&mut self) {
        if let Some(tap) = self.backend.as_mut()
            && !tap.failed()
        {
            tap.mark_failed();
            let err = io::Error::other("the tap reported an error or hang-up; no longer read");
            log_error(&mut self.errors_seen, &NetError::Backend(err));
        }
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        let queue_events = (0..NUM_QUEUES).filter_map(|i| self.queue_event(i));
        let fds = queue_events
            .map(AsRawFd::as_raw_fd)
            .chain([self.shared.wake.as_raw_fd()])
            .chain(self.vhost.calls.iter().map(AsRawFd::as_raw_fd));
        watch_inputs(ops, "virtio-net", fds);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let source = self.event_source(events.fd());
        let mut watcher = EventOpsWatcher::new(ops);
        self.handle_event(source, events.event_set(), &mut watcher);
    }
}
