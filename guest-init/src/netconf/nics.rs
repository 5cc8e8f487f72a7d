//! Our interfaces' link state: each wired slot's interface given its name, MAC and MTU and
//! set up; each unwired one set down and given a neutral name (`net<slot>`), so a later spec
//! may give its old name to another slot. Only what differs is changed; an interface is set
//! down first when its name or MAC must change (the kernel refuses to rename one that is up).

use guest_init::netlink::Netlink;
use guest_init::netspec::NicSpec;

use super::links::{self, Link};
use super::names::{self, Naming};

/// One virtio-net slot's interface and what the spec wants of it.
#[derive(Debug, Clone)]
pub struct Nic<'a> {
    /// The slot.
    pub slot: u32,
    /// The interface, kept current as it is changed.
    pub link: Link,
    /// Its spec, or `None` if the slot is not wired.
    pub wanted: Option<&'a NicSpec>,
}

/// Gives every interface of `nics` its wanted link state; `others` are the names of the
/// interfaces that are not ours.
pub fn configure(nl: &mut Netlink, nics: &mut [Nic], others: &[String]) -> Result<(), String> {
    let targets = targets(nics, others);
    let namings: Vec<Naming> = nics
        .iter()
        .zip(&targets)
        .map(|(nic, target)| Naming {
            index: nic.link.index,
            current: &nic.link.name,
            target,
        })
        .collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    let renames = names::plan(&namings, &others);

    for nic in nics.iter_mut() {
        let renamed = renames.iter().any(|(index, _)| *index == nic.link.index);
        let new_mac = nic.wanted.is_some_and(|w| nic.link.mac != Some(w.mac));
        if nic.link.up && (renamed || new_mac || nic.wanted.is_none()) {
            links::set_up(nl, nic.link.index, false)
                .map_err(|e| format!("cannot set {} down: {e}", nic.link.name))?;
            nic.link.up = false;
        }
    }
    for (index, name) in renames {
        let Some(nic) = nics.iter_mut().find(|n| n.link.index == index) else {
            continue;
        };
        links::rename(nl, index, &name)
            .map_err(|e| format!("cannot rename {} to {name}: {e}", nic.link.name))?;
        nic.link.name = name;
    }
    for nic in nics.iter_mut() {
        let Some(wanted) = nic.wanted else { continue };
        let link = &mut nic.link;
        if link.mac != Some(wanted.mac) {
            let text = links::mac_text(&wanted.mac);
            links::set_mac(nl, link.index, wanted.mac)
                .map_err(|e| format!("cannot set {}'s MAC to {text}: {e}", link.name))?;
            link.mac = Some(wanted.mac);
        }
        if link.mtu != wanted.mtu {
            links::set_mtu(nl, link.index, wanted.mtu)
                .map_err(|e| format!("cannot set {}'s MTU to {}: {e}", link.name, wanted.mtu))?;
            link.mtu = wanted.mtu;
        }
        if !link.up {
            links::set_up(nl, link.index, true)
                .map_err(|e| format!("cannot set {} up: {e}", link.name))?;
            link.up = true;
        }
    }
    Ok(())
}

/// The name each of `nics` must have: the spec's, or for an unwired slot a neutral name
/// that no wired slot wants and no other interface has.
fn targets(nics: &[Nic], others: &[String]) -> Vec<String> {
    let mut avoid: Vec<String> = nics
        .iter()
        .filter_map(|n| n.wanted.map(|w| w.name.clone()))
        .chain(others.iter().cloned())
        .collect();
    let mut targets = Vec::with_capacity(nics.len());
    for nic in nics {
        let target = match nic.wanted {
            Some(w) => w.name.clone(),
            None => {
                let avoiding: Vec<&str> = avoid.iter().map(String::as_str).collect();
                let name = names::neutral(nic.slot, &avoiding);
                avoid.push(name.clone());
                name
            }
        };
        targets.push(target);
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic<'a>(slot: u32, name: &str, wanted: Option<&'a NicSpec>) -> Nic<'a> {
        Nic {
            slot,
            link: Link {
                index: slot + 2,
                name: name.into(),
                mac: None,
                perm_mac: None,
                mtu: 1500,
                up: true,
            },
            wanted,
        }
    }

    #[test]
    fn unwired_slots_get_neutral_names_nobody_wants() {
        let spec = NicSpec {
            slot: 0,
            name: "net1".into(),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            addresses: vec![],
        };
        let nics = [
            nic(0, "eth0", Some(&spec)),
            nic(1, "eth1", None),
            nic(2, "net2", None),
        ];
        let targets = targets(&nics, &["lo".into()]);
        assert_eq!(targets, ["net1", "net1-1", "net2"]);
    }
}
