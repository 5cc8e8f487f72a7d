//! How many descriptors a share may hold, and the process's open-file limit that follows.
//!
//! Each share reserves a budget: its descriptor cache, its open handles and its pinned
//! (unlinked but open) inodes. The soft `RLIMIT_NOFILE` of the process is set to the sum of
//! the live shares' budgets plus [`VMM_MARGIN`] for everything else the VMM opens (KVM, event
//! fds, vsock, the share's root and `/proc/self/fd`, descriptors briefly in use by a walk),
//! and never below the soft limit the process started with. When the hard limit cannot hold
//! a share's budget, the budget is shrunk to fit (quietly: the sandbox's stderr carries the
//! container's one-line errors).

use std::sync::Mutex;

use super::lock;

/// Descriptors kept for the VMM's own use beyond the shares' budgets.
pub const VMM_MARGIN: u64 = 256;
/// The smallest cache, handle and pin budgets a share is shrunk to.
const MIN_PART: usize = 16;

/// The descriptor budget of one share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsLimits {
    /// The inode descriptors cached (`O_PATH`), besides the root's.
    pub fd_cache: usize,
    /// The files and directories the guest may have open at a time.
    pub open_handles: usize,
    /// The unlinked-but-referenced inodes whose descriptors are kept.
    pub pinned: usize,
}

impl Default for FsLimits {
    fn default() -> Self {
        FsLimits {
            fd_cache: 1024,
            open_handles: 2048,
            pinned: 512,
        }
    }
}

impl FsLimits {
    /// The descriptors this budget may hold at once.
    pub fn total(&self) -> u64 {
        (self.fd_cache as u64)
            .saturating_add(self.open_handles as u64)
            .saturating_add(self.pinned as u64)
    }

    /// This budget scaled down to hold at most `room` descriptors (each part at least 16).
    fn shrunk_to(&self, room: u64) -> FsLimits {
        let total = self.total().max(1);
        let part = |value: usize| {
            let scaled = u128::from(value as u64) * u128::from(room) / u128::from(total);
            usize::try_from(scaled)
                .unwrap_or(usize::MAX)
                .max(MIN_PART)
                .min(value.max(MIN_PART))
        };
        FsLimits {
            fd_cache: part(self.fd_cache),
            open_handles: part(self.open_handles),
            pinned: part(self.pinned),
        }
    }
}

/// The process-wide sum of reservations.
#[derive(Debug)]
struct Reservations {
    /// The soft limit before the first share (None until then).
    original_soft: Option<u64>,
    reserved: u64,
}

static RESERVATIONS: Mutex<Reservations> = Mutex::new(Reservations {
    original_soft: None,
    reserved: 0,
});

fn get_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an rlimit for the call.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// Sets the soft limit for `reserved` descriptors of shares (see the module docs).
fn apply(original_soft: u64, reserved: u64) {
    let Some(mut limit) = get_limit() else {
        return;
    };
    let wanted = reserved
        .saturating_add(VMM_MARGIN)
        .max(original_soft)
        .min(limit.rlim_max);
    if wanted != limit.rlim_cur {
        limit.rlim_cur = wanted;
        // SAFETY: a valid pointer to an initialised rlimit. Failure leaves the old limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// A share's reservation of descriptors: released (and the soft limit lowered back) on drop.
#[derive(Debug)]
pub(super) struct Reservation {
    limits: FsLimits,
}

impl Reservation {
    /// Reserves `wanted` (or less if the hard limit cannot hold it) and sets the soft limit.
    pub(super) fn new(wanted: FsLimits) -> Self {
        let mut state = lock(&RESERVATIONS);
        let hard = get_limit().map_or(u64::MAX, |limit| limit.rlim_max);
        let original_soft = *state
            .original_soft
            .get_or_insert_with(|| get_limit().map_or(0, |limit| limit.rlim_cur));
        let room = hard
            .saturating_sub(VMM_MARGIN)
            .saturating_sub(state.reserved);
        let limits = if wanted.total() <= room {
            wanted
        } else {
            // Quiet: stderr is the container's error line. The shrunk budget still serves
            // any number of files, only fewer at once.
            wanted.shrunk_to(room)
        };
        state.reserved = state.reserved.saturating_add(limits.total());
        apply(original_soft, state.reserved);
        Reservation { limits }
    }

    /// The budget granted.
    pub(super) fn limits(&self) -> FsLimits {
        self.limits
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = lock(&RESERVATIONS);
        state.reserved = state.reserved.saturating_sub(self.limits.total());
        if let Some(original_soft) = state.original_soft {
            apply(original_soft, state.reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_covers_the_reservations() {
        let limits = FsLimits {
            fd_cache: 100,
            open_handles: 200,
            pinned: 50,
        };
        let reservation = Reservation::new(limits);
        let soft = get_limit().unwrap().rlim_cur;
        let hard = get_limit().unwrap().rlim_max;
        assert!(soft >= (reservation.limits().total() + VMM_MARGIN).min(hard));
        assert!(soft <= hard);
    }

    #[test]
    fn shrinking_keeps_the_proportions_and_a_floor() {
        let limits = FsLimits::default();
        let shrunk = limits.shrunk_to(3072);
        assert!(shrunk.total() <= 3072 + 3 * MIN_PART as u64);
        assert!(shrunk.open_handles > shrunk.fd_cache);
        let tiny = limits.shrunk_to(0);
        assert_eq!(tiny.fd_cache, MIN_PART);
        assert_eq!(tiny.pinned, MIN_PART);
        // The floor holds for small budgets too.
        let small = FsLimits {
            fd_cache: 4,
            open_handles: 4,
            pinned: 4,
        };
        assert_eq!(small.shrunk_to(0).fd_cache, MIN_PART);
        assert_eq!(limits.shrunk_to(u64::MAX), limits);
    }
}
