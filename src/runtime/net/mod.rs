//! The container's network, host side: the network namespace the container's host process
//! lives in ([`netns`]), the guest NICs that stand for that namespace's interfaces
//! ([`nics`]), and the thread that follows the namespace's changes while the container runs
//! ([`watch`]); or, for a container that shares the host's network, passt and the ports it
//! listens on ([`host`], [`ports`]). [`GuestNet`] ties them to one VM's run.

pub mod dns;
pub mod host;
pub mod netns;
pub mod nics;
pub mod ports;
pub mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink_sys::Socket;
use oci_spec::runtime::Spec;

use guest_init::dnsrelay::DNS_RELAY_PORT;

use crate::agent::{Agent, AgentError};
use crate::devices::virtio::net::NetHandle;
use crate::devices::virtio::vsock::VsockHandle;
use host::HostNet;
use netns::Network;
use nics::{Nics, NicsError, Synced};

/// NIC slots of a VM whose container has a network namespace of its own: its interfaces
/// at create, and room for `docker network connect` later.
pub const NET_SLOTS: u32 = 4;

/// Why the guest's network could not be set up, one line.
#[derive(Debug, thiserror::Error)]
pub enum GuestNetError {
    /// Wiring on the host.
    #[error(transparent)]
    Nics(#[from] NicsError),
    /// guest-init did not apply it.
    #[error("cannot set up the container's network in the VM: {0}")]
    Guest(AgentError),
    /// The announcement socket.
    #[error("cannot follow the container's network namespace: {0}")]
    Watch(std::io::Error),
    /// The DNS relay's vsock port.
    #[error("cannot relay DNS for the container: {0}")]
    Dns(std::io::Error),
    /// The host's network (passt, the published ports).
    #[error("--network host: {0}")]
    Host(String),
}

/// The virtio-net NICs of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// How many.
    pub count: u32,
    /// Whether they offer a tap's offloads.
    pub offloads: bool,
}

/// The virtio-net slots a VM for `spec` gets: [`NET_SLOTS`] taps for a namespace of its own;
/// one for passt, without offloads, when the container shares the host's network.
pub fn slots_for(spec: &Spec) -> Slots {
    if netns::shares_host(spec) {
        Slots {
            count: 1,
            offloads: false,
        }
    } else {
        Slots {
            count: NET_SLOTS,
            offloads: true,
        }
    }
}

/// After a container's sandbox is gone (`runvm delete`): removes the redirects it left on
/// the interfaces of the namespace it joined (killed with SIGKILL, it could not), so the
/// engine finds its interfaces as it made them. A namespace the sandbox made itself died
/// with it. Best effort: failures are warnings.
pub fn clear_stale(spec: &Spec) {
    let Network::Join(path) = netns::wanted(spec) else {
        return;
    };
    if netns::shares_host(spec) {
        return;
    }
    if !path.exists() {
        return;
    }
    match netns::within(&path, crate::network::stale::clear_dangling) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("runvm: warning: {e}"),
        Err(e) => eprintln!("runvm: warning: {e}"),
    }
}

/// One VM's guest network: its NICs, the last state sent to the guest, and the
/// announcement socket opened before the first scan (so no change is missed between a
/// scan and [`GuestNet::follow`]). Dropping it unwires every NIC.
pub struct GuestNet {
    nics: Arc<Mutex<Nics>>,
    socket: Option<Socket>,
    last: Option<Synced>,
    /// The host's network, for a container that shares it (then `socket` is `None`).
    host: Option<HostNet>,
    /// The host's network was sent to the guest.
    host_sent: bool,
}

impl GuestNet {
    /// The guest network of a VM with these NICs, for the container of `spec`: with a
    /// namespace of its own, a loopback resolver its resolv.conf names is relayed over
    /// `vsock`.
    pub fn new(
        handles: Vec<NetHandle>,
        vsock: &VsockHandle,
        spec: &Spec,
    ) -> Result<GuestNet, GuestNetError> {
        let host = netns::shares_host(spec);
        let unwired = |handles, host| GuestNet {
            nics: Arc::new(Mutex::new(Nics::new(handles, Vec::new()))),
            socket: None,
            last: None,
            host,
            host_sent: false,
        };
        if handles.is_empty() {
            return Ok(unwired(handles, None));
        }
        let resolvers = dns::loopback_resolvers(spec);
        let relay_dns = || -> Result<(), GuestNetError> {
            if !resolvers.is_empty() {
                let listener = vsock.listen(DNS_RELAY_PORT).map_err(GuestNetError::Dns)?;
                dns::serve(listener, resolvers.clone());
            }
            Ok(())
        };
        if host {
            let Some(nic) = handles.first() else {
                return Ok(unwired(handles, None));
            };
            let Some(host_net) = HostNet::start(nic, vsock, resolvers.clone())? else {
                return Ok(unwired(handles, None));
            };
            relay_dns()?;
            return Ok(unwired(Vec::new(), Some(host_net)));
        }
        let socket = watch::subscribe().map_err(GuestNetError::Watch)?;
        relay_dns()?;
        Ok(GuestNet {
            nics: Arc::new(Mutex::new(Nics::new(handles, resolvers))),
            socket: Some(socket),
            last: None,
            host: None,
            host_sent: false,
        })
    }

    /// Wires what the namespace has now and tells the guest if that changed.
    pub fn sync(&mut self, agent: &Agent, timeout: Duration) -> Result<(), GuestNetError> {
        if let Some(host) = self.host.as_ref().filter(|_| !self.host_sent) {
            agent
                .network(host.spec.clone(), timeout)
                .map_err(GuestNetError::Guest)?;
            self.host_sent = true;
        }
        if self.socket.is_none() {
            return Ok(());
        }
        let synced = self.nics.lock().unwrap_or_else(|p| p.into_inner()).sync()?;
        deliver(&synced, self.last.as_ref(), agent, timeout).map_err(GuestNetError::Guest)?;
        self.last = Some(synced);
        Ok(())
    }

    /// From now on, a thread follows the namespace's changes into the guest.
    pub fn follow(&mut self, agent: Arc<Agent>) {
        if let Some(socket) = self.socket.take() {
            let last = self.last.clone().unwrap_or_default();
            watch::spawn(socket, self.nics.clone(), agent, last);
        }
    }
}

/// Logs what is new in `synced` since `last` (loopback only, interfaces without a slot)
/// and sends the guest its network if that changed (the guest starts with every NIC down
/// and no relay).
fn deliver(
    synced: &Synced,
    last: Option<&Synced>,
    agent: &Agent,
    timeout: Duration,
) -> Result<(), AgentError> {
    if let Some(why) = synced
        .shared
        .as_ref()
        .filter(|_| last.is_none_or(|l| l.shared.is_none()))
    {
        eprintln!("runvm: the container has loopback only: {why}");
    }
    for name in &synced.unwired {
        if last.is_none_or(|l| !l.unwired.contains(name)) {
            eprintln!(
                "runvm: warning: {name} is not wired to the VM: all {NET_SLOTS} NIC slots are taken"
            );
        }
    }
    let changed = match last {
        Some(last) => last.spec != synced.spec,
        None => !synced.spec.nics.is_empty() || !synced.spec.dns_relay.is_empty(),
    };
    if changed {
        agent.network(synced.spec.clone(), timeout)?;
    }
    Ok(())
}

impl Drop for GuestNet {
    fn drop(&mut self) {
        self.nics.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
