//! The PVH boot protocol (Xen's `hvm_start_info`, which Linux's PVH entry reads): start info,
//! the initramfs as module 0, and the e820-style memory map.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Address, Bytes, GuestAddress};

use super::memory_map;
use crate::vmm::GuestMemory;
use crate::vmm::layout::{
    CMDLINE_START, PVH_INFO_START, PVH_MEMMAP_MAX, PVH_MEMMAP_START, PVH_MODLIST_START,
};

/// `hvm_start_info.magic`: "xEn3" with the top bit flipped.
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Writes `hvm_start_info`, the module list and the memory map; returns the start info's
/// address (for %ebx).
pub fn write_start_info(
    mem: &GuestMemory,
    initrd: Option<(GuestAddress, usize)>,
) -> Result<GuestAddress, vm_memory::GuestMemoryError> {
    let map = memory_map(mem);
    let entries = map.len().min(PVH_MEMMAP_MAX);
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    for (i, &(addr, size, type_)) in map.iter().take(entries).enumerate() {
        let e = hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        };
        mem.write_obj(e, GuestAddress(PVH_MEMMAP_START + entry_size * i as u64))?;
    }
    let mut nr_modules = 0;
    if let Some((addr, size)) = initrd {
        let m = hvm_modlist_entry {
            paddr: addr.raw_value(),
            size: size as u64,
            ..Default::default()
        };
        mem.write_obj(m, GuestAddress(PVH_MODLIST_START))?;
        nr_modules = 1;
    }
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules,
        modlist_paddr: PVH_MODLIST_START,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: entries as u32,
        ..Default::default()
    };
    mem.write_obj(info, GuestAddress(PVH_INFO_START))?;
    Ok(GuestAddress(PVH_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::memory;

    #[test]
    fn start_info_points_at_its_parts() {
        let mem = memory::create(64).unwrap();
        let at = write_start_info(&mem, Some((GuestAddress(0x300_0000), 4096))).unwrap();
        let magic: u32 = mem.read_obj(at).unwrap();
        assert_eq!(magic, XEN_HVM_START_MAGIC);
        let nr_modules: u32 = mem.read_obj(at.unchecked_add(12)).unwrap();
        assert_eq!(nr_modules, 1);
        let initrd: u64 = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!(initrd, 0x300_0000);
        let entries: u32 = mem.read_obj(at.unchecked_add(48)).unwrap();
        assert_eq!(entries, 3);
        let third_size: u64 = mem
            .read_obj(GuestAddress(PVH_MEMMAP_START + 48 + 8))
            .unwrap();
        assert_eq!(third_size, (64 << 20) - crate::vmm::layout::HIGHMEM_START);
    }
}
