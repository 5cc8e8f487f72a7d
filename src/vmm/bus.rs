//! Dispatch of vCPU exits to devices: port I/O to the serial port, the i8042 and a few
//! legacy ports that are answered without a device; mmio to the virtio transports. Every
//! exit is counted by kind, because in a nested VM each one costs ~100 µs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::devices::legacy::i8042::{self, I8042};
use crate::devices::legacy::serial::{COM1_BASE, COM1_PORTS, SerialDevice};
use crate::devices::virtio::mmio::{MMIO_WINDOW, MmioTransport};

/// What a write asks of the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusAction {
    /// Nothing more.
    Continue,
    /// The guest pulsed the reset line.
    Reset,
}

/// Counters of exits by kind.
#[derive(Debug, Default)]
pub struct ExitStats {
    serial: AtomicU64,
    i8042: AtomicU64,
    rtc: AtomicU64,
    pci: AtomicU64,
    other_pio: AtomicU64,
    virtio_mmio: AtomicU64,
    other_mmio: AtomicU64,
    other: AtomicU64,
}

impl ExitStats {
    /// Counts one exit that no device handles (HLT, shutdown...).
    pub fn count_other(&self) {
        self.other.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot, by kind, leaving out kinds never seen.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        [
            ("pio_serial", &self.serial),
            ("pio_i8042", &self.i8042),
            ("pio_rtc", &self.rtc),
            ("pio_pci", &self.pci),
            ("pio_other", &self.other_pio),
            ("mmio_virtio", &self.virtio_mmio),
            ("mmio_other", &self.other_mmio),
            ("other", &self.other),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .filter(|(_, v)| *v > 0)
        .collect()
    }
}

/// A summary of exits for reports.
#[derive(Debug, Clone, Serialize)]
pub struct ExitCounts(pub BTreeMap<&'static str, u64>);

/// The devices vCPUs reach.
pub struct Bus {
    serial: Mutex<SerialDevice>,
    i8042: I8042,
    virtio: Vec<(u64, Arc<Mutex<MmioTransport>>)>,
    /// Exits seen so far.
    pub stats: ExitStats,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Bus {
    /// A bus with COM1 and the virtio transports at their mmio bases.
    pub fn new(serial: SerialDevice, virtio: Vec<(u64, Arc<Mutex<MmioTransport>>)>) -> Self {
        Bus {
            serial: Mutex::new(serial),
            i8042: I8042,
            virtio,
            stats: ExitStats::default(),
        }
    }

    fn com1_offset(port: u16) -> Option<u8> {
        port.checked_sub(COM1_BASE)
            .filter(|o| *o < COM1_PORTS)
            .map(|o| o as u8)
    }

    /// A port read.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        if let Some(offset) = Self::com1_offset(port) {
            bump(&self.stats.serial);
            let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
            data.fill(0);
            if let Some(b) = data.first_mut() {
                *b = serial.read(offset);
            }
            return;
        }
        match port {
            i8042::DATA_PORT | i8042::COMMAND_PORT => {
                bump(&self.stats.i8042);
                data.fill(self.i8042.read(port));
            }
            // No CMOS RTC and no PCI: reads float high, as on a bus with nothing there.
            0x70 | 0x71 => {
                bump(&self.stats.rtc);
                data.fill(0xff);
            }
            0xcf8..=0xcff => {
                bump(&self.stats.pci);
                data.fill(0xff);
            }
            _ => {
                bump(&self.stats.other_pio);
                data.fill(0xff);
            }
        }
    }

    /// A port write.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> BusAction {
        let value = data.first().copied().unwrap_or(0);
        if let Some(offset) = Self::com1_offset(port) {
            bump(&self.stats.serial);
            let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
            // The UART only fails if the console cannot be written, which it tolerates.
            let _ = serial.write(offset, value);
            return BusAction::Continue;
        }
        match port {
            i8042::DATA_PORT | i8042::COMMAND_PORT => {
                bump(&self.stats.i8042);
                if self.i8042.write(port, value) {
                    return BusAction::Reset;
                }
            }
            0x70 | 0x71 => bump(&self.stats.rtc),
            0xcf8..=0xcff => bump(&self.stats.pci),
            _ => bump(&self.stats.other_pio),
        }
        BusAction::Continue
    }

    fn transport(&self, addr: u64) -> Option<(u64, &Arc<Mutex<MmioTransport>>)> {
        self.virtio
            .iter()
            .find(|(base, _)| addr >= *base && addr - *base < MMIO_WINDOW)
            .map(|(base, t)| (addr - base, t))
    }

    /// An mmio read.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.transport(addr) {
            Some((offset, t)) => {
                bump(&self.stats.virtio_mmio);
                t.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .read(offset, data);
            }
            None => {
                bump(&self.stats.other_mmio);
                data.fill(0xff);
            }
        }
    }

    /// An mmio write.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        match self.transport(addr) {
            Some((offset, t)) => {
                bump(&self.stats.virtio_mmio);
                t.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(offset, data);
            }
            None => bump(&self.stats.other_mmio),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::legacy::{console::ConsoleOutput, serial};

    fn bus() -> (Bus, crate::devices::legacy::console::ConsoleTail) {
        let (out, tail) = ConsoleOutput::new(None, false);
        let (serial, _irq) = serial::new(out).unwrap();
        (Bus::new(serial, Vec::new()), tail)
    }

    #[test]
    fn serial_output_reaches_the_console_and_is_counted() {
        let (bus, tail) = bus();
        for b in b"hi\n" {
            assert_eq!(bus.pio_write(COM1_BASE, &[*b]), BusAction::Continue);
        }
        assert_eq!(tail.text(), "hi\n");
        assert_eq!(bus.stats.snapshot().get("pio_serial"), Some(&3));
    }

    #[test]
    fn reset_and_unknown_ports() {
        let (bus, _) = bus();
        assert_eq!(bus.pio_write(0x64, &[0xfe]), BusAction::Reset);
        let mut d = [0u8; 1];
        bus.pio_read(0x71, &mut d);
        assert_eq!(d, [0xff]);
        let mut d = [0u8; 4];
        bus.pio_read(0xcfc, &mut d);
        assert_eq!(d, [0xff; 4]);
        bus.mmio_write(0xdead_0000, &[1, 2, 3, 4]);
        bus.mmio_read(0xdead_0000, &mut d);
        assert_eq!(d, [0xff; 4]);
        let s = bus.stats.snapshot();
        assert_eq!(
            (s["pio_i8042"], s["pio_rtc"], s["pio_pci"], s["mmio_other"]),
            (1, 1, 1, 2)
        );
    }
}
