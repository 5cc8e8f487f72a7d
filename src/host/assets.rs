//! Are the guest kernel and initramfs installed, and are they what they claim to be?
//! Recognises files by their first bytes only: a wrong file is reported, not loaded.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Offset of the `HdrS` signature in an x86 bzImage (the boot protocol header).
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;

/// What kind of file a guest asset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    /// An ELF image (an uncompressed `vmlinux`, booted through its PVH entry).
    Elf,
    /// An x86 bzImage.
    BzImage,
    /// A newc cpio archive.
    Cpio,
    /// A gzip-compressed file (a compressed cpio).
    Gzip,
    /// Anything else.
    Unknown,
}

/// Which role a file is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetRole {
    /// The guest kernel.
    Kernel,
    /// The guest initramfs.
    Initramfs,
}

/// Reads at most the first `BZIMAGE_MAGIC_OFFSET + 4` bytes and names the format.
pub fn sniff(path: &Path) -> std::io::Result<AssetKind> {
    let mut head = Vec::with_capacity(BZIMAGE_MAGIC_OFFSET + 4);
    File::open(path)?
        .take((BZIMAGE_MAGIC_OFFSET + 4) as u64)
        .read_to_end(&mut head)?;
    Ok(kind_of(&head))
}

fn kind_of(head: &[u8]) -> AssetKind {
    if head.starts_with(b"\x7fELF") {
        AssetKind::Elf
    } else if head.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4) == Some(b"HdrS") {
        AssetKind::BzImage
    } else if head.starts_with(b"070701") || head.starts_with(b"070702") {
        AssetKind::Cpio
    } else if head.starts_with(&[0x1f, 0x8b]) {
        AssetKind::Gzip
    } else {
        AssetKind::Unknown
    }
}

/// Checks that `path` is installed and fits `role`; returns a description or why not.
pub fn check(path: &Path, role: AssetRole) -> Result<String, String> {
    let kind = sniff(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("not installed: {} does not exist", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    let what = match (role, kind) {
        (AssetRole::Kernel, AssetKind::Elf) => "ELF vmlinux",
        (AssetRole::Kernel, AssetKind::BzImage) => "bzImage",
        (AssetRole::Initramfs, AssetKind::Cpio) => "newc cpio",
        (AssetRole::Initramfs, AssetKind::Gzip) => "gzip-compressed cpio",
        (AssetRole::Kernel, _) => {
            return Err(format!(
                "{} is not a kernel image (neither ELF nor bzImage)",
                path.display()
            ));
        }
        (AssetRole::Initramfs, _) => {
            return Err(format!(
                "{} is not an initramfs (neither newc cpio nor gzip)",
                path.display()
            ));
        }
    };
    Ok(format!("{} ({what})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_magic() {
        assert_eq!(kind_of(b"\x7fELF\x02\x01"), AssetKind::Elf);
        let mut bz = vec![0u8; 0x210];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(kind_of(&bz), AssetKind::BzImage);
        assert_eq!(kind_of(b"07070100000001"), AssetKind::Cpio);
        assert_eq!(kind_of(&[0x1f, 0x8b, 8, 0]), AssetKind::Gzip);
        assert_eq!(kind_of(b""), AssetKind::Unknown);
        assert_eq!(kind_of(b"#!/bin/sh"), AssetKind::Unknown);
    }

    #[test]
    fn check_reports_missing_wrong_and_right_files() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("vmlinux");
        let err = check(&k, AssetRole::Kernel).unwrap_err();
        assert!(err.starts_with("not installed"), "{err}");

        std::fs::write(&k, b"070701...").unwrap();
        let err = check(&k, AssetRole::Kernel).unwrap_err();
        assert!(err.contains("not a kernel image"), "{err}");
        let ok = check(&k, AssetRole::Initramfs).unwrap();
        assert!(ok.ends_with("(newc cpio)"), "{ok}");

        std::fs::write(&k, b"\x7fELF\x02\x01\x01").unwrap();
        assert!(
            check(&k, AssetRole::Kernel)
                .unwrap()
                .ends_with("(ELF vmlinux)")
        );
    }
}
