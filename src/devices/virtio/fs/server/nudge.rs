//! Host edits made seen by the guest's watchers ("nudges").
//!
//! The guest's inotify only sees what goes through its own VFS; a file a host process edits
//! in a bind source reaches the guest through LOOKUP, GETATTR and READ, none of which raises
//! an event. So for each host edit (found by `host_watch.rs`) guest-init repeats it through
//! the guest's VFS, on the share: a write-open and a truncate to the same size for a
//! modification, `mknod`/`mkdir`/`symlink` for a creation, `unlink`/`rmdir` for a deletion,
//! `rename` for a move. The guest kernel raises the events a local edit raises (IN_MODIFY and
//! IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_MOVED_FROM/TO) and sends its requests here, where
//! the server recognises them (guest pid 1, guest-init's main thread, and the one edit being
//! nudged) and answers them as done without doing them again: the edit already happened.
//!
//! These answers only ever do less on the host than the request asks (an OPEN for writing is
//! opened read-only, a truncate changes nothing, the rest only updates the inode table), so a
//! guest that forges them can fool only itself. While a nudge is under way, every other
//! changing request of pid 1 is refused: a path that no longer leads where the edit was
//! (a directory replaced meanwhile) must not turn the repeat into a real edit. A nudge guest-init did not answer in time
//! (a paused guest) is *abandoned*: should guest-init repeat it later, when the server no
//! longer expects it, its calls are refused rather than done (they would edit the host: undo
//! a newer host edit, truncate a file the host has grown).
//!
//! Edits the guest made itself come back from the host's watch too: the server notes what
//! each changing request touched ([`ShareFs::note_entry`], [`ShareFs::note_file`]) and a host
//! event matching a note younger than [`OWN_EDIT_WINDOW`] is not nudged.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuse_backend_rs::api::filesystem::Entry;

use super::state::inodes::Identity;
use super::sys::{self, errno};
use super::{ShareFs, lock};

/// The pid (in the guest's first pid namespace) whose requests can be nudges: guest-init.
pub(super) const NUDGER_PID: i32 = 1;
/// How long after a request of the guest changed a name or a file a host event there is
/// taken for that change.
pub const OWN_EDIT_WINDOW: Duration = Duration::from_secs(2);
/// The most notes kept; older ones are dropped first when it is reached.
const MAX_NOTES: usize = 16 * 1024;
/// The most abandoned nudges remembered (the host side waits for the guest to answer again
/// before it sends another, so there is rarely more than one).
const MAX_ABANDONED: usize = 256;

/// A host directory, by identity, with its path relative to the share's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDir {
    /// Device and inode number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Where it is in the share (`binds/0/src`).
    pub path: PathBuf,
}

/// One edit a host process made under a watched directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEdit {
    /// A file's data changed (IN_MODIFY, IN_CLOSE_WRITE).
    Modified(HostDir, CString),
    /// A name appeared (IN_CREATE, or IN_MOVED_TO from outside the watch).
    Created(HostDir, CString),
    /// A name went (IN_DELETE, or IN_MOVED_FROM to outside the watch).
    Deleted(HostDir, CString),
    /// A name moved (IN_MOVED_FROM and IN_MOVED_TO of one rename).
    Moved(HostDir, CString, HostDir, CString),
}

/// What a created entry is, for guest-init to make the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO.
    Fifo,
    /// A Unix socket.
    Socket,
}

/// What guest-init repeats, on paths relative to the share's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nudge {
    /// Open for writing, truncate to the size it has, close.
    Modify(PathBuf),
    /// Make an entry of this kind.
    Create(PathBuf, NodeKind),
    /// Remove the entry (`rmdir` when `true`).
    Delete(PathBuf, bool),
    /// Rename the first to the second.
    Move(PathBuf, PathBuf),
}

/// The edit being nudged: which requests of guest-init are answered as done.
#[derive(Clone, Debug)]
pub(super) enum Pending {
    Modify {
        identity: Identity,
    },
    Create {
        parent: u64,
        name: CString,
    },
    Delete {
        parent: u64,
        name: CString,
        id: u64,
        identity: Identity,
    },
    Move {
        parent: u64,
        name: CString,
        to_parent: u64,
        to_name: CString,
        id: u64,
        /// The moved inode's attributes at its new name.
        st: libc::stat64,
        /// The inode the move replaced, if the guest knows it.
        replaced: Option<(u64, Identity)>,
    },
}

