//! A watch on directories of the share (the bind sources) for edits made on the host, which
//! the guest is then told of (`server/nudge.rs`).
//!
//! One inotify instance per share, a watch per directory (added as directories appear, up to
//! [`MAX_WATCHES`]; a file bind mount watches the file), read on a thread of its own.
//! Each event becomes a [`HostEdit`] naming the directory by identity and by its path in the
//! share; the two events of a rename (one cookie) become one move; a run of modifications of
//! one file becomes one; edits the guest made itself are dropped. The edits wait in a queue of
//! at most [`MAX_QUEUED`] (more are dropped: a host `git checkout` of a large tree may lose
//! some; the watchers in the guest see the rest).

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use guest_init::beneath::open_beneath;

use super::server::{HostDir, HostEdit, ShareFs};

/// The most directories (and file bind mounts) watched per share: they count against root's
/// `fs.inotify.max_user_watches` on the host, shared by every container.
pub const MAX_WATCHES: usize = 8 * 1024;
/// The most edits waiting to be told to the guest.
pub const MAX_QUEUED: usize = 4096;
/// How often the thread looks whether it should stop.
const POLL: Duration = Duration::from_millis(250);
/// How long a rename's first half waits for its second (the two may come in two reads);
/// alone after this, it is a deletion.
const PAIRING: Duration = Duration::from_millis(100);
/// How long a modification waits before it is told, so that the events of one write and
/// its close (which may come in two reads) are told once.
const SETTLE: Duration = Duration::from_millis(100);

/// What a directory's watch reports.
const DIR_MASK: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;
/// What a file bind mount's watch reports. (Watches are added through `/proc/self/fd`, whose
/// links must be followed: no IN_DONT_FOLLOW.)
const FILE_MASK: u32 = libc::IN_MODIFY | libc::IN_CLOSE_WRITE;

/// What one watch descriptor watches.
#[derive(Clone, Debug)]
enum Watched {
    Dir(HostDir),
    /// A file bind mount: the name `.1` in directory `.0`.
    File(HostDir, CString),
}

/// The edits found and not yet taken.
#[derive(Debug, Default)]
struct Queue {
    /// Each with when it may be taken.
    edits: Mutex<VecDeque<(HostEdit, Instant)>>,
    ready: Condvar,
}

/// A running watch (see the module docs); it stops when dropped.
#[derive(Debug)]
pub struct HostWatch {
    queue: Arc<Queue>,
    stop: Arc<AtomicBool>,
}

impl HostWatch {
    /// Watches `paths` (relative to the share's root `root`) and what appears under them.
    /// The directories are walked on the watch's thread: this returns at once.
    pub fn start(share: Arc<ShareFs>, root: PathBuf, paths: Vec<PathBuf>) -> io::Result<Self> {
        // SAFETY: inotify_init1 takes flags only; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let root = OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(&root)?,
        );
        let queue = Arc::new(Queue::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut watcher = Watcher {
            fd,
            root,
            share,
            watches: HashMap::new(),
            queue: Arc::clone(&queue),
            moved_from: HashMap::new(),
        };
        let thread_stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("fs-host-watch".into())
            .spawn(move || {
                for path in &paths {
                    watcher.add_tree(path);
                }
                watcher.run(&thread_stop);
            })?;
        Ok(HostWatch { queue, stop })
    }

