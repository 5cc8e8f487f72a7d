//! The guest NICs of one container: which interface of its network namespace each
//! virtio-net slot of the VM stands for.
//!
//! [`Nics::sync`] scans the namespace, unwires the slots whose interface went away (docker
//! network disconnect, a deleted veth), wires each new interface into a free slot (a tap and
//! tc redirects, [`Wire`]; the tap's descriptor goes to the slot's device) and returns the
//! guest's whole wanted network. A slot follows its interface by index, so an interface the
//! engine renames after moving it in (a veth becoming `eth0`) keeps its slot and the guest
//! renames it. Called at create after the hooks, again at start, and on every change the
//! namespace announces ([`super::watch`]).
//!
//! An interface another VM already redirects (its ingress qdisc sends frames to a tap that
//! is not ours: a container joining another runvm container's namespace) is not taken: the
//! container gets loopback only, and [`Synced::shared`] says why, for one log line.

use guest_init::netspec::NetSpec;

use crate::devices::virtio::net::NetHandle;
use crate::network::stale::{self, Redirects};
use crate::network::{Interface, NetworkError, Wire, scan, tap_name};

/// Why the NICs could not be brought in line with the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NicsError {
    /// Reading the namespace failed.
    #[error("cannot read the container's network namespace: {0}")]
    Scan(NetworkError),
    /// An interface could not be wired.
    #[error("cannot wire {name} to the VM: {source}")]
    Wire {
        /// The interface.
        name: String,
        /// Why.
        source: NetworkError,
    },
    /// The slot's device did not take the tap.
    #[error("cannot give {name}'s tap to the VM: {source}")]
    Device {
        /// The interface.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What one [`Nics::sync`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    /// The guest's wanted network.
    pub spec: NetSpec,
    /// Interfaces with no free slot (left unwired).
    pub unwired: Vec<String>,
    /// Set when the namespace's interfaces belong to another VM: which one, and why.
    pub shared: Option<String>,
}

struct Wired {
    index: u32,
    wire: Wire,
}

struct Slot {
    handle: NetHandle,
    wired: Option<Wired>,
}

/// The VM's NIC slots and what each is wired to.
pub struct Nics {
    slots: Vec<Slot>,
    dns_relay: Vec<std::net::IpAddr>,
}

impl Nics {
    /// The slots of a VM, by slot number, none wired; the guest relays DNS for the
    /// resolvers `dns_relay` ([`NetSpec::dns_relay`]).
    pub fn new(handles: Vec<NetHandle>, dns_relay: Vec<std::net::IpAddr>) -> Nics {
        Nics {
            dns_relay,
            slots: handles
                .into_iter()
                .map(|handle| Slot {
                    handle,
                    wired: None,
                })
                .collect(),
        }
    }

    /// How many slots the VM has.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Brings the slots in line with the namespace's interfaces; see the module's doc.
    pub fn sync(&mut self) -> Result<Synced, NicsError> {
        let found = scan().map_err(NicsError::Scan)?;
        // Interfaces gone (or replaced under the same index by another kind of link) lose
        // their slot first, so a slot they free can be taken below.
        for slot in &mut self.slots {
            let gone = slot
                .wired
                .as_ref()
                .is_some_and(|w| !found.interfaces.iter().any(|i| i.index == w.index));
            if gone {
                unwire(slot);
            }
        }
        let mut unwired = Vec::new();
        let mut shared = None;
        for iface in &found.interfaces {
            if self.slot_of_index(iface.index).is_some() {
                continue;
            }
            if let Some(why) = used_elsewhere(iface) {
                shared = Some(why);
                continue;
            }
            let Some(free) = self.slots.iter().position(|s| s.wired.is_none()) else {
                unwired.push(iface.name.clone());
                continue;
            };
            self.wire(free, iface)?;
        }
        let names: Vec<(String, u32)> = found
            .interfaces
            .iter()
            .filter_map(|i| Some((i.name.clone(), self.slot_of_index(i.index)?)))
            .collect();
        let mut spec = found.to_netspec(|name| names.iter().find(|(n, _)| n == name).map(|p| p.1));
        spec.dns_relay = self.dns_relay.clone();
        Ok(Synced {
            spec,
            unwired,
            shared,
        })
    }

    fn slot_of_index(&self, index: u32) -> Option<u32> {
        self.slots
            .iter()
            .position(|s| s.wired.as_ref().is_some_and(|w| w.index == index))
            .and_then(|p| u32::try_from(p).ok())
    }

    fn wire(&mut self, at: usize, iface: &Interface) -> Result<(), NicsError> {
        let slot_number = u32::try_from(at).unwrap_or(u32::MAX);
        let (wire, tap) =
            Wire::connect(iface, &tap_name(slot_number)).map_err(|source| NicsError::Wire {
                name: iface.name.clone(),
                source,
            })?;
        let slot = &mut self.slots[at];
        slot.handle
            .attach(tap)
            .map_err(|source| NicsError::Device {
                name: iface.name.clone(),
                source,
            })?;
        slot.wired = Some(Wired {
            index: iface.index,
            wire,
        });
        Ok(())
    }
}

/// Detaches a slot's tap and removes the interface's redirect (best effort: the interface
/// may be gone already, taking its qdisc along).
fn unwire(slot: &mut Slot) {
    let _ = slot.handle.detach();
    if let Some(w) = slot.wired.take() {
        let _ = w.wire.disconnect();
    }
}

/// Why `iface` cannot be ours: its ingress already redirects to a live interface (another
/// VM's tap). A redirect left by a VM that is gone is removed first.
fn used_elsewhere(iface: &Interface) -> Option<String> {
    (stale::inspect(iface.index).ok()? == Redirects::Live).then(|| {
        format!(
            "{} already carries another VM's traffic (the network namespace is shared with \
             another runvm container)",
            iface.name
        )
    })
}

impl Nics {
    /// Unwires every slot.
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            unwire(slot);
        }
    }
}

impl Drop for Nics {
    fn drop(&mut self) {
        self.clear();
    }
}
