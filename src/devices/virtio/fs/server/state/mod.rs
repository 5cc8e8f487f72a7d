//! What the server keeps between requests: the inode table and its guest-visible numbers,
//! the descriptors that reach each inode and the walk that reopens them, the open handles and
//! where a directory listing stands.

pub(super) mod dir_stream;
pub(super) mod fd_cache;
pub(super) mod handles;
pub(super) mod ino_map;
pub(super) mod inodes;
pub(super) mod resolve;
