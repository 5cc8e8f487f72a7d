//! The 16550 UART at 0x3f8 (COM1, IRQ 4), from vm-superio; its interrupt is an irqfd.

use std::io;

use vm_superio::Trigger;
use vm_superio::serial::NoEvents;
use vmm_sys_util::eventfd::EventFd;

use super::console::ConsoleOutput;

/// The first port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Ports COM1 occupies.
pub const COM1_PORTS: u16 = 8;
/// COM1's IRQ.
pub const COM1_IRQ: u32 = 4;

/// Raises the UART's interrupt by writing its irqfd.
pub struct IrqFdTrigger(EventFd);

impl Trigger for IrqFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// COM1 writing to the console.
pub type SerialDevice = vm_superio::Serial<IrqFdTrigger, NoEvents, ConsoleOutput>;

/// A UART writing to `out`, and the irqfd to register for [`COM1_IRQ`].
pub fn new(out: ConsoleOutput) -> io::Result<(SerialDevice, EventFd)> {
    let irqfd = EventFd::new(libc::EFD_NONBLOCK)?;
    let serial = vm_superio::Serial::new(IrqFdTrigger(irqfd.try_clone()?), out);
    Ok((serial, irqfd))
}
