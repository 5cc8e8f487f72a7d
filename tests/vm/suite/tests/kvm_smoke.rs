//! The harness proves itself: a tiny real-mode guest on kvm-ioctls writes to an I/O port,
//! stores to its RAM, touches an unmapped address and halts; each exit is asserted.

#![allow(clippy::unwrap_used)]

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use runvm_vm_tests::require_real_kvm;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

/// Where the guest's RAM starts and how big it is (two pages).
const RAM_START: u64 = 0x1000;
const RAM_SIZE: usize = 0x2000;
/// Guest-physical address outside RAM: a store there must exit as MMIO.
const MMIO_ADDR: u64 = 0x8000;

/// 16-bit real-mode code, loaded at RAM_START:
///   mov dx, 0x3f8 ; add al, bl ; add al, '0' ; out dx, al
///   mov [0x2000], al ; mov al, 0x0a ; out dx, al
///   mov byte [0x8000], 0xab ; hlt
const CODE: &[u8] = &[
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0x00, 0xd8, // add al, bl
    0x04, b'0', // add al, '0'
    0xee, // out dx, al
    0xa2, 0x00, 0x20, // mov [0x2000], al
    0xb0, 0x0a, // mov al, 0x0a
    0xee, // out dx, al
    0xc6, 0x06, 0x00, 0x80, 0xab, // mov byte [0x8000], 0xab
    0xf4, // hlt
];

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    IoOut(u16, Vec<u8>),
    MmioWrite(u64, Vec<u8>),
    Hlt,
}

#[test]
fn real_mode_guest_exits_on_io_mmio_and_hlt() {
    require_real_kvm();

    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_START), RAM_SIZE)]).unwrap();
    mem.write_slice(CODE, GuestAddress(RAM_START)).unwrap();
    let host_addr = mem.get_host_address(GuestAddress(RAM_START)).unwrap();
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: RAM_START,
        memory_size: RAM_SIZE as u64,
        userspace_addr: host_addr as u64,
    };
    // SAFETY: `region` describes `mem`'s single mapping, which lives until the end of this
    // function, longer than the VM that uses it.
    unsafe { vm.set_user_memory_region(region).unwrap() };

    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = RAM_START;
    regs.rax = 2;
    regs.rbx = 3;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();

    let mut seen = Vec::new();
    for _ in 0..16 {
        match vcpu.run().unwrap() {
            VcpuExit::IoOut(port, data) => seen.push(Seen::IoOut(port, data.to_vec())),
            VcpuExit::MmioWrite(addr, data) => seen.push(Seen::MmioWrite(addr, data.to_vec())),
            VcpuExit::Hlt => {
                seen.push(Seen::Hlt);
                break;
            }
            other => panic!("unexpected exit {other:?} after {seen:?}"),
        }
    }

    assert_eq!(
        seen,
        [
            Seen::IoOut(0x3f8, b"5".to_vec()),
            Seen::IoOut(0x3f8, b"\n".to_vec()),
            Seen::MmioWrite(MMIO_ADDR, vec![0xab]),
            Seen::Hlt,
        ]
    );
    // The store to 0x2000 landed in guest RAM, which the host sees.
    let stored: u8 = mem.read_obj(GuestAddress(0x2000)).unwrap();
    assert_eq!(stored, b'5');
    let regs = vcpu.get_regs().unwrap();
    assert_eq!(
        regs.rip,
        RAM_START + CODE.len() as u64,
        "halted after the last instruction"
    );
}
