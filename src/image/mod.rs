//! The guest image runvm writes itself: the initramfs holding guest-init.

pub mod cpio;

use std::path::Path;

/// Errors building the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// guest-init could not be read.
    #[error("cannot read guest-init {path}: {source}")]
    ReadInit {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The archive could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The initramfs of a runvm guest: the directories guest-init mounts on, `/dev/console`
/// (the kernel opens it for init's stdio before devtmpfs exists), and `/init`.
pub fn initramfs(init: &[u8]) -> Vec<u8> {
    let mut archive = cpio::Archive::default();
    for dir in ["dev", "proc", "sys", "run", "tmp"] {
        archive.dir(dir, 0o755);
    }
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.file("init", 0o755, init);
    archive.finish()
}

/// Writes the initramfs for the guest-init binary at `init` to `out`.
pub fn write_initramfs(init: &Path, out: &Path) -> Result<(), ImageError> {
    let bytes = std::fs::read(init).map_err(|source| ImageError::ReadInit {
        path: init.to_owned(),
        source,
    })?;
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, initramfs(&bytes))
        .and_then(|()| std::fs::rename(&tmp, out))
        .map_err(|source| ImageError::Write {
            path: out.to_owned(),
            source,
        })
}
