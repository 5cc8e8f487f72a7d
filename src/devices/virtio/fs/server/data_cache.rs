//! Which files' data the guest keeps in its page cache from one open to the next.
//!
//! Without `FOPEN_KEEP_CACHE` in the answer to OPEN, the guest kernel drops what it cached of
//! the file at every open: close-to-open consistency against any change on the host, at the
//! price of reading the file again after every open. With it, the cache is kept — right only
//! while nothing but this guest changes the file.
//!
//! [`DataCache::KeptUnder`] keeps it for the files under one entry of the share's root (the
//! container's root file system, which only its guest writes while it runs), and even there
//! only when the file is unchanged since the guest last saw it: the server records each
//! file's [`Stamp`] (size, mtime, ctime) at every OPEN, and at the RELEASE of a handle the
//! guest wrote through (its cache then holds its own writes). A file changed behind the
//! guest's back — `docker cp` into a running container, an edit on the host — has another
//! stamp at its next OPEN, which then drops the cache. Two windows are left:
//! - a host change that keeps the size within the host file system's timestamp granularity
//!   (a clock tick) of the stamp the server recorded: same stamp, so the cache is kept;
//! - a host change while the guest has the file open through a handle it writes through,
//!   up to that handle's RELEASE (after the guest's `close`): the stamp then recorded takes
//!   the host's change for the guest's own.

use fuse_backend_rs::api::filesystem::OpenOptions;

use super::state::handles::OpenHandle;
use super::state::inodes::Stamp;
use super::{ShareFs, sys};

/// Which files' data the guest may keep cached between opens (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataCache {
    /// None: every open drops the cache (close-to-open against any host change).
    #[default]
    PerOpen,
    /// The regular files only reachable under this entry of the share's root: kept while
    /// their stamp is unchanged.
    KeptUnder(&'static std::ffi::CStr),
}

impl ShareFs {
    /// The cache flags for an OPEN of inode `id`, a regular file whose attributes after the
    /// host open are `st`; records its stamp as what the guest's cache now reflects.
    pub(super) fn open_cache_options(&self, id: u64, st: &libc::stat64) -> OpenOptions {
        let DataCache::KeptUnder(top) = self.config.data_cache else {
            return OpenOptions::empty();
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return OpenOptions::empty();
        }
        let stamp = Stamp::of(st);
        let mut state = self.state();
        let keep = state.inodes.only_under(id, top) && state.inodes.stamp(id) == Some(stamp);
        state.inodes.set_stamp(id, stamp);
        if keep {
            OpenOptions::KEEP_CACHE
        } else {
            OpenOptions::empty()
        }
    }

    /// At the RELEASE of `handle` (of inode `id`): if the guest wrote through it, its cache
    /// holds the file as it is now. Without the file's attributes the stamp stays the one of
    /// its OPEN, which the writes changed: the next OPEN drops the cache.
    pub(super) fn note_release(&self, id: u64, handle: &OpenHandle) {
        if self.config.data_cache == DataCache::PerOpen || !handle.written() {
            return;
        }
        if let Ok(st) = sys::fstat(&*handle.file()) {
            self.state().inodes.set_stamp(id, Stamp::of(&st));
        }
    }
}
