//! How a device changes what the event loop watches of its descriptors (a tap, connection
//! sockets) while it handles an event: through an [`FdWatcher`], the event manager's
//! [`EventOps`] in production ([`EventOpsWatcher`]) and a fake in tests.

use std::io;
use std::os::fd::RawFd;

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;

/// Changes what the event loop watches of a device's descriptors.
pub(crate) trait FdWatcher {
    /// Starts watching `fd` for `events` (errors and hang-ups are always reported).
    fn watch(&mut self, fd: RawFd, events: EventSet) -> io::Result<()>;
    /// Changes the events watched on `fd`.
    fn rewatch(&mut self, fd: RawFd, events: EventSet) -> io::Result<()>;
    /// Stops watching `fd`.
    fn unwatch(&mut self, fd: RawFd) -> io::Result<()>;
}

/// Applies a device's watch changes to the event manager.
pub(crate) struct EventOpsWatcher<'a, 'b> {
    ops: &'a mut EventOps<'b>,
}

impl<'a, 'b> EventOpsWatcher<'a, 'b> {
    /// Watches through `ops`, the event manager's handle of the subscriber being called.
    pub(crate) fn new(ops: &'a mut EventOps<'b>) -> Self {
        EventOpsWatcher { ops }
    }
}

impl FdWatcher for EventOpsWatcher<'_, '_> {
    fn watch(&mut self, fd: RawFd, events: EventSet) -> io::Result<()> {
        self.ops
            .add(Events::new_raw(fd, events))
            .map_err(event_loop_error)
    }

    fn rewatch(&mut self, fd: RawFd, events: EventSet) -> io::Result<()> {
        self.ops
            .modify(Events::new_raw(fd, events))
            .map_err(event_loop_error)
    }

    fn unwatch(&mut self, fd: RawFd) -> io::Result<()> {
        self.ops
            .remove(Events::empty_raw(fd))
            .map_err(event_loop_error)
    }
}

fn event_loop_error(err: event_manager::Error) -> io::Error {
    io::Error::other(err.to_string())
}

/// Watches `fds`, a device's queue events and its other inputs, for readability from the
/// start; a descriptor the event manager refuses is logged as `device`'s.
pub(crate) fn watch_inputs(ops: &mut EventOps, device: &str, fds: impl IntoIterator<Item = RawFd>) {
    for fd in fds {
        if let Err(err) = ops.add(Events::new_raw(fd, EventSet::IN)) {
            eprintln!("{device}: cannot watch fd {fd}: {err}");
        }
    }
}
