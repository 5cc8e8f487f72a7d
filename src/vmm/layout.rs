//! Where things live in the guest's physical address space.
//!
//! ```text
//! 0x0000_0500  GDT for the PVH entry
//! 0x0000_6000  PVH start_info, module list, memory map
//! 0x0000_7000  bzImage zero page (boot_params), boot stack below 0x9000
//! 0x0000_9000  bzImage identity page tables (PML4, PDPT, PD: 1 GiB in 2 MiB pages)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (last KiB of base memory), reserved up to 1 MiB
//! 0x0010_0000  RAM continues; the kernel loads at its ELF addresses, the initramfs at the
//!              top of low RAM
//! 0xd000_0000  virtio-mmio windows, 4 KiB each (IRQ 5 onwards)
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 local APIC
//! 0x1_0000_0000 RAM above 4 GiB, when the guest has more than 0xd000_0000 bytes
//! ```

/// The GDT used by the PVH entry (flat 32-bit segments).
pub const GDT_START: u64 = 0x500;
/// The PVH `hvm_start_info` structure.
pub const PVH_INFO_START: u64 = 0x6000;
/// The PVH module list (the initramfs).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// The PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x6080;
/// The most memory map entries written.
pub const PVH_MEMMAP_MAX: usize = 8;
/// The bzImage zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// The bzImage boot stack's top.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The bzImage page tables: PML4, then PDPT, then PD, a page each.
pub const PML4_START: u64 = 0x9000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// The longest kernel command line, NUL included (x86's COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// The MP floating pointer and configuration table.
pub const MPTABLE_START: u64 = 0x9_fc00;
/// Start of memory above the legacy hole (1 MiB).
pub const HIGHMEM_START: u64 = 0x10_0000;
/// First virtio-mmio window; low RAM ends here at the latest.
pub const MMIO_START: u64 = 0xd000_0000;
/// Start of RAM above 4 GiB.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// The IOAPIC's registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APICs' registers.
pub const APIC_START: u64 = 0xfee0_0000;
/// The first IRQ given to virtio devices (4 is the serial port's).
pub const IRQ_BASE: u32 = 5;
/// The last IOAPIC pin.
pub const IRQ_MAX: u32 = 23;
/// The TSS KVM needs on Intel (three pages below the BIOS area).
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
