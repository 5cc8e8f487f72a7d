//! Publishes the container's listening sockets on the host, for a container that shares the
//! host's network (`--network host`): the guest's side of [`guest_init::portfwd`]. Two
//! parts, started once by [`Publisher::ensure`]:
//! - [`report`]: a thread that reads the TCP sockets in LISTEN state of guest-init's network
//!   namespace (the container's, in this mode) from /proc/net/tcp and /proc/net/tcp6 every
//!   [`report::SCAN_INTERVAL`], and sends the set to the host whenever it changes;
//! - [`forward`]: the vsock listener on [`FORWARD_PORT`] that carries each connection the
//!   host forwards to the listener it names.
//!
//! The host is hostile: a forwarded connection must name a listener of the last set
//! reported, its name is read within a deadline, and at most
//! [`MAX_FORWARDED`](guest_init::portfwd::MAX_FORWARDED) are open at once.

mod forward;
mod report;

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use guest_init::portfwd::{FORWARD_PORT, Target};

use crate::vsock;

/// The listeners last reported to the host: the ones it may forward connections to.
type Reported = Arc<Mutex<Vec<Target>>>;

/// The publisher, once started.
#[derive(Default)]
pub struct Publisher {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set once the forwarder listens: the set it checks targets against.
    forwarding: Option<Reported>,
    /// Whether the reporting thread runs.
    reporting: bool,
}

impl Publisher {
    /// Starts the forwarder and the reporting thread, unless they run already; the reporter
    /// reaches the host with `connect`. A part that failed to start is tried again on the
    /// next call.
    pub fn ensure(&self, connect: impl FnOnce() -> io::Result<File>) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let reported = match &state.forwarding {
            Some(reported) => reported.clone(),
            None => {
                let listener = vsock::listen(FORWARD_PORT).map_err(|e| {
                    format!("cannot listen on vsock port {FORWARD_PORT} for forwarded ports: {e}")
                })?;
                let reported = Reported::default();
                forward::spawn(listener, reported.clone())
                    .map_err(|e| format!("cannot start forwarding ports: {e}"))?;
                state.forwarding = Some(reported.clone());
                reported
            }
        };
        if !state.reporting {
            let stream =
                connect().map_err(|e| format!("cannot report listening ports to the host: {e}"))?;
            report::spawn(stream, reported)
                .map_err(|e| format!("cannot start reporting listening ports: {e}"))?;
            state.reporting = true;
        }
        Ok(())
    }
}
