//! Reaching an inode's host descriptor: the inode table, the descriptor cache and the walk.
//!
//! An inode's `O_PATH` descriptor comes from the cache, from its pin, or (the root) is always
//! held. On a miss it is reopened by a walk: up the recorded names to the nearest ancestor with
//! a descriptor, then down one component at a time with
//! `openat(parent, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)`, each result checked against the
//! identity recorded for that inode. A missing name or a different file is `ESTALE`: a walk
//! never returns another file than the one the guest looked up, and never leaves the share (it
//! only goes down from the root through recorded, verified directories, never through a
//! symlink).

use std::collections::HashSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::super::state::fd_cache::FdCache;
use super::super::state::ino_map::InoMap;
use super::super::state::inodes::{Identity, InodeName, InodeTable, MAX_DEPTH, ROOT_ID};
use super::super::sys::{self, errno};

/// What the server knows about inodes, behind one lock.
#[derive(Debug)]
pub(in super::super) struct State {
    pub(in super::super) inodes: InodeTable,
    pub(in super::super) cache: FdCache,
    pub(in super::super) inos: InoMap,
    root: Arc<OwnedFd>,
}

/// `ENOENT` or `ENOTDIR` on the way to a recorded name: the name no longer leads there.
fn stale_if_gone(err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => errno(libc::ESTALE),
        _ => err,
    }
}

/// Opens `name` in `dir` as an inode descriptor if it still is `identity`, else `ESTALE`.
pub(in super::super) fn open_checked(
    dir: &OwnedFd,
    name: &CStr,
    identity: &Identity,
) -> io::Result<Arc<OwnedFd>> {
    let fd = sys::open_path(dir, name).map_err(stale_if_gone)?;
    let st = sys::fstat(&fd)?;
    if Identity::of(&st) != *identity {
        return Err(errno(libc::ESTALE));
    }
    Ok(Arc::new(fd))
}

impl State {
    /// The state of a share whose root descriptor is `root` (identity `root_identity`), with
    /// a cache of `cache_capacity` descriptors and at most `pinned_cap` pinned.
    pub(in super::super) fn new(
        root: Arc<OwnedFd>,
        root_identity: Identity,
        cache_capacity: usize,
        pinned_cap: usize,
    ) -> Self {
        State {
            inodes: InodeTable::new(root_identity, pinned_cap),
            cache: FdCache::new(cache_capacity),
            inos: InoMap::new(root_identity.dev),
            root,
        }
    }

    /// Inode `id`'s descriptor if one is at hand (root, pin, cache).
    fn held(&mut self, id: u64) -> Option<Arc<OwnedFd>> {
        if id == ROOT_ID {
            return Some(Arc::clone(&self.root));
        }
        self.inodes.pinned(id).or_else(|| self.cache.get(id))
    }

    /// Inode `id`'s descriptor: held, or reopened by a walk (see the module docs). `EBADF`
    /// for an id the table does not hold, `ESTALE` when no recorded name leads to it.
    pub(in super::super) fn resolve(&mut self, id: u64) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.held(id) {
            return Ok(fd);
        }
        let identity = self.inodes.identity(id).ok_or_else(|| errno(libc::EBADF))?;
        let names = self.inodes.names(id).to_vec();
        let mut last = errno(libc::ESTALE);
        for name in names {
            match self.walk(id, &identity, &name) {
                Ok(fd) => return Ok(fd),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// Reopens inode `id` (`identity`) as `name`: the parents' chain up to a held descriptor,
    /// then down, caching each descriptor opened.
    fn walk(&mut self, id: u64, identity: &Identity, name: &InodeName) -> io::Result<Arc<OwnedFd>> {
        let mut path: Vec<(u64, InodeName, Identity)> = Vec::new();
        let mut on_path = HashSet::from([id]);
        let mut current = name.parent;
        let mut fd = loop {
            if let Some(fd) = self.held(current) {
                break fd;
            }
            if path.len() >= MAX_DEPTH || !on_path.insert(current) {
                return Err(errno(libc::ESTALE));
            }
            let current_identity = self
                .inodes
                .identity(current)
                .ok_or_else(|| errno(libc::ESTALE))?;
            let up = self
                .inodes
                .names(current)
                .iter()
                .find(|n| !on_path.contains(&n.parent))
                .cloned()
                .ok_or_else(|| errno(libc::ESTALE))?;
            let parent = up.parent;
            path.push((current, up, current_identity));
            current = parent;
        };
        for (dir_id, dir_name, dir_identity) in path.iter().rev() {
            let next = open_checked(&fd, &dir_name.name, dir_identity)?;
            self.cache.insert(*dir_id, Arc::clone(&next));
            fd = next;
        }
        let found = open_checked(&fd, &name.name, identity)?;
        self.cache.insert(id, Arc::clone(&found));
        Ok(found)
    }
}
