//! The inode table: every inode the guest knows, without a descriptor each.
//!
//! An inode (FUSE nodeid = its id here, [`ROOT_ID`] the share's root) records its identity
//! (device, inode number, file type), its lookup count (the guest's references), and how to
//! reach it again: the names it is known by, each a parent inode and a name in it (hard links
//! and bind mounts give several, at most [`MAX_NAMES`], the most recently verified first).
//! Each name keeps its parent in the table (a child count), so a walk from the root can always
//! reach a known inode: an inode goes when its lookup count and child count are both 0.
//!
//! An inode that lost its last name while the guest still references it (an unlinked, open
//! file) can have its descriptor *pinned* here, out of the cache's reach, until it goes.
//! The table holds no other descriptors and makes no system calls.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::sync::Arc;

pub(in super::super) use fuse_backend_rs::api::filesystem::ROOT_ID;

/// The most names recorded for one inode; older ones are dropped past it.
pub(in super::super) const MAX_NAMES: usize = 8;
/// The most inodes the table holds: each costs memory, and a guest that never forgets could
/// otherwise grow it without bound (lookups beyond it fail with `ENFILE`).
pub(in super::super) const MAX_INODES: usize = 1 << 21;
/// The longest chain of parents followed (a share deeper than this is not walked back).
pub(in super::super) const MAX_DEPTH: usize = 4096;

/// What a host inode is: its device, number and file type (`st_mode & S_IFMT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in super::super) struct Identity {
    pub(in super::super) dev: u64,
    pub(in super::super) ino: u64,
    pub(in super::super) kind: u32,
}

impl Identity {
    /// The identity in `st`.
    pub(in super::super) fn of(st: &libc::stat64) -> Self {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
            kind: st.st_mode & libc::S_IFMT,
        }
    }

    /// Whether it is a directory.
    pub(in super::super) fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

