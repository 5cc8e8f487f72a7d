//! A bounded least-recently-used cache of inode descriptors (`O_PATH`), keyed by inode id.
//!
//! The cache is what bounds the descriptors the server holds for inodes: past its capacity the
//! least recently used one is closed, and the inode is reopened later by a walk from an
//! ancestor (see `resolve.rs`). Descriptors are handed out as `Arc`s, so one in use by a
//! request stays open even if it is evicted meanwhile (it closes when the request drops it).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// The inode descriptors most recently used, at most `capacity` of them.
#[derive(Debug)]
pub(in super::super) struct FdCache {
    capacity: usize,
    /// Inode id -> its descriptor and the tick of its last use.
    entries: HashMap<u64, (Arc<OwnedFd>, u64)>,
    /// Tick of last use -> inode id, oldest first.
    order: BTreeMap<u64, u64>,
    tick: u64,
}

impl FdCache {
    /// An empty cache of at most `capacity` descriptors (at least 1).
    pub(in super::super) fn new(capacity: usize) -> Self {
        FdCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// The most descriptors the cache holds.
    #[cfg(test)]
    pub(in super::super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The descriptors it holds now.
    pub(in super::super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick = self.tick.wrapping_add(1);
        self.tick
    }

    /// The descriptor of inode `id`, now the most recently used.
    pub(in super::super) fn get(&mut self, id: u64) -> Option<Arc<OwnedFd>> {
        let tick = self.next_tick();
        let (fd, used) = self.entries.get_mut(&id)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, id);
        Some(Arc::clone(fd))
    }

    /// Caches `fd` for inode `id` (replacing any), evicting the least recently used beyond
    /// the capacity.
    pub(in super::super) fn insert(&mut self, id: u64, fd: Arc<OwnedFd>) {
        self.remove(id);
        let tick = self.next_tick();
        self.entries.insert(id, (fd, tick));
        self.order.insert(tick, id);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// Takes inode `id`'s descriptor out of the cache.
    pub(in super::super) fn remove(&mut self, id: u64) -> Option<Arc<OwnedFd>> {
        let (fd, used) = self.entries.remove(&id)?;
        self.order.remove(&used);
        Some(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Arc<OwnedFd> {
        Arc::new(OwnedFd::from(std::fs::File::open("/").unwrap()))
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = FdCache::new(2);
        cache.insert(1, fd());
        cache.insert(2, fd());
        assert!(cache.get(1).is_some(), "1 is now the most recent");
        cache.insert(3, fd());
        assert_eq!(cache.len(), 2);
        assert!(cache.get(2).is_none(), "2 was the least recently used");
        assert!(cache.get(1).is_some());
        assert!(cache.get(3).is_some());
    }

    #[test]
    fn an_evicted_descriptor_in_use_stays_open() {
        let mut cache = FdCache::new(1);
        cache.insert(1, fd());
        let held = cache.get(1).unwrap();
        cache.insert(2, fd());
        assert!(cache.get(1).is_none());
        assert!(super::super::super::sys::fstat(&*held).is_ok());
    }

    #[test]
    fn insert_replaces_and_remove_forgets() {
        let mut cache = FdCache::new(4);
        cache.insert(1, fd());
        cache.insert(1, fd());
        assert_eq!(cache.len(), 1);
        assert!(cache.remove(1).is_some());
        assert!(cache.remove(1).is_none());
        assert_eq!(cache.len(), 0);
        assert_eq!(FdCache::new(0).capacity(), 1);
        cache.insert(5, fd());
        assert!(cache.remove(5).is_some());
        assert_eq!(cache.len(), 0);
    }
}
