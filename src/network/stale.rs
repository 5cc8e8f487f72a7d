//! Redirects left behind by a VM that is gone. A sandbox killed with SIGKILL cannot remove
//! its interface's ingress qdisc; its taps die with it, and the kernel then reports the
//! redirect's target as interface 0. [`clear_dangling`] removes such a qdisc (an interface
//! whose every redirect points at no live interface), so the namespace is as the engine
//! made it; a redirect to a live interface (another VM's tap) is never touched.

use super::{NetworkError, link, scan, tc};

/// Whether every target in `targets` is dead (`alive` says which indexes exist); an empty
/// list is not dangling (no redirect at all).
pub fn all_dead(targets: &[u32], mut alive: impl FnMut(u32) -> bool) -> bool {
    !targets.is_empty() && targets.iter().all(|&t| t == 0 || !alive(t))
}

/// Clears `ifindex`'s ingress qdisc if all its redirects are dangling; true if it did.
pub fn clear_if_dangling(ifindex: u32) -> Result<bool, NetworkError> {
    let targets = tc::redirect_targets(ifindex)?;
    let mut nl = link::open()?;
    if !all_dead(&targets, |t| link::name_of(&mut nl, t).is_some()) {
        return Ok(false);
    }
    tc::clear(ifindex)?;
    Ok(true)
}

/// Clears every dangling redirect on the calling thread's namespace's interfaces; returns
/// how many interfaces were cleaned.
pub fn clear_dangling() -> Result<usize, NetworkError> {
    let mut cleared = 0;
    for iface in scan()?.interfaces {
        if clear_if_dangling(iface.index)? {
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
