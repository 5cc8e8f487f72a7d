//! The inode numbers the guest sees: stable for as long as the share is served, whatever the
//! guest forgets and looks up again (git's index and tar compare them).
//!
//! A file on the share root's own device shows its host inode number. A file on another device
//! (a bind mount inside the share) shows its host number with a small per-device index in the
//! top [`DEVICE_BITS`] bits; indexes are given in the order devices are first seen and kept
//! for the session. Hard links show one number, as on the host.

use std::collections::HashMap;

/// Bits of a guest inode number that hold the device index.
pub(in super::super) const DEVICE_BITS: u32 = 8;
const INO_BITS: u32 = u64::BITS - DEVICE_BITS;
const INO_MASK: u64 = (1 << INO_BITS) - 1;
/// The last index; devices beyond it share it.
const MAX_INDEX: u64 = (1 << DEVICE_BITS) - 1;

/// Device numbers -> the index in guest inode numbers.
#[derive(Debug)]
pub(in super::super) struct InoMap {
    root_dev: u64,
    indexes: HashMap<u64, u64>,
}

impl InoMap {
    /// A map where `root_dev` (the share root's device) keeps host numbers.
    pub(in super::super) fn new(root_dev: u64) -> Self {
        InoMap {
            root_dev,
            indexes: HashMap::new(),
        }
    }

    /// The guest's number for host inode `ino` on device `dev`.
    pub(in super::super) fn guest_ino(&mut self, dev: u64, ino: u64) -> u64 {
        if dev == self.root_dev {
            return ino;
        }
        let next = (self.indexes.len() as u64 + 1).min(MAX_INDEX);
        let index = *self.indexes.entry(dev).or_insert(next);
        (index << INO_BITS) | (ino & INO_MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_device_numbers_pass_through_others_get_an_index() {
        let mut map = InoMap::new(10);
        assert_eq!(map.guest_ino(10, 1234), 1234);
        let a = map.guest_ino(20, 5);
        let b = map.guest_ino(30, 5);
        assert_ne!(a, b);
        assert_eq!(a & INO_MASK, 5);
        assert_eq!(a >> INO_BITS, 1);
        assert_eq!(b >> INO_BITS, 2);
        // Stable.
        assert_eq!(map.guest_ino(20, 5), a);
        // Devices beyond the last index share it.
        for dev in 100..400 {
            map.guest_ino(dev, 1);
        }
        assert_eq!(map.guest_ino(1000, 7) >> INO_BITS, MAX_INDEX);
    }
}
