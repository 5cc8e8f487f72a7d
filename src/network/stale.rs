//! Redirects left behind by a VM that is gone. A sandbox killed with SIGKILL cannot remove
//! its interface's ingress qdisc; its taps die with it, and the kernel then reports the
//! redirect's target as interface 0. [`inspect`] and [`clear_dangling`] remove such a qdisc (an interface
//! whose every redirect points at no live interface), so the namespace is as the engine
//! made it; a redirect to a live interface (another VM's tap) is never touched.

use super::{NetworkError, link, scan, tc};

/// Whether every target in `targets` is dead (`alive` says which indexes exist); an empty
/// list is not dangling (no redirect at all).
pub fn all_dead(targets: &[u32], mut alive: impl FnMut(u32) -> bool) -> bool {
    !targets.is_empty() && targets.iter().all(|&t| t == 0 || !alive(t))
}

/// What an interface's ingress redirects are, after [`inspect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// None at all.
    None,
    /// Every one pointed at nothing: the qdisc was removed.
    Cleared,
    /// At least one goes to a live interface (another VM's tap).
    Live,
}

/// Reads `ifindex`'s redirects once, removing its ingress qdisc if they all dangle.
pub fn inspect(ifindex: u32) -> Result<Redirects, NetworkError> {
    let targets = tc::redirect_targets(ifindex)?;
    if targets.is_empty() {
        return Ok(Redirects::None);
    }
    let mut nl = link::open()?;
    if !all_dead(&targets, |t| link::name_of(&mut nl, t).is_some()) {
        return Ok(Redirects::Live);
    }
    tc::clear(ifindex)?;
    Ok(Redirects::Cleared)
}

/// Clears every dangling redirect on the calling thread's namespace's interfaces; returns
/// how many interfaces were cleaned.
pub fn clear_dangling() -> Result<usize, NetworkError> {
    let mut cleared = 0;
    for iface in scan()?.interfaces {
        if inspect(iface.index)? == Redirects::Cleared {
            cleared += 1;
        }
    }
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redirects_to_nothing_are_dangling() {
        let alive = |t: u32| t == 7;
        assert!(!all_dead(&[], alive));
        assert!(all_dead(&[0], alive));
        assert!(all_dead(&[0, 9], alive));
        assert!(!all_dead(&[7], alive));
        assert!(!all_dead(&[0, 7], alive));
    }
}
