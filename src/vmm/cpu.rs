//! Per-vCPU set-up before the first entry: CPUID (topology, hypervisor bit, TSC-deadline
//! timer; KVM's own leaves stay, so the guest uses kvmclock), the local APIC's LINT pins,
//! and for the boot CPU the register state its entry expects: for PVH, 32-bit protected
//! mode, flat segments, paging off, %ebx = `hvm_start_info`; for a bzImage, long mode with
//! the first GiB identity-mapped, %rsi = `boot_params`. Application processors wait for the
//! guest's SIPI.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_fpu, kvm_lapic_state, kvm_segment};
use kvm_ioctls::{Cap, Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use super::GuestMemory;
use super::boot::EntryPoint;
use super::layout::{BOOT_STACK_POINTER, GDT_START, PML4_START};

/// Errors setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// The GDT could not be written.
    #[error("cannot write the GDT: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}

/// The host's supported CPUID, read once per VM, plus the TSC-deadline timer when KVM's
/// local APIC emulates it (KVM leaves that bit to userspace).
pub fn supported_cpuid(kvm_fd: &Kvm) -> Result<CpuId, CpuError> {
    let mut cpuid = kvm_fd
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm("KVM_GET_SUPPORTED_CPUID"))?;
    if kvm_fd.check_extension(Cap::TscDeadlineTimer) {
        offer_tsc_deadline(&mut cpuid);
    }
    Ok(cpuid)
}

/// Leaf 1, ECX bit 24: the TSC-deadline timer. A guest kernel that sees it arms its local
/// APIC timer from the TSC and skips calibrating that timer, which otherwise spins for
/// tens of timer ticks at every boot.
fn offer_tsc_deadline(cpuid: &mut CpuId) {
    for e in cpuid.as_mut_slice() {
        if e.function == 0x1 {
            e.ecx |= 1 << 24;
        }
    }
}

/// Bits needed to number `count` things.
fn id_bits(count: u8) -> u32 {
    if count <= 1 {
        0
    } else {
        u32::from(count - 1).ilog2() + 1
    }
}

/// Adapts the supported CPUID to vCPU `index` of `count`: one package, `count` cores, one
/// thread each, APIC id = index.
pub fn patch_cpuid(cpuid: &mut CpuId, index: u8, count: u8) {
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(count) << 16);
                e.ecx |= 1 << 31; // running under a hypervisor
                if count > 1 {
                    e.edx |= 1 << 28; // more than one logical processor
                }
            }
            0x4 => {
                // Intel: cores per package in EAX[31:26], minus one.
                e.eax = (e.eax & 0x03ff_ffff) | (u32::from(count - 1) << 26);
            }
            0xb | 0x1f => {
                e.edx = u32::from(index);
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = id_bits(count);
                        e.ebx = u32::from(count);
                        e.ecx = (2 << 8) | 1;
                    }
                    i => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = i;
                    }
                }
            }
            0x8000_0008 => {
                // AMD: number of cores minus one in ECX[7:0].
                e.ecx = (e.ecx & !0xff) | u32::from(count - 1);
            }
            _ => {}
        }
    }
}

/// A GDT entry from flags, base and limit (the layout of the x86 segment descriptor).
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The segment register KVM needs for a GDT entry.
fn segment(entry: u64, selector: u16) -> kvm_segment {
    let limit = ((entry & 0x000f_0000_0000_0000) >> 32) as u32 | (entry & 0xffff) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base: (((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff)),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

const LAPIC_LVT_LINT0: usize = 0x350;
const LAPIC_LVT_LINT1: usize = 0x360;
const DELIVERY_MODE_EXTINT: u32 = 0x7;
const DELIVERY_MODE_NMI: u32 = 0x4;

fn lapic_reg(lapic: &kvm_lapic_state, at: usize) -> u32 {
    let b = &lapic.regs[at..at + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, at: usize, value: u32) {
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[at + i] = b as _;
    }
}

/// Wires LINT0 to ExtINT (the PIC) and LINT1 to NMI, as firmware would.
fn set_lints(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    for (reg, mode) in [
        (LAPIC_LVT_LINT0, DELIVERY_MODE_EXTINT),
        (LAPIC_LVT_LINT1, DELIVERY_MODE_NMI),
    ] {
        let v = lapic_reg(&lapic, reg);
        set_lapic_reg(&mut lapic, reg, (v & !0x700) | (mode << 8));
    }
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))
}

/// The boot CPU's starting state, written to guest memory by [`prepare_boot_cpu`].
#[derive(Debug, Clone, Copy)]
pub struct BootCpu {
    entry: EntryPoint,
    gdt: [u64; 4],
}

/// Page-table entry bits: present, writable, and (in a PD) a 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_HUGE: u64 = 0x80;

