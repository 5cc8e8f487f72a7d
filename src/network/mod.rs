//! The host side of a guest's network: the container's network namespace as the engine made
//! it (docker, podman, CNI put a veth `eth0` there with its addresses and routes), and the
//! wiring that feeds each of its interfaces to one virtio-net NIC of the VM.
//!
//! The sandbox process runs inside that namespace. [`scan()`] lists the interfaces to wire
//! with their addresses, routes and permanent neighbours, and
//! [`Scan::to_netspec`](scan::Scan::to_netspec) turns them into the
//! [`NetSpec`](guest_init::netspec::NetSpec) the guest applies. Each NIC's backend is a tap
//! made in the same namespace ([`open_tap`], named [`tap_name`]`(slot)`), and traffic
//! moves both ways with tc, as Kata's "tcfilter" model does: an ingress qdisc on the
//! interface whose one filter redirects every frame to the tap's egress, and the same on
//! the tap towards the interface ([`tc::redirect`]). The addresses stay on the interface
//! where the engine put them; the guest answers for them. A [`Wire`] is one such pair, and
//! undoes the interface's half when dropped (the tap goes with its descriptor).
//!
//! Everything goes through rtnetlink ([`netlink`]: the small synchronous client with bounded
//! buffers and sequence checks that guest-init uses too) and the tun ioctls; no `ip` or `tc`
//! binary is run.
//!
//! Namespaces belong to threads: call these from a thread inside the container's namespace.

mod link;
pub mod passt;
pub mod scan;
mod spec;
pub mod stale;
pub mod tap;
pub mod tc;
pub mod wire;

#[cfg(test)]
mod testnet;
#[cfg(test)]
mod tests;

use std::io;

pub use guest_init::netlink;
pub use netlink::NetlinkError;
pub use scan::{Interface, Neighbour, Route, Scan, scan};
pub use tap::{TAP_PREFIX, open_tap, tap_name};
pub use wire::Wire;

/// Why a network step failed, one line naming the operation and the interface.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No rtnetlink socket could be opened.
    #[error("cannot open an rtnetlink socket: {0}")]
    Socket(#[source] NetlinkError),
    /// A request about one interface failed ("add the ingress qdisc on eth0").
    #[error("cannot {op}: {source}")]
    Request {
        /// What was asked, with the interface's name.
        op: String,
        /// Why it failed.
        source: NetlinkError,
    },
    /// A listing of the namespace's links, addresses, routes or neighbours failed.
    #[error("cannot list the {what}: {source}")]
    Scan {
        /// What was listed.
        what: &'static str,
        /// Why it failed.
        source: NetlinkError,
    },
    /// The tap could not be made with `/dev/net/tun`.
    #[error("cannot create the tap {name}: {step}: {source}")]
    Tap {
        /// The tap's name.
        name: String,
        /// Which step failed.
        step: &'static str,
        /// Why.
        source: io::Error,
    },
    /// A tap name that is not a usable interface name.
    #[error("invalid tap name {0:?}")]
    TapName(String),
}

impl NetworkError {
    /// The errno the kernel answered, when the error is the kernel's refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetworkError::Socket(e)
            | NetworkError::Request { source: e, .. }
            | NetworkError::Scan { source: e, .. } => e.errno(),
            NetworkError::Tap { source, .. } => source.raw_os_error(),
            NetworkError::TapName(_) => None,
        }
    }
}