/// What a request of the guest changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// The name in a directory (dev, ino).
    Entry(u64, u64, CString),
    /// A file's data or attributes (dev, ino).
    File(u64, u64),
}

/// The nudge under way and the notes of the guest's own changes.
#[derive(Debug, Default)]
pub(super) struct Nudges {
    pending: Option<Pending>,
    abandoned: std::collections::VecDeque<Pending>,
    notes: HashMap<Key, Instant>,
}

/// How a request of guest-init relates to the nudges.
#[derive(Debug)]
pub(super) enum Part {
    /// Not a nudge's: served as anyone's.
    No,
    /// The nudge under way's (the one matched): answered as done.
    Current(Box<Pending>),
    /// An abandoned nudge's: refused.
    Late,
}

impl Nudges {
    fn note(&mut self, key: Key) {
        let now = Instant::now();
        if self.notes.len() >= MAX_NOTES {
            self.notes
                .retain(|_, at| now.duration_since(*at) < OWN_EDIT_WINDOW);
            if self.notes.len() >= MAX_NOTES {
                self.notes.clear();
            }
        }
        self.notes.insert(key, now);
    }

    /// Whether the guest changed `key` within the window before `seen`.
    fn noted(&self, key: &Key, seen: Instant) -> bool {
        self.notes
            .get(key)
            .is_some_and(|at| seen.saturating_duration_since(*at) < OWN_EDIT_WINDOW)
    }
}

/// `st`'s kind as guest-init makes it; devices are not nudged.
fn node_kind(st: &libc::stat64) -> Option<NodeKind> {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Some(NodeKind::File),
        libc::S_IFDIR => Some(NodeKind::Dir),
        libc::S_IFLNK => Some(NodeKind::Symlink),
        libc::S_IFIFO => Some(NodeKind::Fifo),
        libc::S_IFSOCK => Some(NodeKind::Socket),
        _ => None,
    }
}

/// Attributes for an inode that is gone from the host: its number and kind, nothing else.
fn gone_attr(identity: &Identity) -> libc::stat64 {
    // SAFETY: stat64 is plain integers; all zeroes is a valid value.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    st.st_dev = identity.dev;
    st.st_ino = identity.ino;
    st.st_mode = identity.kind;
    st.st_nlink = 1;
    st
}

