//! Guest RAM: anonymous, private, lazily backed mappings. Pages the guest never touches cost
//! the host nothing, so a 256 MiB guest that uses 20 MiB costs about 20 MiB.

use vm_memory::GuestAddress;

use super::GuestMemory;
use super::layout::{HIGH_RAM_START, MMIO_START};

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is zero, not page-aligned, or too small to boot.
    #[error("guest memory of {0} MiB is not usable (at least 16 MiB)")]
    BadSize(u64),
    /// mmap failed.
    #[error("cannot map guest memory: {0}")]
    Map(#[from] vm_memory::mmap::FromRangesError),
}

/// The RAM ranges of a guest with `size` bytes: below the mmio gap, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(HIGH_RAM_START), (size - low) as usize));
    }
    ranges
}

/// Maps `mib` MiB of guest RAM.
pub fn create(mib: u64) -> Result<GuestMemory, MemoryError> {
    if !(16..=(1 << 20)).contains(&mib) {
        return Err(MemoryError::BadSize(mib));
    }
    Ok(GuestMemory::from_ranges(&ram_ranges(mib << 20))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemory as _;

    #[test]
    fn small_guests_are_one_range_large_ones_skip_the_gap() {
        assert_eq!(ram_ranges(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_START as usize));
        assert_eq!(
            r[1],
            (
                GuestAddress(HIGH_RAM_START),
                (4 << 30) - MMIO_START as usize
            )
        );
    }

    #[test]
    fn create_checks_the_size() {
        assert!(matches!(create(0), Err(MemoryError::BadSize(0))));
        let mem = create(64).unwrap();
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
