//! The virtual machine monitor: guest memory, boot, vCPUs and the event loop.

pub mod boot;
pub mod bus;
pub mod cpu;
pub mod event_loop;
pub mod layout;
pub mod memory;
pub mod pause;
pub mod vcpu;
pub mod vm;

/// Guest RAM as every device and the boot code see it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
