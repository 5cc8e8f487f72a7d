//! Applies a [`NetSpec`] to the guest's network, all through rtnetlink (the guest has no
//! `ip`). The host sends the whole wanted state, at create, at start and whenever the
//! container's network namespace changes, so applying is idempotent: only what differs is
//! changed, and what the spec no longer lists is undone.
//!
//! The steps, each its own module:
//! 1. [`slots`]: find each virtio-net slot's interface (by its permanent address);
//! 2. [`nics`]: name, MAC, MTU and up for wired slots; down and a neutral name for the others;
//! 3. [`addresses`]: exactly the spec's addresses (IPv6 link-local ones are the kernel's);
//! 4. [`routes`]: the spec's routes in the main table, our stale ones removed;
//! 5. [`neighbours`]: the spec's permanent neighbour entries, stale ones removed.
//!
//! They share the rtnetlink client of [`guest_init::netlink`] (the host uses it too);
//! [`links`] and [`names`] are the link requests and the rename plan.

mod addresses;
mod links;
mod names;
mod neighbours;
mod nics;
mod routes;
mod slots;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, PoisonError};

use guest_init::netlink::Netlink;
use guest_init::netspec::{MAX_NICS, NetSpec};

use nics::Nic;

/// What [`apply`] last left each slot's interface with, for interfaces without a permanent
/// address (see [`slots`]).
static REMEMBERED: Mutex<slots::Remembered> = Mutex::new([None; MAX_NICS]);

/// Makes the guest's network match `spec`. The error is one line naming the step and the
/// interface.
pub fn apply(spec: &NetSpec) -> Result<(), String> {
    spec.validate()?;
    let mut nl = Netlink::open().map_err(|e| format!("cannot open a netlink socket: {e}"))?;
    let all = links::dump(&mut nl).map_err(|e| format!("cannot list interfaces: {e}"))?;
    let mut remembered = REMEMBERED.lock().unwrap_or_else(PoisonError::into_inner);
    let found = slots::find(&all, &remembered);

    let mut nics = Vec::new();
    for (slot, place) in found.iter().enumerate() {
        let Some(i) = *place else { continue };
        nics.push(Nic {
            slot: slot as u32,
            link: all[i].clone(),
            wanted: spec.nics.iter().find(|n| n.slot as usize == slot),
        });
    }
    if let Some(n) = spec
        .nics
        .iter()
        .find(|n| found.get(n.slot as usize).is_none_or(Option::is_none))
    {
        return Err(format!("no virtio-net interface for slot {}", n.slot));
    }
    let others: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !found.contains(&Some(*i)))
        .map(|(_, l)| l.name.clone())
        .collect();

    let configured = nics::configure(&mut nl, &mut nics, &others);
    for nic in &nics {
        remembered[nic.slot as usize] = nic.link.mac.map(|mac| (nic.link.index, mac));
    }
    drop(remembered);
    configured?;
    addresses::reconcile(&mut nl, &nics)?;
    routes::reconcile(&mut nl, &nics, &spec.routes)?;
    neighbours::reconcile(&mut nl, &nics, &spec.neighbours)
}
