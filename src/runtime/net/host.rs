//! The network of a container that shares the host's (`--network host`): one NIC whose
//! backend is passt ([`crate::network::passt`]), so that the container's connections are
//! host sockets, given the host's default-route interface as passt presents it; the TCP
//! ports the container listens on published on the host ([`super::ports`]); a loopback
//! resolver of the host's resolv.conf relayed like any other ([`super::dns`]).

use guest_init::netspec::NetSpec;
use guest_init::portfwd::LISTENERS_PORT;

use super::GuestNetError;
use super::ports::{self, Publisher};
use crate::devices::virtio::net::NetHandle;
use crate::devices::virtio::vsock::VsockHandle;
use crate::network::passt::{Passt, host_netspec};
use crate::network::scan;

/// The running pieces: passt and its relay, the publisher of listening ports, and what the
/// guest is told. Dropping it stops passt and closes the published ports.
pub struct HostNet {
    /// The guest's network, with `dns_relay` filled in.
    pub spec: NetSpec,
    _passt: Passt,
    _publisher: Publisher,
}

impl HostNet {
    /// Starts passt behind `nic` and the publisher over `vsock`; `None` when the host has no
    /// default route: passt would have no way out, and the container has loopback only (a
    /// host without a network is no error under runc either, so nothing is said).
    pub fn start(
        nic: &NetHandle,
        vsock: &VsockHandle,
        dns_relay: Vec<std::net::IpAddr>,
    ) -> Result<Option<HostNet>, GuestNetError> {
        let scan = scan().map_err(|e| GuestNetError::Host(e.to_string()))?;
        let Some(mut spec) = host_netspec(&scan, 0) else {
            return Ok(None);
        };
        spec.dns_relay = dns_relay;
        let (passt, fd) = Passt::spawn().map_err(|e| GuestNetError::Host(e.to_string()))?;
        nic.attach(fd)
            .map_err(|e| GuestNetError::Host(format!("cannot attach passt to the NIC: {e}")))?;
        let listener = vsock.listen(LISTENERS_PORT).map_err(|e| {
            GuestNetError::Host(format!("cannot publish the container's ports: {e}"))
        })?;
        let publisher = ports::serve(listener, vsock.clone()).map_err(|e| {
            GuestNetError::Host(format!("cannot publish the container's ports: {e}"))
        })?;
        Ok(Some(HostNet {
            spec,
            _passt: passt,
            _publisher: publisher,
        }))
    }
}
