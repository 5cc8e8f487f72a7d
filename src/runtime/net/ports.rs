//! The host's side of [`guest_init::portfwd`]: for a container that shares the host's network
//! (`--network host`), each TCP socket the container listens on in its VM becomes the same
//! port on the host, as under runc. guest-init reports its listeners over one vsock stream
//! ([`LISTENERS_PORT`](guest_init::portfwd::LISTENERS_PORT)); [`serve`] binds each on the
//! host at the same address and port (`listener`), and carries each client a host listener
//! accepts to the guest over a vsock connection of its own ([`FORWARD_PORT`], which starts
//! with the encoded [`Target`]), copying both ways with half-close passed on ([`guest_init::splice`]).
//!
//! A listener the guest no longer reports is closed (connections already forwarded go on).
//! An address the host cannot bind (the port is taken, the address is not the host's) is
//! warned about once. When the container listens on both `0.0.0.0:P` and `[::]:P`, the
//! host's `[::]:P` is bound IPv6-only so that both fit, as they did in the guest.
//!
//! The guest is hostile: a report that does not parse or breaks [`Listening::validate`]
//! ends the publishing, and at most [`MAX_FORWARDED`](guest_init::portfwd::MAX_FORWARDED)
//! forwarded connections are open at once (more clients are closed at once).

mod listener;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use guest_init::portfwd::{FORWARD_PORT, Listening, Target};
use guest_init::protocol::read_frame;

use crate::devices::virtio::vsock::{VsockHandle, VsockListener};
use listener::HostListener;

/// How often the thread waiting for guest-init's connection looks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// Why the ports could not be published, one line.
#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    /// A thread could not start.
    #[error("cannot publish the container's ports: {0}")]
    Spawn(io::Error),
    /// A listener of the guest could not be bound on the host.
    #[error("the container listens on {addr}/tcp but the host cannot bind it: {source}")]
    Bind {
        /// The listener's address and port.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// guest-init's report could not be read or broke the rules.
    #[error("the container's ports are no longer published: bad report from the guest: {0}")]
    Report(String),
}

/// Opens a forwarded connection to the guest (the vsock stream to [`FORWARD_PORT`]).
type Connect = Arc<dyn Fn() -> io::Result<UnixStream> + Send + Sync>;

/// Publishes on the host the ports the guest reports, until dropped: dropping it closes
/// every host listener (connections already forwarded go on until either side closes).
#[must_use = "dropping the Publisher closes the published ports"]
pub struct Publisher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the publishing thread and its [`Publisher`] share.
#[derive(Default)]
struct Shared {
    /// Set when the publisher is dropped.
    stop: AtomicBool,
    /// A clone of guest-init's connection, shut down to wake the reader.
    conn: Mutex<Option<UnixStream>>,
}

/// Publishes on the host the ports the guest reports to `listener` (the host's
/// [`LISTENERS_PORT`](guest_init::portfwd::LISTENERS_PORT)), forwarding their clients over
/// `vsock`, on a thread of its own until the returned [`Publisher`] is dropped.
pub fn serve(listener: VsockListener, vsock: VsockHandle) -> Result<Publisher, PortsError> {
    let connect: Connect = Arc::new(move || vsock.connect(FORWARD_PORT));
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("port-publish".into())
            .spawn(move || {
                if let Some(conn) = wait_for_guest(&listener, &shared) {
                    drop(listener);
                    if let Err(e) = publish(conn, connect) {
                        eprintln!("runvm: warning: {e}");
                    }
                }
            })
            .map_err(PortsError::Spawn)?
    };
    Ok(Publisher {
        shared,
        thread: Some(thread),
    })
}

impl Drop for Publisher {
    fn drop(&mut self) {
        {
            let conn = self
                .shared
                .conn
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.stop.store(true, Ordering::Release);
            if let Some(conn) = conn.as_ref() {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// guest-init's connection (it connects once), or `None` if the publisher is dropped or the
/// device goes away first. The connection is left in `shared` for the publisher to close.
fn wait_for_guest(listener: &VsockListener, shared: &Shared) -> Option<UnixStream> {
    let conn = loop {
        if shared.stop.load(Ordering::Acquire) {
            return None;
        }
        match listener.accept_timeout(ACCEPT_POLL) {
            Ok(Some(conn)) => break conn,
            Ok(None) => {}
            Err(_) => return None,
        }
    };
    conn.set_nonblocking(false).ok()?;
    let clone = conn.try_clone().ok()?;
    let mut slot = shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
    if shared.stop.load(Ordering::Acquire) {
        return None;
    }
    *slot = Some(clone);
    Some(conn)
}

/// Reads guest-init's reports on `conn` and publishes each set, until the guest closes the
/// connection (`Ok`) or breaks the protocol; the host listeners close on return.
fn publish(mut conn: UnixStream, connect: Connect) -> Result<(), PortsError> {
    let open = Arc::new(AtomicUsize::new(0));
    let mut published = Published::new(|target: Target, v6only: bool| {
        HostListener::start(target, v6only, connect.clone(), open.clone())
    });
    loop {
        let listening: Listening = match read_frame(&mut conn) {
            Ok(Some(listening)) => listening,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(PortsError::Report(e.to_string()));
            }
            // The stream broke: the VM is going away, or the publisher was dropped.
            Err(_) => return Ok(()),
        };
        listening.validate().map_err(PortsError::Report)?;
        for refused in published.reconcile(&listening.tcp) {
            eprintln!("runvm: warning: {refused}");
        }
    }
}

/// The listeners published on the host, kept matching the guest's last report: `L` is a
/// published listener (stopped when dropped), `B` binds one.
struct Published<L, B> {
    bind: B,
    /// Bound listeners, each with whether it is IPv6-only.
    bound: BTreeMap<Target, (bool, L)>,
    /// Listeners the host could not bind, not tried again while the guest reports them.
    refused: BTreeSet<Target>,
}

impl<L, B: FnMut(Target, bool) -> io::Result<L>> Published<L, B> {
    fn new(bind: B) -> Self {
        Published {
            bind,
            bound: BTreeMap::new(),
            refused: BTreeSet::new(),
        }
    }

    /// Publishes exactly `wanted`: stops the listeners no longer in it, binds the new ones.
    /// Returns the new ones that could not be bound.
    fn reconcile(&mut self, wanted: &[Target]) -> Vec<PortsError> {
        let wanted: BTreeSet<Target> = wanted.iter().copied().collect();
        // `[::]:P` beside an IPv4 listener of port P must not take IPv4 too.
        let v6only = |t: &Target| {
            t.addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                && wanted.iter().any(|o| o.addr.is_ipv4() && o.port == t.port)
        };
        // All stopped before any is bound: a port may change hands.
        self.bound
            .retain(|t, (only, _)| wanted.contains(t) && *only == v6only(t));
        self.refused.retain(|t| wanted.contains(t));
        let mut errors = Vec::new();
        // IPv4 first (targets sort by address family first).
        for target in &wanted {
            if self.bound.contains_key(target) || self.refused.contains(target) {
                continue;
            }
            let only = v6only(target);
            match (self.bind)(*target, only) {
                Ok(listener) => {
                    self.bound.insert(*target, (only, listener));
                }
                Err(source) => {
                    self.refused.insert(*target);
                    errors.push(PortsError::Bind {
                        addr: SocketAddr::new(target.addr, target.port),
                        source,
                    });
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests;