    /// The next edit, waiting up to `timeout` for one.
    pub fn next(&self, timeout: Duration) -> Option<HostEdit> {
        let deadline = Instant::now() + timeout;
        let mut edits = self
            .queue
            .edits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            let wait = match edits.front() {
                Some((_, at)) if *at <= now => return edits.pop_front().map(|(edit, _)| edit),
                Some((_, at)) => (*at).min(deadline),
                None => deadline,
            };
            if now >= deadline {
                return None;
            }
            edits = self
                .queue
                .ready
                .wait_timeout(edits, wait.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for HostWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The watch's thread.
struct Watcher {
    fd: OwnedFd,
    /// The share's root (`O_PATH`).
    root: OwnedFd,
    share: Arc<ShareFs>,
    watches: HashMap<i32, Watched>,
    queue: Arc<Queue>,
    /// Renames' first halves (by cookie) waiting for their second.
    moved_from: HashMap<u32, MovedFrom>,
}

/// A rename's first half.
#[derive(Debug)]
struct MovedFrom {
    dir: HostDir,
    name: CString,
    /// For a directory, the watches under it when it moved (taken then, before a new
    /// directory of the same name can be watched).
    wds: Vec<i32>,
    at: Instant,
}

/// `path` as a C string (paths from the file system hold no NUL).
fn cstring(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// `name` as a path component.
fn component(name: &CStr) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()))
}

impl Watcher {
    /// Watches `path` (relative to the root) and every directory under it, not following
    /// symlinks, until [`MAX_WATCHES`].
    fn add_tree(&mut self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        let mut todo = vec![path.to_path_buf()];
        while let Some(rel) = todo.pop() {
            if self.watches.len() >= MAX_WATCHES {
                return;
            }
            // Opened beneath the share's root without following any symlink: a directory
            // the guest swapped for a symlink leads nowhere outside the share.
            let Some(file) = self.open(&rel, libc::O_PATH) else {
                continue;
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let (mask, watched) = if meta.is_dir() {
                let dir = HostDir {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    path: rel.clone(),
                };
                (DIR_MASK, Watched::Dir(dir))
            } else if meta.is_file() {
                let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                    continue;
                };
                let Some(parent_meta) = self
                    .open(parent, libc::O_PATH | libc::O_DIRECTORY)
                    .and_then(|f| f.metadata().ok())
                else {
                    continue;
                };
                let parent = HostDir {
                    dev: parent_meta.dev(),
                    ino: parent_meta.ino(),
                    path: parent.to_path_buf(),
                };
                let Ok(name) = CString::new(name.as_bytes()) else {
                    continue;
                };
                (FILE_MASK, Watched::File(parent, name))
            } else {
                continue;
            };
            // The watch and the listing go through the descriptor (its /proc link names the
            // very inode opened), never through the path again.
            let proc = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            let Some(cpath) = cstring(&proc) else {
                continue;
            };
            // SAFETY: fd is our inotify instance, cpath a valid C string.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), cpath.as_ptr(), mask) };
            if wd < 0 {
                continue;
            }
            self.watches.insert(wd, watched);
            if !meta.is_dir() {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&proc) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(rel.join(entry.file_name()));
                }
            }
        }
    }

    /// `rel` opened beneath the share's root (see [`open_beneath`]).
    fn open(&self, rel: &Path, flags: libc::c_int) -> Option<std::fs::File> {
        let path = cstring(rel)?;
        open_beneath(&self.root, &path, flags)
            .ok()
            .map(std::fs::File::from)
    }

    /// The watches of directory `path` and what is under it.
    fn tree(&self, path: &Path) -> Vec<i32> {
        self.watches
            .iter()
            .filter(|(_, w)| matches!(w, Watched::Dir(d) if d.path.starts_with(path)))
            .map(|(wd, _)| *wd)
            .collect()
    }

    /// Stops the watches `wds` (a tree moved out of the watched one).
    fn remove_tree(&mut self, wds: &[i32]) {
        for wd in wds {
            self.watches.remove(wd);
            // SAFETY: fd is our inotify instance; a stale wd only fails.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), *wd) };
        }
    }

    /// A directory moved within the tree from `from` to `to`: its watches `wds` keep their
    /// inodes, their paths change.
    fn rename_tree(&mut self, wds: &[i32], from: &Path, to: &Path) {
        for wd in wds {
            if let Some(Watched::Dir(dir)) = self.watches.get_mut(wd)
                && let Ok(rest) = dir.path.strip_prefix(from)
            {
                dir.path = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let timeout = if self.moved_from.is_empty() {
                POLL
            } else {
                PAIRING
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
            if ready <= 0 {
                let unpaired = self.unpaired(Instant::now());
                self.enqueue(unpaired);
                continue;
            }
            // SAFETY: buf is writable for its length.
            let len =
                unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(len) = usize::try_from(len) else {
                continue;
            };
            let events = parse_events(&buf[..len.min(buf.len())]);
            let now = Instant::now();
            let mut edits = self.edits(&events, now);
            edits.extend(self.unpaired(now));
            self.enqueue(edits);
        }
    }

    /// The deletions that renames' first halves older than [`PAIRING`] at `now` mean (moved
    /// out of the watched tree).
    fn unpaired(&mut self, now: Instant) -> Vec<HostEdit> {
        let old: Vec<u32> = self
            .moved_from
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.at) >= PAIRING)
            .map(|(cookie, _)| *cookie)
            .collect();
        let mut edits = Vec::new();
        for cookie in old {
            let Some(m) = self.moved_from.remove(&cookie) else {
                continue;
            };
            self.remove_tree(&m.wds);
            edits.push(HostEdit::Deleted(m.dir, m.name));
        }
        edits
    }

    /// The edits a batch of events read at `now` means (a rename's halves paired by cookie).
    fn edits(&mut self, events: &[Event], now: Instant) -> Vec<HostEdit> {
        let mut edits = Vec::new();
        for event in events {
            let Some(watched) = self.watches.get(&event.wd).cloned() else {
                continue;
            };
            if event.mask & libc::IN_IGNORED != 0 {
                self.watches.remove(&event.wd);
                continue;
            }
            let is_dir = event.mask & libc::IN_ISDIR != 0;
            let (dir, name) = match (watched, event.name.clone()) {
                (Watched::File(dir, name), _) => (dir, name),
                (Watched::Dir(dir), Some(name)) => (dir, name),
                (Watched::Dir(_), None) => continue,
            };
            let path = dir.path.join(component(&name));
            let m = event.mask;
            if m & libc::IN_MOVED_FROM != 0 {
                let wds = if is_dir { self.tree(&path) } else { Vec::new() };
                let from = MovedFrom {
                    dir,
                    name,
                    wds,
                    at: now,
                };
                self.moved_from.insert(event.cookie, from);
            } else if m & libc::IN_MOVED_TO != 0 {
                match self.moved_from.remove(&event.cookie) {
                    Some(MovedFrom {
                        dir: from,
                        name: from_name,
                        wds,
                        ..
                    }) => {
                        self.rename_tree(&wds, &from.path.join(component(&from_name)), &path);
                        edits.push(HostEdit::Moved(from, from_name, dir, name));
                    }
                    None => {
                        if is_dir {
                            self.add_tree(&path);
                        }
                        edits.push(HostEdit::Created(dir, name));
                    }
                }
            } else if m & libc::IN_CREATE != 0 {
                if is_dir {
                    self.add_tree(&path);
                }
                edits.push(HostEdit::Created(dir, name));
            } else if m & libc::IN_DELETE != 0 {
                edits.push(HostEdit::Deleted(dir, name));
            } else if m & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE) != 0 && !is_dir {
                edits.push(HostEdit::Modified(dir, name));
            }
        }
        edits
    }

    /// Queues `edits`, but not the guest's own, nor a modification right after the same.
    fn enqueue(&self, edits: Vec<HostEdit>) {
        let seen = Instant::now();
        let edits: Vec<HostEdit> = edits
            .into_iter()
            .filter(|e| !self.share.caused_by_guest(e, seen))
            .collect();
        if edits.is_empty() {
            return;
        }
        let mut queue = self
            .queue
            .edits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for edit in edits {
            let modified = matches!(edit, HostEdit::Modified(..));
            let repeat = modified && queue.back().is_some_and(|(last, _)| *last == edit);
            if !repeat && queue.len() < MAX_QUEUED {
                let at = if modified { seen + SETTLE } else { seen };
                queue.push_back((edit, at));
            }
        }
        self.queue.ready.notify_one();
    }
}

