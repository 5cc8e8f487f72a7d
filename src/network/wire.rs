//! One namespace interface wired to one tap: frames arriving on the interface leave by the
//! tap (to the VMM reading it), frames the VMM writes to the tap leave by the interface.
//! The tap's descriptor goes to the caller (the VMM's virtio-net device holds it, and the
//! tap dies with it); the [`Wire`] keeps only names and indexes, and removes the
//! interface's ingress qdisc when disconnected or dropped, so the interface is as the
//! engine left it. It keeps the rtnetlink socket it was made with, which stays in the
//! namespace of the thread that connected it: it may be dropped on any thread.

use std::os::fd::OwnedFd;

use super::netlink::Netlink;
use super::scan::Interface;
use super::tap::open_tap_with;
use super::{NetworkError, link, tc};

/// An interface and its tap, with a redirect each way.
#[derive(Debug)]
pub struct Wire {
    nl: Netlink,
    iface_index: u32,
    iface_name: String,
    tap_index: u32,
    tap_name: String,
    connected: bool,
}

impl Wire {
    /// Makes tap `tap_name` with the interface's MTU and redirects both ways. On failure
    /// whatever was done is undone (the tap goes with its descriptor).
    pub fn connect(iface: &Interface, tap_name: &str) -> Result<(Wire, OwnedFd), NetworkError> {
        let mut nl = link::open()?;
        let (fd, tap_index) = open_tap_with(&mut nl, tap_name, iface.mtu)?;
        let mut wire = Wire {
            nl,
            iface_index: iface.index,
            iface_name: iface.name.clone(),
            tap_index,
            tap_name: tap_name.to_string(),
            connected: true,
        };
        // On an error `wire` drops here, clearing the interface's qdisc, before `fd`.
        tc::redirect_with(&mut wire.nl, iface.index, tap_index)?;
        tc::redirect_with(&mut wire.nl, tap_index, iface.index)?;
        Ok((wire, fd))
    }

    /// Removes the redirects: the interface's ingress qdisc (its error is returned), and the
    /// tap's if the tap still exists.
    pub fn disconnect(mut self) -> Result<(), NetworkError> {
        self.connected = false;
        unwire(&mut self.nl, self.iface_index, self.tap_index)
    }

    /// The interface's index.
    pub fn iface_index(&self) -> u32 {
        self.iface_index
    }

    /// The interface's name.
    pub fn iface_name(&self) -> &str {
        &self.iface_name
    }

    /// The tap's index.
    pub fn tap_index(&self) -> u32 {
        self.tap_index
    }

    /// The tap's name.
    pub fn tap_name(&self) -> &str {
        &self.tap_name
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        if self.connected {
            let _ = unwire(&mut self.nl, self.iface_index, self.tap_index);
        }
    }
}

/// Clears the tap's ingress (best effort: the tap may be gone), then the interface's.
fn unwire(nl: &mut Netlink, iface: u32, tap: u32) -> Result<(), NetworkError> {
    let _ = tc::clear_with(nl, tap);
    tc::clear_with(nl, iface)
}
