//! The 64-bit Linux boot protocol for a bzImage: the zero page (`boot_params`) with the
//! setup header from the image, the command line, the initramfs and the e820 map.

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Address, Bytes, GuestAddress};

use super::memory_map;
use crate::vmm::GuestMemory;
use crate::vmm::layout::{CMDLINE_START, ZERO_PAGE_START};

/// `setup_header.type_of_loader`: "undefined" bootloader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `setup_header.boot_flag`.
const BOOT_FLAG: u16 = 0xaa55;
/// `setup_header.header`: "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `setup_header.kernel_alignment` when the image gives none.
const KERNEL_ALIGNMENT: u32 = 0x0100_0000;

/// Writes `boot_params` for a bzImage whose setup header is `header`; returns its address
/// (for %rsi).
pub fn write_zero_page(
    mem: &GuestMemory,
    header: setup_header,
    cmdline: &Cmdline,
    initrd: Option<(GuestAddress, usize)>,
) -> Result<GuestAddress, vm_memory::GuestMemoryError> {
    let mut params = boot_params {
        hdr: header,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline
        .as_cstring()
        .map_or(0, |c| c.as_bytes_with_nul().len() as u32);
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
    }
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr.raw_value() as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = memory_map(mem);
    let n = map.len().min(params.e820_table.len());
    for (slot, &(addr, size, type_)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr, size, type_ };
    }
    params.e820_entries = n as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))?;
    Ok(GuestAddress(ZERO_PAGE_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::memory;

    #[test]
    fn zero_page_carries_cmdline_initrd_and_e820() {
        let mem = memory::create(64).unwrap();
        let cmdline = super::super::new_cmdline("console=ttyS0").unwrap();
        let at = write_zero_page(
            &mem,
            setup_header::default(),
            &cmdline,
            Some((GuestAddress(0x300_0000), 1234)),
        )
        .unwrap();
        let p: boot_params = mem.read_obj(at).unwrap();
        let hdr = p.hdr;
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.cmdline_size }, "console=ttyS0".len() as u32 + 1);
        assert_eq!(
            ({ hdr.ramdisk_image }, { hdr.ramdisk_size }),
            (0x300_0000, 1234)
        );
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!({ last.size }, (64 << 20) - 0x10_0000);
    }
}
