//! Requests that change names: MKNOD, MKDIR, SYMLINK (as the request's uid/gid), LINK,
//! UNLINK, RMDIR, RENAME and RENAME2. Each keeps the inode table's names in step with the
//! host, and pins the descriptor of an inode that loses its last known name while the guest
//! still references it (an unlinked but open file stays usable until FORGET).

use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::{Context, Entry};

use super::super::creds::ScopedCreds;
use super::super::state::inodes::Identity;
use super::super::state::resolve::{State, open_checked};
use super::super::sys::{self, errno};
use super::super::{ShareFs, check_name, purge_dropped};

/// A known inode about to lose the name `(parent, name)`.
#[derive(Clone, Copy, Debug)]
struct Loss {
    id: u64,
    /// Whether its descriptor was pinned for it.
    pinned: bool,
}

impl ShareFs {
    /// Makes a node `name` in `parent` with `make` as the request's uid/gid, then looks it up.
    fn make_node(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        make: impl FnOnce(&OwnedFd) -> io::Result<()>,
    ) -> io::Result<Entry> {
        check_name(name)?;
        let dir = self.inode_fd(parent)?;
        {
            let _creds = ScopedCreds::switch(ctx.uid, ctx.gid)?;
            make(&dir)?;
        }
        self.lookup_entry(parent, name)
    }

    /// MKNOD: regular files, FIFOs and sockets only (device nodes are refused, as the request
    /// screen does first).
    pub(in super::super) fn do_mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        match mode & libc::S_IFMT {
            0 | libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => {}
            _ => return Err(errno(libc::EPERM)),
        }
        self.make_node(ctx, parent, name, |dir| {
            sys::mknodat(dir, name, mode & !umask, u64::from(rdev))
        })
    }

    pub(in super::super) fn do_mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.make_node(ctx, parent, name, |dir| {
            sys::mkdirat(dir, name, mode & !umask)
        })
    }

    /// SYMLINK: the target is stored as given, never resolved on the host.
    pub(in super::super) fn do_symlink(
        &self,
        ctx: &Context,
        target: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.make_node(ctx, parent, name, |dir| sys::symlinkat(target, dir, name))
    }

    /// LINK: a new name for inode `id`, made through its descriptor; the entry is the same
    /// inode (same nodeid, same inode number) with the name recorded as an alias.
    pub(in super::super) fn do_link(
        &self,
        id: u64,
        new_parent: u64,
        new_name: &CStr,
    ) -> io::Result<Entry> {
        check_name(new_name)?;
        let fd = self.inode_fd(id)?;
        let dir = self.inode_fd(new_parent)?;
        sys::link_fd(&self.proc_self_fd, &fd, &*dir, new_name)?;
        self.lookup_entry(new_parent, new_name)
    }

    /// UNLINK (`flags` 0) and RMDIR (`AT_REMOVEDIR`).
    pub(in super::super) fn do_remove(
        &self,
        parent: u64,
        name: &CStr,
        flags: libc::c_int,
    ) -> io::Result<()> {
        check_name(name)?;
        let dir = self.inode_fd(parent)?;
        // The table is held from before the name goes until it has forgotten it (see
        // `do_rename`).
        let mut state = self.state();
        let loss = prepare_loss(&mut state, &dir, parent, name);
        let result = sys::unlinkat(&*dir, name, flags);
        finish_loss(&mut state, loss, parent, name, result.is_ok());
        result
    }

    /// RENAME and RENAME2 (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`; `RENAME_WHITEOUT` refused).
    pub(in super::super) fn do_rename(
        &self,
        old_parent: u64,
        old_name: &CStr,
        new_parent: u64,
        new_name: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        check_name(old_name)?;
        check_name(new_name)?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(errno(libc::EINVAL));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let old_dir = self.inode_fd(old_parent)?;
        let new_dir = self.inode_fd(new_parent)?;
        // The table is held from before the names change on the host until it has followed
        // them: a walk of another request meanwhile (requests are served on several threads)
        // would find the host's new names and the table's old ones, and answer ESTALE for a
        // file that is there; an inode number the host reuses meanwhile would be taken for
        // the one that went.
        let mut state = self.state();
        let moved = known_at(&state, &old_dir, old_name);
        let other = known_at(&state, &new_dir, new_name);
        // Two names of one inode: the kernel does nothing, nor do we.
        let same = moved.is_some() && moved == other;
        let loss = if exchange || same {
            None
        } else {
            prepare_loss(&mut state, &new_dir, new_parent, new_name)
        };
        let result = sys::renameat2(&*old_dir, old_name, &*new_dir, new_name, flags);
        if same || result.is_err() {
            finish_loss(&mut state, loss, new_parent, new_name, false);
            return result;
        }
        // The replaced inode (if any) loses the new name first, then names move.
        finish_loss(&mut state, loss, new_parent, new_name, true);
        if let Some(id) = moved {
            state.inodes.add_name(id, new_parent, new_name);
        }
        if exchange && let Some(id) = other {
            state.inodes.add_name(id, old_parent, old_name);
        }
        if let Some(id) = moved {
            state.inodes.remove_name(id, old_parent, old_name);
        }
        if exchange && let Some(id) = other {
            state.inodes.remove_name(id, new_parent, new_name);
        }
        purge_dropped(&mut state);
        Ok(())
    }
}

/// The known inode that `name` in `dir` is now, if any.
fn known_at(state: &State, dir: &OwnedFd, name: &CStr) -> Option<u64> {
    let st = sys::stat_at(dir, name).ok()?;
    state.inodes.find(&Identity::of(&st))
}

/// Before `name` in `parent` goes: the known inode it is, with its descriptor pinned if the
/// guest still references it and knows it by no other name.
fn prepare_loss(state: &mut State, dir: &Arc<OwnedFd>, parent: u64, name: &CStr) -> Option<Loss> {
    let st = sys::stat_at(&**dir, name).ok()?;
    let identity = Identity::of(&st);
    let id = state.inodes.find(&identity)?;
    if !state.inodes.needs_pin(id, parent, name) {
        return Some(Loss { id, pinned: false });
    }
    let fd = match state.cache.remove(id) {
        Some(fd) => Some(fd),
        None => open_checked(dir, name, &identity).ok(),
    };
    let pinned = match fd {
        Some(fd) if state.inodes.pin(id, Arc::clone(&fd)) => true,
        Some(fd) => {
            state.cache.insert(id, fd);
            false
        }
        None => false,
    };
    Some(Loss { id, pinned })
}

/// After the name went (`done`), or did not: the table forgets it, or the pin is undone.
fn finish_loss(state: &mut State, loss: Option<Loss>, parent: u64, name: &CStr, done: bool) {
    let Some(loss) = loss else {
        return;
    };
    if done {
        state.inodes.remove_name(loss.id, parent, name);
        purge_dropped(state);
    } else if loss.pinned
        && let Some(fd) = state.inodes.unpin(loss.id)
    {
        state.cache.insert(loss.id, fd);
    }
}