/// A file's size and times: while they stay the same, its data is taken to be unchanged
/// (see `data_cache.rs` for the one race this leaves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in super::super) struct Stamp {
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp in `st`.
    pub(in super::super) fn of(st: &libc::stat64) -> Self {
        Stamp {
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// One way to reach an inode: the entry `name` in the directory inode `parent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in super::super) struct InodeName {
    pub(in super::super) parent: u64,
    pub(in super::super) name: CString,
}

#[derive(Debug)]
struct Inode {
    identity: Identity,
    lookups: u64,
    /// Names of other inodes with this one as their parent.
    children: u64,
    names: Vec<InodeName>,
    pinned: Option<Arc<OwnedFd>>,
    /// What the guest's cache of the file's data reflects (see `data_cache.rs`).
    stamp: Option<Stamp>,
}

/// The inodes the guest knows (see the module docs).
#[derive(Debug)]
pub(in super::super) struct InodeTable {
    inodes: HashMap<u64, Inode>,
    /// (dev, ino) -> id, for inodes reachable by a name or pinned.
    by_identity: HashMap<(u64, u64), u64>,
    next_id: u64,
    pinned: usize,
    pinned_cap: usize,
    /// Inodes dropped since the last [`InodeTable::take_dropped`].
    dropped: Vec<u64>,
}

impl InodeTable {
    /// A table holding only the root, whose identity is `root`; at most `pinned_cap` inodes
    /// pinned at a time.
    pub(in super::super) fn new(root: Identity, pinned_cap: usize) -> Self {
        let mut table = InodeTable {
            inodes: HashMap::new(),
            by_identity: HashMap::new(),
            next_id: ROOT_ID + 1,
            pinned: 0,
            pinned_cap,
            dropped: Vec::new(),
        };
        table.inodes.insert(
            ROOT_ID,
            Inode {
                identity: root,
                lookups: 1,
                children: 0,
                names: Vec::new(),
                pinned: None,
                stamp: None,
            },
        );
        table.by_identity.insert((root.dev, root.ino), ROOT_ID);
        table
    }

    /// The stamp last recorded for inode `id`.
    pub(in super::super) fn stamp(&self, id: u64) -> Option<Stamp> {
        self.inodes.get(&id)?.stamp
    }

    /// Records `stamp` for inode `id` (kept until the inode goes).
    pub(in super::super) fn set_stamp(&mut self, id: u64, stamp: Stamp) {
        if let Some(inode) = self.inodes.get_mut(&id) {
            inode.stamp = Some(stamp);
        }
    }

    /// Whether every name inode `id` is known by lies under the root's entry `top` (each
    /// followed up through its parents' first names). False for the root itself and for an
    /// inode without names.
    pub(in super::super) fn only_under(&self, id: u64, top: &CStr) -> bool {
        let Some(inode) = self.inodes.get(&id) else {
            return false;
        };
        !inode.names.is_empty()
            && inode
                .names
                .iter()
                .all(|name| self.top_name(name).is_some_and(|found| found == top))
    }

    /// The root's entry that `name` lies under, following first names up (bounded).
    fn top_name<'a>(&'a self, mut name: &'a InodeName) -> Option<&'a CStr> {
        for _ in 0..MAX_DEPTH {
            if name.parent == ROOT_ID {
                return Some(&name.name);
            }
            name = self.inodes.get(&name.parent)?.names.first()?;
        }
        None
    }

    /// The number of inodes, the root included.
    pub(in super::super) fn len(&self) -> usize {
        self.inodes.len()
    }

    /// The identity of inode `id`.
    pub(in super::super) fn identity(&self, id: u64) -> Option<Identity> {
        self.inodes.get(&id).map(|inode| inode.identity)
    }

    /// The lookup count of inode `id`.
    #[cfg(test)]
    pub(in super::super) fn lookups(&self, id: u64) -> Option<u64> {
        self.inodes.get(&id).map(|inode| inode.lookups)
    }

    /// The names of inode `id`, the most recently verified first.
    pub(in super::super) fn names(&self, id: u64) -> &[InodeName] {
        self.inodes
            .get(&id)
            .map(|inode| inode.names.as_slice())
            .unwrap_or_default()
    }

    /// The inode known as `name` in `parent`, if any. A scan of the table: for the rare
    /// caller (a host deletion being told to the guest, `nudge.rs`), not for requests.
    pub(in super::super) fn named(&self, parent: u64, name: &CStr) -> Option<u64> {
        self.inodes.iter().find_map(|(id, inode)| {
            inode
                .names
                .iter()
                .any(|n| n.parent == parent && n.name.as_c_str() == name)
                .then_some(*id)
        })
    }

    /// One more lookup of inode `id` (an entry the guest is given without a host lookup);
    /// false when the table no longer has it.
    pub(in super::super) fn add_lookup(&mut self, id: u64) -> bool {
        if id == ROOT_ID {
            return true;
        }
        match self.inodes.get_mut(&id) {
            Some(inode) => {
                inode.lookups = inode.lookups.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// The inode with identity `identity`, if it is known (and reachable).
    pub(in super::super) fn find(&self, identity: &Identity) -> Option<u64> {
        let id = *self.by_identity.get(&(identity.dev, identity.ino))?;
        (self.identity(id)? == *identity).then_some(id)
    }

    /// Records that a lookup found `identity` as `name` in `parent`: the known inode gets one
    /// more lookup and the name, or a new inode is made. Returns its id, or None when the
    /// table is full.
    pub(in super::super) fn record_lookup(
        &mut self,
        parent: u64,
        name: &CStr,
        identity: Identity,
    ) -> Option<u64> {
        if let Some(id) = self.find(&identity) {
            if id != ROOT_ID
                && let Some(inode) = self.inodes.get_mut(&id)
            {
                inode.lookups = inode.lookups.saturating_add(1);
            }
            self.add_name(id, parent, name);
            return Some(id);
        }
        if self.inodes.len() >= MAX_INODES {
            return None;
        }
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        self.inodes.insert(
            id,
            Inode {
                identity,
                lookups: 1,
                children: 0,
                names: Vec::new(),
                pinned: None,
                stamp: None,
            },
        );
        // A stale entry of the same (dev, ino) (a different file type) is no longer found.
        self.by_identity.insert((identity.dev, identity.ino), id);
        self.add_name(id, parent, name);
        Some(id)
    }

    /// Records that inode `id` is also (or again) `name` in `parent`, as its first name. The
    /// root has no names; a name that would make a directory its own ancestor is not kept.
    pub(in super::super) fn add_name(&mut self, id: u64, parent: u64, name: &CStr) {
        if id == ROOT_ID || !self.inodes.contains_key(&parent) {
            return;
        }
        let entry = InodeName {
            parent,
            name: name.to_owned(),
        };
        let Some(inode) = self.inodes.get_mut(&id) else {
            return;
        };
        if let Some(pos) = inode.names.iter().position(|n| *n == entry) {
            let found = inode.names.remove(pos);
            inode.names.insert(0, found);
            return;
        }
        if inode.identity.is_dir() && self.is_ancestor(id, parent) {
            return;
        }
        let Some(inode) = self.inodes.get_mut(&id) else {
            return;
        };
        inode.names.insert(0, entry);
        let overflow = (inode.names.len() > MAX_NAMES)
            .then(|| inode.names.pop())
            .flatten();
        let identity = inode.identity;
        self.by_identity.insert((identity.dev, identity.ino), id);
        self.add_child(parent);
        if let Some(old) = overflow {
            self.remove_child(old.parent);
        }
    }

    /// Forgets that inode `id` is `name` in `parent`; returns whether it was recorded.
    pub(in super::super) fn remove_name(&mut self, id: u64, parent: u64, name: &CStr) -> bool {
        let Some(inode) = self.inodes.get_mut(&id) else {
            return false;
        };
        let Some(pos) = inode
            .names
            .iter()
            .position(|n| n.parent == parent && n.name.as_c_str() == name)
        else {
            return false;
        };
        inode.names.remove(pos);
        if inode.names.is_empty() && inode.pinned.is_none() {
            self.unregister(id);
        }
        self.remove_child(parent);
        self.drop_if_unused(id);
        true
    }

    /// Whether unlinking or replacing `name` in `parent` leaves inode `id` still referenced by
    /// the guest with no other known name: its descriptor should then be pinned first.
    pub(in super::super) fn needs_pin(&self, id: u64, parent: u64, name: &CStr) -> bool {
        self.inodes.get(&id).is_some_and(|inode| {
            id != ROOT_ID
                && inode.lookups > 0
                && inode.pinned.is_none()
                && inode
                    .names
                    .iter()
                    .all(|n| n.parent == parent && n.name.as_c_str() == name)
        })
    }

    /// Pins `fd` as inode `id`'s descriptor; false (and not kept) past the pin budget.
    pub(in super::super) fn pin(&mut self, id: u64, fd: Arc<OwnedFd>) -> bool {
        if self.pinned >= self.pinned_cap {
            return false;
        }
        let Some(inode) = self.inodes.get_mut(&id) else {
            return false;
        };
        if inode.pinned.is_none() {
            self.pinned += 1;
        }
        inode.pinned = Some(fd);
        true
    }

    /// Takes inode `id`'s pinned descriptor back (the name it lost was not lost after all).
    pub(in super::super) fn unpin(&mut self, id: u64) -> Option<Arc<OwnedFd>> {
        let fd = self.inodes.get_mut(&id)?.pinned.take()?;
        self.pinned = self.pinned.saturating_sub(1);
        Some(fd)
    }

    /// Inode `id`'s pinned descriptor.
    pub(in super::super) fn pinned(&self, id: u64) -> Option<Arc<OwnedFd>> {
        self.inodes.get(&id)?.pinned.clone()
    }

    /// The number of pinned descriptors.
    pub(in super::super) fn pinned_count(&self) -> usize {
        self.pinned
    }

    /// Takes `count` lookups from inode `id` (FORGET); it goes when nothing needs it.
    pub(in super::super) fn forget(&mut self, id: u64, count: u64) {
        if id == ROOT_ID {
            return;
        }
        if let Some(inode) = self.inodes.get_mut(&id) {
            inode.lookups = inode.lookups.saturating_sub(count);
            self.drop_if_unused(id);
        }
    }

    /// The ids of the inodes dropped since the last call (their cached descriptors must go).
    pub(in super::super) fn take_dropped(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.dropped)
    }

    /// Whether `ancestor` is `id` or one of its parents, through any of their names. A chain
    /// too long to follow counts as yes.
    fn is_ancestor(&self, ancestor: u64, id: u64) -> bool {
        let mut seen = HashSet::new();
        let mut todo = vec![id];
        while let Some(current) = todo.pop() {
            if current == ancestor || seen.len() > MAX_DEPTH {
                return true;
            }
            if seen.insert(current) {
                todo.extend(self.names(current).iter().map(|n| n.parent));
            }
        }
        false
    }

    fn add_child(&mut self, parent: u64) {
        if let Some(inode) = self.inodes.get_mut(&parent) {
            inode.children = inode.children.saturating_add(1);
        }
    }

    fn remove_child(&mut self, parent: u64) {
        if let Some(inode) = self.inodes.get_mut(&parent) {
            inode.children = inode.children.saturating_sub(1);
            self.drop_if_unused(parent);
        }
    }

    /// Stops finding inode `id` by its identity (it can no longer be reached).
    fn unregister(&mut self, id: u64) {
        if let Some(identity) = self.identity(id)
            && self.by_identity.get(&(identity.dev, identity.ino)) == Some(&id)
        {
            self.by_identity.remove(&(identity.dev, identity.ino));
        }
    }

    /// Drops inode `id` if the guest no longer references it and no known name goes through
    /// it, then its parents in turn.
    fn drop_if_unused(&mut self, id: u64) {
        let mut todo = vec![id];
        while let Some(id) = todo.pop() {
            let unused = self
                .inodes
                .get(&id)
                .is_some_and(|inode| inode.lookups == 0 && inode.children == 0);
            if id == ROOT_ID || !unused {
                continue;
            }
            self.unregister(id);
            let Some(inode) = self.inodes.remove(&id) else {
                continue;
            };
            if inode.pinned.is_some() {
                self.pinned = self.pinned.saturating_sub(1);
            }
            self.dropped.push(id);
            for name in inode.names {
                if let Some(parent) = self.inodes.get_mut(&name.parent) {
                    parent.children = parent.children.saturating_sub(1);
                    todo.push(name.parent);
                }
            }
        }
    }

    /// Back to the root alone (a new FUSE session).
    pub(in super::super) fn clear(&mut self) {
        let root = self.inodes.remove(&ROOT_ID);
        self.dropped.extend(self.inodes.keys().copied());
        self.inodes.clear();
        self.by_identity.clear();
        self.pinned = 0;
        if let Some(mut root) = root {
            root.children = 0;
            self.by_identity
                .insert((root.identity.dev, root.identity.ino), ROOT_ID);
            self.inodes.insert(ROOT_ID, root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(ino: u64, kind: u32) -> Identity {
        Identity { dev: 1, ino, kind }
    }
    const DIR: u32 = libc::S_IFDIR;
    const REG: u32 = libc::S_IFREG;

    fn table() -> InodeTable {
        InodeTable::new(ident(1, DIR), 4)
    }

    fn fd() -> Arc<OwnedFd> {
        Arc::new(OwnedFd::from(std::fs::File::open("/").unwrap()))
    }

    #[test]
    fn lookups_count_and_forget_drops() {
        let mut t = table();
        let a = t.record_lookup(ROOT_ID, c"a", ident(10, REG)).unwrap();
        assert_eq!(t.record_lookup(ROOT_ID, c"a", ident(10, REG)).unwrap(), a);
        assert_eq!(t.lookups(a), Some(2));
        t.forget(a, 1);
        assert_eq!(t.len(), 2);
        t.forget(a, 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_dropped(), [a]);
        // The root is never forgotten.
        t.forget(ROOT_ID, u64::MAX);
        assert_eq!(t.len(), 1);
        // Nor found again as a new inode.
        assert_eq!(
            t.record_lookup(ROOT_ID, c"self", ident(1, DIR)).unwrap(),
            ROOT_ID
        );
        assert!(t.names(ROOT_ID).is_empty());
    }

    #[test]
    fn parents_stay_while_children_are_known() {
        let mut t = table();
        let d = t.record_lookup(ROOT_ID, c"d", ident(10, DIR)).unwrap();
        let f = t.record_lookup(d, c"f", ident(11, REG)).unwrap();
        // A hostile guest forgets the parent first: it stays for the walk to the child.
        t.forget(d, 1);
        assert_eq!(t.len(), 3);
        assert_eq!(t.names(f)[0].parent, d);
        t.forget(f, 1);
        assert_eq!(t.len(), 1);
        let mut dropped = t.take_dropped();
        dropped.sort_unstable();
        assert_eq!(dropped, [d, f]);
    }

    #[test]
    fn hard_links_share_an_id_with_bounded_names() {
        let mut t = table();
        let a = t.record_lookup(ROOT_ID, c"a", ident(10, REG)).unwrap();
        for i in 0..20 {
            let name = CString::new(format!("l{i}")).unwrap();
            assert_eq!(t.record_lookup(ROOT_ID, &name, ident(10, REG)).unwrap(), a);
        }
        assert_eq!(t.names(a).len(), MAX_NAMES);
        assert_eq!(t.names(a)[0].name.as_c_str(), c"l19");
        // A different file type at the same number is another inode.
        assert_ne!(t.record_lookup(ROOT_ID, c"x", ident(10, DIR)).unwrap(), a);
    }

    #[test]
    fn names_follow_renames_and_unlinks() {
        let mut t = table();
        let d = t.record_lookup(ROOT_ID, c"d", ident(10, DIR)).unwrap();
        let f = t.record_lookup(ROOT_ID, c"f", ident(11, REG)).unwrap();
        assert!(t.remove_name(f, ROOT_ID, c"f"));
        assert!(!t.remove_name(f, ROOT_ID, c"f"));
        t.add_name(f, d, c"g");
        assert_eq!(
            t.names(f),
            [InodeName {
                parent: d,
                name: c"g".to_owned()
            }]
        );
        assert!(t.needs_pin(f, d, c"g"));
        assert!(!t.needs_pin(f, d, c"other"));
        assert!(t.pin(f, fd()));
        assert!(!t.needs_pin(f, d, c"g"));
        assert!(t.remove_name(f, d, c"g"));
        // Unlinked but referenced and pinned: still found by identity.
        assert_eq!(t.find(&ident(11, REG)), Some(f));
        assert!(t.pinned(f).is_some());
        t.forget(f, 1);
        assert_eq!(t.pinned_count(), 0);
        assert_eq!(t.find(&ident(11, REG)), None);
    }

    #[test]
    fn unpinned_orphans_are_not_found_by_identity() {
        let mut t = table();
        let f = t.record_lookup(ROOT_ID, c"f", ident(11, REG)).unwrap();
        assert!(t.remove_name(f, ROOT_ID, c"f"));
        assert_eq!(t.find(&ident(11, REG)), None);
        assert_ne!(t.record_lookup(ROOT_ID, c"n", ident(11, REG)).unwrap(), f);
    }

    #[test]
    fn the_pin_budget_is_kept() {
        let mut t = InodeTable::new(ident(1, DIR), 1);
        let a = t.record_lookup(ROOT_ID, c"a", ident(10, REG)).unwrap();
        let b = t.record_lookup(ROOT_ID, c"b", ident(11, REG)).unwrap();
        assert!(t.pin(a, fd()));
        assert!(!t.pin(b, fd()));
        assert!(t.unpin(a).is_some());
        assert!(t.pin(b, fd()));
    }

    #[test]
    fn a_directory_never_becomes_its_own_ancestor() {
        let mut t = table();
        let a = t.record_lookup(ROOT_ID, c"a", ident(10, DIR)).unwrap();
        let b = t.record_lookup(a, c"b", ident(11, DIR)).unwrap();
        // A bind mount of a onto a/b/c: the lookup finds a under b, not kept as a name.
        assert_eq!(t.record_lookup(b, c"c", ident(10, DIR)).unwrap(), a);
        assert_eq!(t.names(a).len(), 1);
        assert_eq!(t.names(a)[0].parent, ROOT_ID);
    }

    #[test]
    fn clear_keeps_the_root() {
        let mut t = table();
        let d = t.record_lookup(ROOT_ID, c"d", ident(10, DIR)).unwrap();
        t.record_lookup(d, c"f", ident(11, REG)).unwrap();
        t.clear();
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_dropped().len(), 2);
        assert_eq!(t.find(&ident(1, DIR)), Some(ROOT_ID));
    }

    #[test]
    fn only_under_follows_every_name_to_the_roots_entry() {
        let mut t = table();
        let rootfs = t.record_lookup(ROOT_ID, c"rootfs", ident(2, DIR)).unwrap();
        let binds = t.record_lookup(ROOT_ID, c"binds", ident(3, DIR)).unwrap();
        let etc = t.record_lookup(rootfs, c"etc", ident(4, DIR)).unwrap();
        let file = t.record_lookup(etc, c"hosts", ident(5, REG)).unwrap();
        assert!(t.only_under(file, c"rootfs"));
        assert!(t.only_under(etc, c"rootfs"));
        assert!(t.only_under(rootfs, c"rootfs"));
        assert!(!t.only_under(file, c"binds"));
        assert!(!t.only_under(ROOT_ID, c"rootfs"));
        // A second name under another entry (a hard link, the same file bound twice): no.
        t.record_lookup(binds, c"hosts", ident(5, REG)).unwrap();
        assert!(!t.only_under(file, c"rootfs"));
        assert!(!t.only_under(file, c"binds"));
        // Its name under `binds` gone: under `rootfs` alone again.
        assert!(t.remove_name(file, binds, c"hosts"));
        assert!(t.only_under(file, c"rootfs"));
    }

    #[test]
    fn a_stamp_lives_as_long_as_its_inode() {
        let mut t = table();
        let a = t.record_lookup(ROOT_ID, c"a", ident(10, REG)).unwrap();
        assert_eq!(t.stamp(a), None);
        // SAFETY: `stat64` is plain data; all zeroes is a valid value.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        st.st_size = 7;
        t.set_stamp(a, Stamp::of(&st));
        assert_eq!(t.stamp(a), Some(Stamp::of(&st)));
        st.st_ctime_nsec = 1;
        assert_ne!(t.stamp(a), Some(Stamp::of(&st)));
        t.forget(a, 1);
        let again = t.record_lookup(ROOT_ID, c"a", ident(10, REG)).unwrap();
        assert_eq!(t.stamp(again), None);
    }
}
