//! The Intel MultiProcessor table (MP spec 1.4): how a guest without ACPI finds its CPUs,
//! the IOAPIC and how ISA interrupts are wired. Linux looks for the floating pointer in the
//! last KiB of base memory, where [`MPTABLE_START`] puts it.

use vm_memory::{Bytes, GuestAddress};

use crate::vmm::GuestMemory;
use crate::vmm::layout::{APIC_START, IOAPIC_START, IRQ_MAX, MPTABLE_START};

/// The most CPUs the table describes (APIC ids 0..N-1; the IOAPIC takes id N).
pub const MAX_CPUS: u8 = 254;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const CPU_ENABLED: u8 = 1;
const CPU_BOOT_PROCESSOR: u8 = 2;
/// CPUID signature of the processors: family 6.
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags: FPU and APIC present.
const CPU_FEATURES: u32 = 0x201;

/// Errors writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// Zero CPUs or more than [`MAX_CPUS`].
    #[error("{0} vCPUs cannot be described (1 to {MAX_CPUS})")]
    CpuCount(u8),
    /// The table does not fit in guest memory.
    #[error("cannot write the MP table: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Makes the bytes of `buf` sum to zero by setting the byte at `at`.
fn set_checksum(buf: &mut [u8], at: usize) {
    buf[at] = 0;
    let sum = buf.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    buf[at] = 0u8.wrapping_sub(sum);
}

/// The table's bytes for `cpus` CPUs, placed at `base`: floating pointer, then the
/// configuration table.
pub fn build(base: u64, cpus: u8) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MpTableError::CpuCount(cpus));
    }
    let ioapic_id = cpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOT_PROCESSOR } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..=IRQ_MAX as u8 {
        // Each ISA IRQ goes to the IOAPIC pin of the same number, as the bus defines it.
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            0,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    for (kind, lint) in [(INT_TYPE_EXTINT, 0u8), (INT_TYPE_NMI, 1u8)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind, 0, 0, 0, 0, 0xff, lint]);
        count += 1;
    }

    let table_addr = base + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.extend_from_slice(&[4, 0]); // spec 1.4, checksum
    table.extend_from_slice(b"RUNVM   ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&[0; 6]); // no OEM table
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&[0; 4]); // no extended table
    table.extend_from_slice(&entries);
    set_checksum(&mut table, 7);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // 16 bytes, spec 1.4, no default config
    set_checksum(&mut out, 10);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the table for `cpus` CPUs at [`MPTABLE_START`].
pub fn write(mem: &GuestMemory, cpus: u8) -> Result<(), MpTableError> {
    let bytes = build(MPTABLE_START, cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_counts() {
        for cpus in [1u8, 2, 8, MAX_CPUS] {
            let t = build(MPTABLE_START, cpus).unwrap();
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
            let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
            assert_eq!(ptr, MPTABLE_START + 16);
            let table = &t[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "configuration table checksum");
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count as usize, cpus as usize + 2 + 24 + 2);
            // Exactly one boot processor, the first.
            assert_eq!(table[44 + 3], CPU_ENABLED | CPU_BOOT_PROCESSOR);
            if cpus > 1 {
                assert_eq!(table[44 + 20 + 3], CPU_ENABLED);
            }
        }
    }

    #[test]
    fn cpu_counts_out_of_range_are_refused() {
        assert!(matches!(build(0, 0), Err(MpTableError::CpuCount(0))));
        assert!(matches!(build(0, 255), Err(MpTableError::CpuCount(255))));
    }
}
