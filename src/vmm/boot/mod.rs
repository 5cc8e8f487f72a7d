//! Loading the guest: the kernel, the initramfs, the command line, the memory map and the MP
//! table. An ELF vmlinux is entered through its PVH entry point (fastest: no decompression,
//! no page tables to build); a bzImage through the 64-bit Linux boot protocol.

pub mod bzimage;
pub mod mptable;
pub mod pvh;

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{BzImage, KernelLoader, elf::Elf, elf::PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _, GuestMemoryRegion};

use super::GuestMemory;
use super::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIGHMEM_START, MPTABLE_START};
use crate::host::assets::{self, AssetKind};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// Errors loading the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened.
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel is not a loadable ELF.
    #[error("cannot load kernel {path}: {source}")]
    LoadKernel {
        /// The file.
        path: PathBuf,
        /// Why.
        source: linux_loader::loader::Error,
    },
    /// The ELF has no PVH entry note.
    #[error("kernel {0} has no PVH entry point (build it with CONFIG_PVH=y)")]
    NoPvhEntry(PathBuf),
    /// The initramfs could not be read.
    #[error("cannot read initramfs {path}: {source}")]
    ReadInitramfs {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The initramfs does not fit in guest RAM beside the kernel.
    #[error("initramfs of {0} bytes does not fit in guest memory")]
    InitramfsTooLarge(usize),
    /// The command line is too long or malformed.
    #[error("kernel command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    /// The command line could not be written to guest memory.
    #[error("cannot write the kernel command line: {0}")]
    LoadCmdline(linux_loader::loader::Error),
    /// Writing boot structures to guest memory failed.
    #[error("cannot write boot data to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// The MP table could not be written.
    #[error("MP table: {0}")]
    MpTable(#[from] mptable::MpTableError),
    /// Neither an ELF nor a bzImage.
    #[error("kernel {0} is neither an ELF vmlinux nor a bzImage")]
    UnknownFormat(PathBuf),
}

/// Where and how the guest starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// An ELF vmlinux's PVH entry: 32-bit protected mode, paging off, %ebx = start info.
    Pvh {
        /// The entry address.
        entry: GuestAddress,
        /// The `hvm_start_info` address.
        start_info: GuestAddress,
    },
    /// A bzImage's 64-bit entry: long mode, identity-mapped, %rsi = zero page.
    Linux64 {
        /// The entry address (load address + 0x200).
        entry: GuestAddress,
        /// The `boot_params` address.
        zero_page: GuestAddress,
    },
}

/// One memory map entry: address, size, e820 type.
pub type MemmapEntry = (u64, u64, u32);

/// The guest's memory map: base memory up to the MP table, the reserved legacy area, then
/// every RAM region from 1 MiB.
pub fn memory_map(mem: &GuestMemory) -> Vec<MemmapEntry> {
    let mut map = vec![
        (0, MPTABLE_START, E820_RAM),
        (MPTABLE_START, HIGHMEM_START - MPTABLE_START, E820_RESERVED),
    ];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIGHMEM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

/// Starts a command line with the arguments every runvm guest needs.
pub fn new_cmdline(extra: &str) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE)?;
    cmdline.insert_str(extra)?;
    Ok(cmdline)
}

/// Loads `kernel` (and `initramfs`) into `mem`, writes the command line, memory map and MP
/// table for `vcpus` CPUs, and returns where to start.
pub fn load(
    mem: &GuestMemory,
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &Cmdline,
    vcpus: u8,
) -> Result<EntryPoint, BootError> {
    let open_error = |source| BootError::OpenKernel {
        path: kernel.to_owned(),
        source,
    };
    let load_error = |source| BootError::LoadKernel {
        path: kernel.to_owned(),
        source,
    };
    let kind = assets::sniff(kernel).map_err(open_error)?;
    let mut file = File::open(kernel).map_err(open_error)?;
    let highmem = Some(GuestAddress(HIGHMEM_START));
    let (loaded, pvh_entry) = match kind {
        AssetKind::Elf => {
            let loaded = Elf::load(mem, None, &mut file, highmem).map_err(load_error)?;
            let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
                return Err(BootError::NoPvhEntry(kernel.to_owned()));
            };
            (loaded, Some(entry))
        }
        AssetKind::BzImage => (
            BzImage::load(mem, None, &mut file, highmem).map_err(load_error)?,
            None,
        ),
        _ => return Err(BootError::UnknownFormat(kernel.to_owned())),
    };
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(BootError::LoadCmdline)?;

    // A bzImage decompresses itself in place and needs init_size bytes from its load address.
    let kernel_end = loaded.setup_header.map_or(loaded.kernel_end, |h| {
        loaded.kernel_load.raw_value()
            + u64::from(h.init_size).max(loaded.kernel_end - loaded.kernel_load.raw_value())
    });
    let initrd = match initramfs {
        Some(path) => Some(load_initramfs(mem, path, kernel_end)?),
        None => None,
    };
    mptable::write(mem, vcpus)?;
    Ok(match (pvh_entry, loaded.setup_header) {
        (Some(entry), _) => EntryPoint::Pvh {
            entry,
            start_info: pvh::write_start_info(mem, initrd)?,
        },
        (None, Some(header)) => EntryPoint::Linux64 {
            entry: loaded.kernel_load.unchecked_add(0x200),
            zero_page: bzimage::write_zero_page(mem, header, cmdline, initrd)?,
        },
        (None, None) => return Err(BootError::UnknownFormat(kernel.to_owned())),
    })
}

/// Places the initramfs page-aligned at the top of the first RAM region, above the kernel.
fn load_initramfs(
    mem: &GuestMemory,
    path: &Path,
    kernel_end: u64,
) -> Result<(GuestAddress, usize), BootError> {
    let data = std::fs::read(path).map_err(|source| BootError::ReadInitramfs {
        path: path.to_owned(),
        source,
    })?;
    let low_end = mem
        .iter()
        .next()
        .map(|r| r.start_addr().raw_value() + r.len())
        .unwrap_or(0);
    let size = data.len() as u64;
    let addr = low_end
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end.max(HIGHMEM_START))
        .ok_or(BootError::InitramfsTooLarge(data.len()))?;
    mem.write_slice(&data, GuestAddress(addr))?;
    Ok((GuestAddress(addr), data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::memory;

    #[test]
    fn memory_map_reserves_the_legacy_hole_and_covers_ram() {
        let mem = memory::create(64).unwrap();
        assert_eq!(
            memory_map(&mem),
            vec![
                (0, MPTABLE_START, E820_RAM),
                (MPTABLE_START, HIGHMEM_START - MPTABLE_START, E820_RESERVED),
                (HIGHMEM_START, (64 << 20) - HIGHMEM_START, E820_RAM),
            ]
        );
    }

    #[test]
    fn files_that_are_no_kernel_are_refused() {
        let mem = memory::create(64).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, b"#!/bin/sh\n").unwrap();
        let cmdline = new_cmdline("console=ttyS0").unwrap();
        let err = load(&mem, &k, None, &cmdline, 1).unwrap_err();
        assert!(matches!(err, BootError::UnknownFormat(_)), "{err}");
        std::fs::write(&k, b"\x7fELF\x02\x01\x01garbage").unwrap();
        let err = load(&mem, &k, None, &cmdline, 1).unwrap_err();
        assert!(matches!(err, BootError::LoadKernel { .. }), "{err}");
        let err = load(&mem, &dir.path().join("missing"), None, &cmdline, 1).unwrap_err();
        assert!(matches!(err, BootError::OpenKernel { .. }), "{err}");
    }
}