impl ShareFs {
    fn nudges(&self) -> std::sync::MutexGuard<'_, Nudges> {
        lock(&self.nudges)
    }

    /// Notes that a request of the guest changed `name` in directory `parent`.
    pub(super) fn note_entry(&self, parent: u64, name: &CStr) {
        if !self.config.watch_edits {
            return;
        }
        let Some(dir) = self.state().inodes.identity(parent) else {
            return;
        };
        self.nudges()
            .note(Key::Entry(dir.dev, dir.ino, name.to_owned()));
    }

    /// Notes that a request of the guest changed inode `id`'s data or attributes.
    pub(super) fn note_file(&self, id: u64) {
        if !self.config.watch_edits {
            return;
        }
        let Some(file) = self.state().inodes.identity(id) else {
            return;
        };
        self.nudges().note(Key::File(file.dev, file.ino));
    }

    /// Whether `edit`, which the host's watch saw at `seen`, is the guest's own doing.
    pub fn caused_by_guest(&self, edit: &HostEdit, seen: Instant) -> bool {
        let entry = |dir: &HostDir, name: &CStr| Key::Entry(dir.dev, dir.ino, name.to_owned());
        let keys = match edit {
            HostEdit::Modified(dir, name) => {
                let Some(st) = self
                    .known_dir(dir)
                    .and_then(|p| self.stat_child(p, name).ok())
                else {
                    return false;
                };
                vec![Key::File(st.st_dev, st.st_ino)]
            }
            HostEdit::Created(dir, name) | HostEdit::Deleted(dir, name) => vec![entry(dir, name)],
            HostEdit::Moved(dir, name, to, to_name) => vec![entry(dir, name), entry(to, to_name)],
        };
        let nudges = self.nudges();
        keys.iter().any(|key| nudges.noted(key, seen))
    }

    /// `name` in the known directory `parent`, stat'ed through the directory's own
    /// descriptor (never through a path the guest could have made a symlink of).
    fn stat_child(&self, parent: u64, name: &CStr) -> io::Result<libc::stat64> {
        sys::stat_at(&*self.inode_fd(parent)?, name)
    }

    /// Refuses a changing request of guest-init's main thread (`pid` 1) while a nudge it is
    /// not part of is under way (see the module docs).
    /// The same while abandoned nudges are not yet known to be done: a late repeat whose
    /// path now leads to another file (the directory replaced meanwhile) matches none of
    /// them, and must not become a real edit either.
    pub(super) fn refuse_stray(&self, pid: i32) -> io::Result<()> {
        let nudges = self.nudges();
        if pid == NUDGER_PID && (nudges.pending.is_some() || !nudges.abandoned.is_empty()) {
            return Err(errno(libc::EPERM));
        }
        Ok(())
    }

    /// Forgets the abandoned nudges: guest-init has answered since, so whatever of them it
    /// was going to repeat is done.
    pub fn clear_abandoned(&self) {
        self.nudges().abandoned.clear();
    }

    /// The guest's id for host directory `dir`, if the guest knows it (else nothing in the
    /// guest can watch it).
    fn known_dir(&self, dir: &HostDir) -> Option<u64> {
        let identity = Identity {
            dev: dir.dev,
            ino: dir.ino,
            kind: libc::S_IFDIR,
        };
        self.state().inodes.find(&identity)
    }

    /// The known inode named `name` in `parent`, by the table's names.
    fn known_child(&self, parent: u64, name: &CStr) -> Option<(u64, Identity)> {
        let state = self.state();
        state
            .inodes
            .named(parent, name)
            .and_then(|id| Some((id, state.inodes.identity(id)?)))
    }

    /// Starts nudging `edit`: records which requests will be answered as done and returns
    /// what guest-init is to repeat; `None` when there is nothing to tell (a directory the
    /// guest does not know, an entry gone again, a deletion of a name the guest never saw).
    pub fn begin_nudge(&self, edit: &HostEdit) -> Option<Nudge> {
        let (pending, nudge) = match edit {
            HostEdit::Modified(dir, name) => {
                let parent = self.known_dir(dir)?;
                let path = dir.path.join(cpath(name));
                let st = self.stat_child(parent, name).ok()?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return None;
                }
                let identity = Identity::of(&st);
                (Pending::Modify { identity }, Nudge::Modify(path))
            }
            HostEdit::Created(dir, name) => {
                let parent = self.known_dir(dir)?;
                let path = dir.path.join(cpath(name));
                let kind = node_kind(&self.stat_child(parent, name).ok()?)?;
                let pending = Pending::Create {
                    parent,
                    name: name.clone(),
                };
                (pending, Nudge::Create(path, kind))
            }
            HostEdit::Deleted(dir, name) => {
                let parent = self.known_dir(dir)?;
                let (id, identity) = self.known_child(parent, name)?;
                let path = dir.path.join(cpath(name));
                let pending = Pending::Delete {
                    parent,
                    name: name.clone(),
                    id,
                    identity,
                };
                (pending, Nudge::Delete(path, identity.is_dir()))
            }
            HostEdit::Moved(from, name, to, to_name) => {
                let (parent, to_parent) = match (self.known_dir(from), self.known_dir(to)) {
                    (Some(p), Some(t)) => (p, t),
                    (Some(_), None) => {
                        return self.begin_nudge(&HostEdit::Deleted(from.clone(), name.clone()));
                    }
                    (None, _) => {
                        return self.begin_nudge(&HostEdit::Created(to.clone(), to_name.clone()));
                    }
                };
                let Some((id, identity)) = self.known_child(parent, name) else {
                    return self.begin_nudge(&HostEdit::Created(to.clone(), to_name.clone()));
                };
                let to_path = to.path.join(cpath(to_name));
                let st = self.stat_child(to_parent, to_name).ok()?;
                if Identity::of(&st) != identity {
                    return None;
                }
                let replaced = self
                    .known_child(to_parent, to_name)
                    .filter(|(other, _)| *other != id);
                let pending = Pending::Move {
                    parent,
                    name: name.clone(),
                    to_parent,
                    to_name: to_name.clone(),
                    id,
                    st,
                    replaced,
                };
                let nudge = Nudge::Move(from.path.join(cpath(name)), to_path);
                (pending, nudge)
            }
        };
        self.nudges().pending = Some(pending);
        Some(nudge)
    }

    /// Ends the nudge under way, which guest-init `answered` (or not: it is abandoned, see
    /// the module docs).
    pub fn end_nudge(&self, answered: bool) {
        let mut nudges = self.nudges();
        if let Some(pending) = nudges.pending.take()
            && !answered
        {
            if nudges.abandoned.len() >= MAX_ABANDONED {
                nudges.abandoned.pop_front();
            }
            nudges.abandoned.push_back(pending);
        }
    }

    /// The nudge under way, if request of guest pid `pid` may be part of it.
    fn pending_for(&self, pid: i32) -> Option<Pending> {
        if pid != NUDGER_PID {
            return None;
        }
        self.nudges().pending.clone()
    }

    /// Which nudge, if any, a request of `pid` matching `matches` is part of.
    fn part(&self, pid: i32, matches: impl Fn(&Pending) -> bool) -> Part {
        if pid != NUDGER_PID {
            return Part::No;
        }
        let nudges = self.nudges();
        if let Some(pending) = nudges.pending.as_ref().filter(|p| matches(p)) {
            Part::Current(Box::new(pending.clone()))
        } else if nudges.abandoned.iter().any(matches) {
            Part::Late
        } else {
            Part::No
        }
    }

    /// An entry for inode `id` (one more lookup) with its attributes `st` (host numbers),
    /// cached as long as any: a name that expires is dropped by the guest at once when its
    /// last user lets go, and with it the inode (a FORGET), so a moved file the guest was
    /// given with an expired name would be forgotten, its deletion then never told.
    /// `None` when the guest forgot the inode meanwhile (it is then answered as anyone's).
    fn nudge_entry(&self, id: u64, st: libc::stat64) -> Option<Entry> {
        let known = self.state().inodes.add_lookup(id);
        known.then(|| self.entry(id, st))
    }

    /// An entry for inode `id`, gone from the host (one more lookup), nothing cached (the
    /// guest is about to remove or replace the name): its attributes as its descriptor still
    /// has them if the server holds one (a container may have it open: its cached data must
    /// stay), else only its number and kind. `None` when the guest forgot it meanwhile.
    fn gone_entry(&self, id: u64, identity: &Identity) -> Option<Entry> {
        let open = self.handles().any_of(id);
        let mut st = open
            .map(|handle| sys::fstat(&*handle.file()))
            .unwrap_or_else(|| self.inode_fd(id).and_then(|fd| sys::fstat(&*fd)))
            .ok()
            .filter(|st| Identity::of(st) == *identity)
            .unwrap_or_else(|| gone_attr(identity));
        st.st_nlink = st.st_nlink.max(1);
        let entry = self.nudge_entry(id, st)?;
        Some(Entry {
            attr_timeout: Duration::ZERO,
            entry_timeout: Duration::ZERO,
            ..entry
        })
    }

    /// LOOKUP during a nudge: a created name is not there yet, a deleted or moved one still
    /// is (the guest is about to repeat the edit).
    pub(super) fn nudged_lookup(&self, pid: i32, parent: u64, name: &CStr) -> Option<Entry> {
        let negative = || Entry {
            inode: 0,
            generation: 0,
            // SAFETY: stat64 is plain integers; all zeroes is a valid value.
            attr: unsafe { std::mem::zeroed() },
            attr_flags: 0,
            attr_timeout: Duration::ZERO,
            entry_timeout: Duration::ZERO,
        };
        let gone = |id: u64, identity: &Identity| self.gone_entry(id, identity);
        let negative = || Some(negative());
        match self.pending_for(pid)? {
            Pending::Create { parent: p, name: n } if p == parent && *n == *name => negative(),
            Pending::Delete {
                parent: p,
                name: n,
                id,
                identity,
            } if p == parent && *n == *name => gone(id, &identity),
            Pending::Move {
                parent: p,
                name: n,
                id,
                st,
                ..
            } if p == parent && *n == *name => self.nudge_entry(id, st),
            Pending::Move {
                to_parent,
                to_name,
                replaced,
                ..
            } if to_parent == parent && *to_name == *name => match replaced {
                Some((id, identity)) => gone(id, &identity),
                None => negative(),
            },
            _ => None,
        }
    }

    /// MKNOD, MKDIR or SYMLINK of a nudged creation: the entry the host made (`EEXIST` for
    /// an abandoned one).
    pub(super) fn nudged_make(
        &self,
        pid: i32,
        parent: u64,
        name: &CStr,
    ) -> Option<io::Result<Entry>> {
        let part = self.part(pid, |pending| {
            matches!(pending, Pending::Create { parent: p, name: n } if *p == parent && **n == *name)
        });
        match part {
            Part::No => None,
            Part::Current(_) => Some(self.lookup_entry(parent, name)),
            Part::Late => Some(Err(errno(libc::EEXIST))),
        }
    }

    /// UNLINK or RMDIR of a nudged deletion: the table forgets the name (`ENOENT` for an
    /// abandoned one).
    pub(super) fn nudged_remove(
        &self,
        pid: i32,
        parent: u64,
        name: &CStr,
    ) -> Option<io::Result<()>> {
        let part = self.part(pid, |pending| {
            matches!(pending, Pending::Delete { parent: p, name: n, .. } if *p == parent && **n == *name)
        });
        match part {
            Part::No => None,
            Part::Late => Some(Err(errno(libc::ENOENT))),
            Part::Current(pending) => {
                if let Pending::Delete { id, .. } = *pending {
                    let mut state = self.state();
                    state.inodes.remove_name(id, parent, name);
                    super::purge_dropped(&mut state);
                }
                Some(Ok(()))
            }
        }
    }

    /// RENAME of a nudged move: the table moves the name (`ENOENT` for an abandoned one).
    pub(super) fn nudged_rename(
        &self,
        pid: i32,
        (parent, name): (u64, &CStr),
        (new_parent, new_name): (u64, &CStr),
    ) -> Option<io::Result<()>> {
        let part = self.part(pid, |pending| {
            matches!(pending, Pending::Move { parent: p, name: n, to_parent, to_name, .. }
                if *p == parent && **n == *name && *to_parent == new_parent && **to_name == *new_name)
        });
        match part {
            Part::No => None,
            Part::Late => Some(Err(errno(libc::ENOENT))),
            Part::Current(pending) => {
                if let Pending::Move { id, replaced, .. } = *pending {
                    let mut state = self.state();
                    if let Some((other, _)) = replaced {
                        state.inodes.remove_name(other, new_parent, new_name);
                    }
                    state.inodes.add_name(id, new_parent, new_name);
                    state.inodes.remove_name(id, parent, name);
                    super::purge_dropped(&mut state);
                }
                Some(Ok(()))
            }
        }
    }

    /// Whether a request of `pid` on inode `id` is the OPEN or SETATTR of a nudged
    /// modification (`Current`: opened read-only, the truncate answered with the attributes
    /// as they are; `Late`: refused).
    pub(super) fn nudged_modify(&self, pid: i32, id: u64) -> Part {
        if pid != NUDGER_PID {
            return Part::No;
        }
        let Some(identity) = self.state().inodes.identity(id) else {
            return Part::No;
        };
        self.part(
            pid,
            |pending| matches!(pending, Pending::Modify { identity: i } if *i == identity),
        )
    }
}

