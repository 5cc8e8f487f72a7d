//! The requests the guest sends, by kind: on inodes themselves (`entry`), on names in a
//! directory (`names`), on open files (`files`), on directory listings (`dirs`), and extended
//! attributes (`xattr`). Each is a method of [`ShareFs`](super::ShareFs).

pub(super) mod dirs;
pub(super) mod entry;
pub(super) mod files;
pub(super) mod names;
pub(super) mod xattr;