/// Writes the boot CPU's GDT, and for long mode the identity page tables of the first GiB.
pub fn prepare_boot_cpu(mem: &GuestMemory, entry: EntryPoint) -> Result<BootCpu, CpuError> {
    let code = match entry {
        EntryPoint::Pvh { .. } => gdt_entry(0xc09b, 0, 0xffff_ffff), // 32-bit code
        EntryPoint::Linux64 { .. } => gdt_entry(0xa09b, 0, 0xffff_ffff), // 64-bit code
    };
    let gdt = [
        gdt_entry(0, 0, 0),
        code,
        gdt_entry(0xc093, 0, 0xffff_ffff), // data: read/write, 4 KiB granular
        gdt_entry(0x008b, 0, 0x67),        // TSS
    ];
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_START + 8 * i as u64))?;
    }
    if let EntryPoint::Linux64 { .. } = entry {
        let (pdpt, pd) = (PML4_START + 0x1000, PML4_START + 0x2000);
        mem.write_obj(pdpt | PTE_PRESENT_RW, GuestAddress(PML4_START))?;
        mem.write_obj(pd | PTE_PRESENT_RW, GuestAddress(pdpt))?;
        for i in 0..512u64 {
            mem.write_obj(
                (i << 21) | PDE_HUGE | PTE_PRESENT_RW,
                GuestAddress(pd + 8 * i),
            )?;
        }
    }
    Ok(BootCpu { entry, gdt })
}

/// Sets up vCPU `index` of `count`; the boot CPU (index 0) also gets its entry state.
pub fn configure(
    vcpu: &VcpuFd,
    cpuid: &CpuId,
    index: u8,
    count: u8,
    boot: Option<&BootCpu>,
) -> Result<(), CpuError> {
    let mut cpuid = cpuid.clone();
    patch_cpuid(&mut cpuid, index, count);
    vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;
    set_lints(vcpu)?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;
    let Some(boot) = boot else {
        return Ok(());
    };
    let gdt = boot.gdt;
    let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let data = segment(gdt[2], 0x10);
    sregs.cs = segment(gdt[1], 0x08);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], 0x18);
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let mut regs = vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
    regs.rflags = 0x2;
    match boot.entry {
        EntryPoint::Pvh { entry, start_info } => {
            sregs.cr0 = CR0_PE;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry.0;
            regs.rbx = start_info.0;
        }
        EntryPoint::Linux64 { entry, zero_page } => {
            sregs.cr0 = CR0_PE | CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry.0;
            regs.rsi = zero_page.0;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))
}

const CR0_PE: u64 = 0x1;
const CR0_PG: u64 = 0x8000_0000;
const CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn long_mode_identity_maps_the_first_gib() {
        let mem = crate::vmm::memory::create(64).unwrap();
        let entry = EntryPoint::Linux64 {
            entry: GuestAddress(0x100_200),
            zero_page: GuestAddress(0x7000),
        };
        let boot = prepare_boot_cpu(&mem, entry).unwrap();
        assert_eq!(segment(boot.gdt[1], 8).l, 1, "64-bit code segment");
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        let pdpt: u64 = mem.read_obj(GuestAddress(pml4 & !0xfff)).unwrap();
        let pd = pdpt & !0xfff;
        let last: u64 = mem.read_obj(GuestAddress(pd + 8 * 511)).unwrap();
        assert_eq!(last, (511 << 21) | 0x83);
        let pvh = prepare_boot_cpu(
            &mem,
            EntryPoint::Pvh {
                entry: GuestAddress(0x100_0000),
                start_info: GuestAddress(0x6000),
            },
        )
        .unwrap();
        assert_eq!(segment(pvh.gdt[1], 8).db, 1, "32-bit code segment");
    }

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment(gdt_entry(0xc09b, 0, 0xffff_ffff), 0x08);
        assert_eq!((code.base, code.limit), (0, 0xffff_ffff));
        assert_eq!(
            (code.type_, code.present, code.s, code.db, code.g),
            (0xb, 1, 1, 1, 1)
        );
        assert_eq!(code.unusable, 0);
        let tss = segment(gdt_entry(0x008b, 0, 0x67), 0x18);
        assert_eq!((tss.limit, tss.type_, tss.s, tss.g), (0x67, 0xb, 0, 0));
        assert_eq!(segment(0, 0).unusable, 1);
    }

    #[test]
    fn cpuid_topology_names_each_cpu() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0x0000_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0008,
                ecx: 0x3f,
                ..Default::default()
            },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        patch_cpuid(&mut cpuid, 2, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 2, "APIC id");
        assert_eq!((e[0].ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!(e[0].ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(e[0].ecx & (1 << 31), 0, "hypervisor bit");
        assert_eq!((e[1].ebx, e[1].edx), (1, 2));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx), (2, 4, 0x201));
        assert_eq!(e[3].ecx & 0xff, 3);
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(5), 3);
    }

    #[test]
    fn the_tsc_deadline_timer_is_offered_in_leaf_one_only() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ecx: 0x8000_0001,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ..Default::default()
            },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        offer_tsc_deadline(&mut cpuid);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ecx, 0x8100_0001);
        assert_eq!(e[1].ecx, 0);
    }
}