/// `name` as a path component.
fn cpath(name: &CStr) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()))
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::fs::MetadataExt;

    use fuse_backend_rs::abi::fuse_abi::CreateIn;
    use fuse_backend_rs::api::filesystem::{Context, FileSystem, SetattrValid};

    use super::super::ShareConfig;
    use super::super::state::inodes::ROOT_ID;
    use super::*;

    fn share() -> (tempfile::TempDir, ShareFs) {
        super::super::tests::share_with_config(ShareConfig {
            watch_edits: true,
            ..ShareConfig::default()
        })
    }

    fn pid(pid: i32) -> Context {
        Context {
            pid,
            ..Context::new()
        }
    }

    fn name(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn root_dir(dir: &tempfile::TempDir) -> HostDir {
        let meta = std::fs::metadata(dir.path()).unwrap();
        HostDir {
            dev: meta.dev(),
            ino: meta.ino(),
            path: PathBuf::new(),
        }
    }

    #[test]
    fn a_modification_is_opened_read_only_and_its_truncate_changes_nothing() {
        let (dir, fs) = share();
        let id = fs.lookup(&pid(9), ROOT_ID, &name("file")).unwrap().inode;
        let edit = HostEdit::Modified(root_dir(&dir), name("file"));
        assert_eq!(fs.begin_nudge(&edit), Some(Nudge::Modify("file".into())));
        // Another process's requests are served as ever: its truncate would truncate, so
        // only guest-init's is checked here.
        let (fh, ..) = fs.open(&pid(1), id, libc::O_WRONLY as u32, 0).unwrap();
        let fh = fh.unwrap();
        // SAFETY: a zeroed stat64 is a valid value.
        let attr: libc::stat64 = unsafe { std::mem::zeroed() };
        let (st, _) = fs
            .setattr(
                &pid(1),
                id,
                attr,
                Some(fh),
                SetattrValid::SIZE | SetattrValid::MTIME,
            )
            .unwrap();
        assert_eq!(st.st_size, 10);
        assert_eq!(
            std::fs::read(dir.path().join("file")).unwrap(),
            b"0123456789"
        );
        // The handle was opened read-only: nothing can be written through it.
        let handle = fs.handles().get(fh, id).unwrap();
        assert!(std::io::Write::write(&mut &*handle.file(), b"x").is_err());
        drop(handle);
        fs.end_nudge(true);
        // After the nudge, guest-init's truncate is a truncate.
        fs.setattr(&pid(1), id, attr, None, SetattrValid::SIZE)
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"");
    }

    #[test]
    fn a_creation_is_not_there_for_guest_init_until_it_makes_it() {
        let (dir, fs) = share();
        std::fs::write(dir.path().join("new"), b"abc").unwrap();
        let edit = HostEdit::Created(root_dir(&dir), name("new"));
        assert_eq!(
            fs.begin_nudge(&edit),
            Some(Nudge::Create("new".into(), NodeKind::File))
        );
        assert_eq!(fs.lookup(&pid(1), ROOT_ID, &name("new")).unwrap().inode, 0);
        let seen = fs.lookup(&pid(7), ROOT_ID, &name("new")).unwrap();
        assert_ne!(seen.inode, 0);
        let made = fs
            .mknod(&pid(1), ROOT_ID, &name("new"), libc::S_IFREG | 0o600, 0, 0)
            .unwrap();
        assert_eq!(made.inode, seen.inode);
        assert_eq!(std::fs::read(dir.path().join("new")).unwrap(), b"abc");
        fs.end_nudge(true);
        let err = fs
            .mknod(&pid(1), ROOT_ID, &name("new"), libc::S_IFREG | 0o600, 0, 0)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    }

    #[test]
    fn a_deletion_is_told_only_of_a_name_the_guest_knows() {
        let (dir, fs) = share();
        std::fs::write(dir.path().join("other"), b"").unwrap();
        let id = fs.lookup(&pid(9), ROOT_ID, &name("file")).unwrap().inode;
        std::fs::remove_file(dir.path().join("file")).unwrap();
        std::fs::remove_file(dir.path().join("other")).unwrap();
        let unknown = HostEdit::Deleted(root_dir(&dir), name("other"));
        assert_eq!(fs.begin_nudge(&unknown), None);
        let edit = HostEdit::Deleted(root_dir(&dir), name("file"));
        assert_eq!(
            fs.begin_nudge(&edit),
            Some(Nudge::Delete("file".into(), false))
        );
        assert_eq!(
            fs.lookup(&pid(1), ROOT_ID, &name("file")).unwrap().inode,
            id
        );
        assert_eq!(fs.lookup(&pid(2), ROOT_ID, &name("file")).unwrap().inode, 0);
        fs.unlink(&pid(1), ROOT_ID, &name("file")).unwrap();
        assert_eq!(fs.state().inodes.named(ROOT_ID, &name("file")), None);
        fs.end_nudge(true);
    }

    #[test]
    fn a_move_renames_what_the_guest_knows() {
        let (dir, fs) = share();
        let id = fs.lookup(&pid(9), ROOT_ID, &name("file")).unwrap().inode;
        std::fs::rename(dir.path().join("file"), dir.path().join("moved")).unwrap();
        let root = root_dir(&dir);
        let edit = HostEdit::Moved(root.clone(), name("file"), root, name("moved"));
        assert_eq!(
            fs.begin_nudge(&edit),
            Some(Nudge::Move("file".into(), "moved".into()))
        );
        assert_eq!(
            fs.lookup(&pid(1), ROOT_ID, &name("file")).unwrap().inode,
            id
        );
        assert_eq!(
            fs.lookup(&pid(1), ROOT_ID, &name("moved")).unwrap().inode,
            0
        );
        fs.rename(&pid(1), ROOT_ID, &name("file"), ROOT_ID, &name("moved"), 0)
            .unwrap();
        fs.end_nudge(true);
        assert_eq!(fs.state().inodes.named(ROOT_ID, &name("moved")), Some(id));
        assert_eq!(
            fs.lookup(&pid(2), ROOT_ID, &name("moved")).unwrap().inode,
            id
        );
        assert!(dir.path().join("moved").exists());
        // Deleted on the host after: the guest knows the new name.
        std::fs::remove_file(dir.path().join("moved")).unwrap();
        let edit = HostEdit::Deleted(root_dir(&dir), name("moved"));
        assert_eq!(
            fs.begin_nudge(&edit),
            Some(Nudge::Delete("moved".into(), false))
        );
    }

    /// The requests a guest makes for a file the host makes, writes, renames and deletes,
    /// each nudged in turn: every edit is told.
    #[test]
    fn a_files_whole_life_on_the_host_is_told() {
        let (dir, fs) = share();
        let root = root_dir(&dir);
        let told = |edit: HostEdit| {
            let nudge = fs.begin_nudge(&edit);
            assert!(nudge.is_some(), "{edit:?} not told");
        };
        std::fs::write(dir.path().join("a"), b"1").unwrap();
        told(HostEdit::Created(root.clone(), name("a")));
        fs.lookup(&pid(1), ROOT_ID, &name("a")).unwrap();
        let id = fs
            .mknod(&pid(1), ROOT_ID, &name("a"), libc::S_IFREG | 0o600, 0, 0)
            .unwrap()
            .inode;
        fs.end_nudge(true);
        for _ in 0..2 {
            told(HostEdit::Modified(root.clone(), name("a")));
            assert_eq!(fs.lookup(&pid(1), ROOT_ID, &name("a")).unwrap().inode, id);
            let fh = fs.open(&pid(1), id, libc::O_WRONLY as u32, 0).unwrap().0;
            // SAFETY: a zeroed stat64 is a valid value.
            let attr: libc::stat64 = unsafe { std::mem::zeroed() };
            fs.setattr(&pid(1), id, attr, fh, SetattrValid::SIZE)
                .unwrap();
            fs.flush(&pid(1), id, fh.unwrap(), 0).unwrap();
            fs.release(&pid(1), id, 0, fh.unwrap(), false, false, None)
                .unwrap();
            fs.end_nudge(true);
        }
        std::fs::rename(dir.path().join("a"), dir.path().join("b")).unwrap();
        told(HostEdit::Moved(
            root.clone(),
            name("a"),
            root.clone(),
            name("b"),
        ));
        assert_eq!(fs.lookup(&pid(1), ROOT_ID, &name("a")).unwrap().inode, id);
        assert_eq!(fs.lookup(&pid(1), ROOT_ID, &name("b")).unwrap().inode, 0);
        fs.rename(&pid(1), ROOT_ID, &name("a"), ROOT_ID, &name("b"), 0)
            .unwrap();
        fs.end_nudge(true);
        std::fs::remove_file(dir.path().join("b")).unwrap();
        told(HostEdit::Deleted(root, name("b")));
    }

    /// While a nudge is under way, guest-init's other changes are refused: a path that led
    /// elsewhere (a directory replaced meanwhile) must not become a real edit.
    #[test]
    fn guest_inits_stray_changes_are_refused_during_a_nudge() {
        let (dir, fs) = share();
        std::fs::write(dir.path().join("new"), b"").unwrap();
        fs.begin_nudge(&HostEdit::Created(root_dir(&dir), name("new")))
            .unwrap();
        let err = fs.unlink(&pid(1), ROOT_ID, &name("file")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let id = fs.lookup(&pid(1), ROOT_ID, &name("file")).unwrap().inode;
        let err = fs.open(&pid(1), id, libc::O_RDWR as u32, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert!(fs.open(&pid(1), id, libc::O_RDONLY as u32, 0).is_ok());
        // Another process is served; guest-init too once the nudge ended.
        fs.unlink(&pid(2), ROOT_ID, &name("new")).unwrap();
        fs.end_nudge(true);
        fs.unlink(&pid(1), ROOT_ID, &name("file")).unwrap();
        assert!(!dir.path().join("file").exists());
        // And while an abandoned nudge is not known to be done, until it is.
        std::fs::write(dir.path().join("other"), b"").unwrap();
        fs.begin_nudge(&HostEdit::Created(root_dir(&dir), name("other")))
            .unwrap();
        fs.end_nudge(false);
        let err = fs.unlink(&pid(1), ROOT_ID, &name("new2")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        fs.clear_abandoned();
        let err = fs.unlink(&pid(1), ROOT_ID, &name("new2")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    /// A nudge guest-init did not answer in time, done late, edits nothing on the host.
    #[test]
    fn an_abandoned_nudge_done_late_is_refused() {
        let (dir, fs) = share();
        let id = fs.lookup(&pid(9), ROOT_ID, &name("file")).unwrap().inode;
        let root = root_dir(&dir);
        fs.begin_nudge(&HostEdit::Modified(root.clone(), name("file")))
            .unwrap();
        fs.end_nudge(false);
        std::fs::remove_file(dir.path().join("file")).unwrap();
        fs.begin_nudge(&HostEdit::Deleted(root.clone(), name("file")))
            .unwrap();
        fs.end_nudge(false);
        // The host makes the file again, longer; the late truncate and unlink leave it be.
        std::fs::write(dir.path().join("file"), b"0123456789abcdef").unwrap();
        let again = fs.lookup(&pid(9), ROOT_ID, &name("file")).unwrap().inode;
        fs.begin_nudge(&HostEdit::Modified(root, name("file")))
            .unwrap();
        fs.end_nudge(false);
        let err = fs
            .open(&pid(1), again, libc::O_WRONLY as u32, 0)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        // SAFETY: a zeroed stat64 is a valid value.
        let attr: libc::stat64 = unsafe { std::mem::zeroed() };
        let err = fs
            .setattr(&pid(1), again, attr, None, SetattrValid::SIZE)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let err = fs.unlink(&pid(1), ROOT_ID, &name("file")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(
            std::fs::read(dir.path().join("file")).unwrap(),
            b"0123456789abcdef"
        );
        // Anyone else's requests are served.
        assert_ne!(id, 0);
        fs.unlink(&pid(2), ROOT_ID, &name("file")).unwrap();
        assert!(!dir.path().join("file").exists());
    }

    #[test]
    fn the_guests_own_edits_are_told_apart() {
        let (dir, fs) = share();
        let args = CreateIn {
            flags: libc::O_WRONLY as u32,
            mode: 0o644,
            umask: 0,
            fuse_flags: 0,
        };
        fs.create(&pid(5), ROOT_ID, &name("mine"), args).unwrap();
        std::fs::write(dir.path().join("theirs"), b"").unwrap();
        let now = Instant::now();
        let created = |n: &str| HostEdit::Created(root_dir(&dir), name(n));
        assert!(fs.caused_by_guest(&created("mine"), now));
        assert!(!fs.caused_by_guest(&created("theirs"), now));
        let later = now + OWN_EDIT_WINDOW;
        assert!(!fs.caused_by_guest(&created("mine"), later));
    }

    #[test]
    fn nothing_is_told_of_a_directory_the_guest_does_not_know() {
        let (dir, fs) = share();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"").unwrap();
        let meta = std::fs::metadata(dir.path().join("d")).unwrap();
        let d = HostDir {
            dev: meta.dev(),
            ino: meta.ino(),
            path: "d".into(),
        };
        assert_eq!(
            fs.begin_nudge(&HostEdit::Created(d.clone(), name("f"))),
            None
        );
        fs.lookup(&pid(3), ROOT_ID, &name("d")).unwrap();
        assert_eq!(
            fs.begin_nudge(&HostEdit::Created(d, name("f"))),
            Some(Nudge::Create("d/f".into(), NodeKind::File))
        );
    }
}