/// One inotify event.
#[derive(Debug)]
struct Event {
    wd: i32,
    mask: u32,
    cookie: u32,
    name: Option<CString>,
}

/// The events in what a read of the inotify descriptor returned.
fn parse_events(mut buf: &[u8]) -> Vec<Event> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut events = Vec::new();
    while buf.len() >= HEADER {
        let word = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[at..at + 4]);
            b
        };
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let cookie = u32::from_ne_bytes(word(8));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let Some(raw) = buf.get(HEADER..HEADER + len) else {
            break;
        };
        let name = raw
            .split(|b| *b == 0)
            .next()
            .filter(|n| !n.is_empty())
            .and_then(|n| CString::new(n).ok());
        events.push(Event {
            wd,
            mask,
            cookie,
            name,
        });
        buf = &buf[HEADER + len..];
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::fs::ShareConfig;

    fn watch(dir: &Path) -> (Arc<ShareFs>, HostWatch) {
        let config = ShareConfig {
            watch_edits: true,
            ..ShareConfig::default()
        };
        let share = Arc::new(ShareFs::new(dir, config).unwrap());
        let watch = HostWatch::start(
            Arc::clone(&share),
            dir.to_path_buf(),
            vec![PathBuf::from("src")],
        )
        .unwrap();
        (share, watch)
    }

    /// The edits that arrive within a second of each other.
    fn drain(watch: &HostWatch) -> Vec<HostEdit> {
        let mut edits = Vec::new();
        while let Some(edit) = watch.next(Duration::from_secs(1)) {
            edits.push(edit);
        }
        edits
    }

    fn names(edits: &[HostEdit]) -> Vec<String> {
        let n = |d: &HostDir, c: &CString| format!("{}/{}", d.path.display(), c.to_string_lossy());
        edits
            .iter()
            .map(|e| match e {
                HostEdit::Modified(d, c) => format!("modified {}", n(d, c)),
                HostEdit::Created(d, c) => format!("created {}", n(d, c)),
                HostEdit::Deleted(d, c) => format!("deleted {}", n(d, c)),
                HostEdit::Moved(d, c, t, tc) => format!("moved {} {}", n(d, c), n(t, tc)),
            })
            .collect()
    }

    #[test]
    fn host_edits_become_edits_with_share_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src/lib")).unwrap();
        std::fs::write(root.join("src/lib/a.js"), b"1").unwrap();
        std::fs::write(root.join("outside"), b"1").unwrap();
        let (_share, watch) = watch(&root);
        // Let the thread add its watches.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(root.join("src/lib/a.js"), b"22").unwrap();
        std::fs::write(root.join("outside"), b"22").unwrap();
        std::fs::write(root.join("src/new.txt"), b"").unwrap();
        std::fs::rename(root.join("src/new.txt"), root.join("src/lib/b.txt")).unwrap();
        std::fs::create_dir(root.join("src/pkg")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(root.join("src/pkg/c.txt"), b"x").unwrap();
        std::fs::remove_file(root.join("src/lib/a.js")).unwrap();
        let got = names(&drain(&watch));
        let want = [
            "modified src/lib/a.js",
            "created src/new.txt",
            "modified src/new.txt",
            "moved src/new.txt src/lib/b.txt",
            "created src/pkg",
            "created src/pkg/c.txt",
            "modified src/pkg/c.txt",
            "deleted src/lib/a.js",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_moved_directory_keeps_its_watches_under_the_new_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src/old/deep")).unwrap();
        let (_share, watch) = watch(&root);
        std::thread::sleep(Duration::from_millis(300));
        std::fs::rename(root.join("src/old"), root.join("src/new")).unwrap();
        std::fs::write(root.join("src/new/deep/f"), b"").unwrap();
        let got = names(&drain(&watch));
        assert_eq!(
            got,
            [
                "moved src/old src/new",
                "created src/new/deep/f",
                "modified src/new/deep/f"
            ]
        );
    }

    /// A rename whose halves come in two reads is one move; a first half alone for longer
    /// than [`PAIRING`] is a deletion.
    #[test]
    fn a_rename_pairs_across_reads_and_alone_is_a_deletion() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let share = Arc::new(ShareFs::new(&root, ShareConfig::default()).unwrap());
        // SAFETY: no arguments; checked below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let dir = HostDir {
            dev: 1,
            ino: 2,
            path: PathBuf::from("src"),
        };
        let mut watcher = Watcher {
            // SAFETY: fd is new and owned here only.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            root: OwnedFd::from(std::fs::File::open(&root).unwrap()),
            share,
            watches: HashMap::from([(1, Watched::Dir(dir.clone()))]),
            queue: Arc::new(Queue::default()),
            moved_from: HashMap::new(),
        };
        let event = |mask, cookie, name: &CStr| Event {
            wd: 1,
            mask,
            cookie,
            name: Some(name.to_owned()),
        };
        let t0 = Instant::now();
        let first = watcher.edits(&[event(libc::IN_MOVED_FROM, 9, c"a")], t0);
        assert!(first.is_empty());
        assert!(watcher.unpaired(t0 + PAIRING / 2).is_empty());
        let second = watcher.edits(&[event(libc::IN_MOVED_TO, 9, c"b")], t0);
        assert_eq!(
            second,
            [HostEdit::Moved(
                dir.clone(),
                c"a".into(),
                dir.clone(),
                c"b".into()
            )]
        );
        watcher.edits(&[event(libc::IN_MOVED_FROM, 10, c"c")], t0);
        assert_eq!(
            watcher.unpaired(t0 + PAIRING),
            [HostEdit::Deleted(dir, c"c".into())]
        );
        assert!(watcher.moved_from.is_empty());
    }

    #[test]
    fn events_parse_with_and_without_names() {
        let mut buf = Vec::new();
        for (wd, name) in [(1i32, &b"abc\0\0\0\0\0"[..]), (2, &b""[..])] {
            buf.extend(wd.to_ne_bytes());
            buf.extend(libc::IN_CREATE.to_ne_bytes());
            buf.extend(7u32.to_ne_bytes());
            buf.extend((name.len() as u32).to_ne_bytes());
            buf.extend(name);
        }
        // A truncated event at the end is not read.
        buf.extend(3i32.to_ne_bytes());
        let events = parse_events(&buf);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].name.as_deref(), Some(c"abc"));
        assert_eq!((events[1].wd, events[1].name.as_ref()), (2, None));
        assert_eq!(events[0].cookie, 7);
    }
}
