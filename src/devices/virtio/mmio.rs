//! The virtio-mmio transport (virtio 1.x, register layout version 2): the register file a
//! guest driver uses to discover a device, negotiate features, set up queues and start it.
//!
//! One [`MmioTransport`] wraps one [`VirtioDevice`]. The vCPU thread calls
//! [`MmioTransport::read`] and [`MmioTransport::write`] for every access to the device's
//! 4 KiB window. Everything the driver writes is checked: features must be a subset of what
//! the device offers, queue sizes powers of two within the maximum, queue rings inside guest
//! memory; a driver that gets it wrong sees FEATURES_OK refused or DEVICE_NEEDS_RESET, never
//! a panic.
//!
//! The guest's interrupt handler reads InterruptStatus and writes it back to InterruptACK:
//! two exits to the VMM per interrupt. The VMM registers [`MmioTransport::vring_ack_event`]
//! as an ioeventfd on InterruptACK matching the value [`INT_VRING`](super::INT_VRING) alone,
//! so the common acknowledgement (used buffers, nothing else) ends in KVM and never reaches
//! the VMM: the VRING bit then stays set once raised, and the driver looks at its queues at
//! every interrupt of the device, as it would for a new used buffer (it finds none: no harm).
//! Any other acknowledgement (a configuration change) exits as before and clears the bits
//! it names.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
use crate::vmm::GuestMemory;

/// Size of one device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4d56_5552; // "RUVM"

// Register offsets (virtio 1.2 §4.2.2).
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
const REG_QUEUE_USED_LOW: u64 = 0x0a0;
const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
/// Offset of the configuration space.
pub const REG_CONFIG: u64 = 0x100;

/// The QueueNotify register's offset, where the VMM attaches each queue's ioeventfd.
pub const QUEUE_NOTIFY_OFFSET: u64 = REG_QUEUE_NOTIFY;
/// The InterruptACK register's offset, where the VMM attaches
/// [`MmioTransport::vring_ack_event`] (see the module docs).
pub const INTERRUPT_ACK_OFFSET: u64 = REG_INTERRUPT_ACK;

// Device status bits (virtio 1.2 §2.1).
const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;
const STATUS_FAILED: u32 = 128;

/// Raises a device's interrupt: sets bits in the transport's interrupt status and signals the
/// irqfd that KVM routes to the device's GSI.
pub struct IrqTrigger {
    status: Arc<AtomicU32>,
    /// VRING stays set in the status, whatever the driver acknowledges: the irqfd was handed
    /// out for direct use ([`Interrupt::direct_eventfd`]), so interrupts come without the
    /// VMM setting the bit.
    vring_pinned: AtomicBool,
    irqfd: EventFd,
}

impl IrqTrigger {
    /// The irqfd to register with KVM.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

impl Interrupt for IrqTrigger {
    fn trigger(&self, status: u32) -> std::io::Result<()> {
        self.status.fetch_or(status, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    fn direct_eventfd(&self) -> Option<&EventFd> {
        self.vring_pinned.store(true, Ordering::SeqCst);
        self.status.fetch_or(super::INT_VRING, Ordering::SeqCst);
        Some(&self.irqfd)
    }
}

/// The transport of one virtio device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    interrupt: Arc<IrqTrigger>,
    interrupt_status: Arc<AtomicU32>,
    /// Signalled by KVM for each acknowledgement of VRING alone; never read (its counter
    /// cannot overflow in practice: 2^64 - 1 interrupts).
    vring_ack: EventFd,
    queues: Vec<Queue>,
    /// Per queue: the driver wrote a size the queue refused, so it must not be activated.
    bad_size: Vec<bool>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    /// A transport for `device`, whose queues live in `mem`.
    pub fn new(device: Arc<Mutex<dyn VirtioDevice>>, mem: GuestMemory) -> std::io::Result<Self> {
        let interrupt_status = Arc::new(AtomicU32::new(0));
        let interrupt = Arc::new(IrqTrigger {
            status: interrupt_status.clone(),
            vring_pinned: AtomicBool::new(false),
            irqfd: EventFd::new(libc::EFD_NONBLOCK)?,
        });
        let queues = Self::fresh_queues(&*lock(&device));
        Ok(MmioTransport {
            device,
            mem,
            interrupt,
            interrupt_status,
            vring_ack: EventFd::new(libc::EFD_NONBLOCK)?,
            bad_size: vec![false; queues.len()],
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        })
    }

    fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
        device
            .queue_max_sizes()
            .iter()
            // A size the queue crate refuses (not a power of two) yields a zero-size queue,
            // which the driver sees as QueueNumMax 0 and cannot use.
            .filter_map(|&max| Queue::new(max).ok().or_else(|| Queue::new(1).ok()))
            .collect()
    }

    /// The interrupt of this device (its irqfd goes to KVM).
    pub fn interrupt(&self) -> &Arc<IrqTrigger> {
        &self.interrupt
    }

    /// The eventfd to register on [`INTERRUPT_ACK_OFFSET`] matching `INT_VRING` (see the
    /// module docs).
    pub fn vring_ack_event(&self) -> &EventFd {
        &self.vring_ack
    }

    /// The device behind the transport.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// True once the driver has started the device.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Handles a read of `data.len()` bytes at `offset` in the window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            lock(&self.device).read_config(offset - REG_CONFIG, data);
            return;
        }
        // Registers are 32-bit and aligned; anything else reads as zeros.
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        let device = lock(&self.device);
        let queue = self.queues.get(self.queue_sel as usize);
        let value = match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => device.device_features() as u32,
                1 => (device.device_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Handles a write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            // Devices whose configuration is read-only ignore the write.
            lock(&self.device).write_config(offset - REG_CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        let value = u32::from_le_bytes(bytes);
        // Queue and feature set-up is only allowed before the device runs.
        let setting_up = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES if setting_up && self.status & STATUS_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM if setting_up => {
                let index = self.queue_sel as usize;
                if let Some(q) = self.queues.get_mut(index) {
                    // Zero, above the maximum or not a power of two: refused, and the queue
                    // cannot be activated until the driver writes a good size.
                    let ok = u16::try_from(value).is_ok_and(|v| q.try_set_size(v).is_ok());
                    if let Some(bad) = self.bad_size.get_mut(index) {
                        *bad = !ok;
                    }
                }
            }
            REG_QUEUE_READY if setting_up => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            REG_QUEUE_DESC_LOW if setting_up => {
                self.set_queue_addr(|q| q.set_desc_table_address(Some(value), None))
            }
            REG_QUEUE_DESC_HIGH if setting_up => {
                self.set_queue_addr(|q| q.set_desc_table_address(None, Some(value)))
            }
            REG_QUEUE_AVAIL_LOW if setting_up => {
                self.set_queue_addr(|q| q.set_avail_ring_address(Some(value), None))
            }
            REG_QUEUE_AVAIL_HIGH if setting_up => {
                self.set_queue_addr(|q| q.set_avail_ring_address(None, Some(value)))
            }
            REG_QUEUE_USED_LOW if setting_up => {
                self.set_queue_addr(|q| q.set_used_ring_address(Some(value), None))
            }
            REG_QUEUE_USED_HIGH if setting_up => {
                self.set_queue_addr(|q| q.set_used_ring_address(None, Some(value)))
            }
            REG_QUEUE_NOTIFY => self.notify(value),
            REG_INTERRUPT_ACK => {
                let keep = if self.interrupt.vring_pinned.load(Ordering::SeqCst) {
                    super::INT_VRING
                } else {
                    0
                };
                self.interrupt_status
                    .fetch_and(!(value & !keep), Ordering::SeqCst);
            }
            REG_STATUS => self.set_status(value),
            _ => {}
        }
    }

    fn set_queue_addr(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }

    /// A QueueNotify that reached us as an exit (no ioeventfd registered, as in tests): pass
    /// it on to the device's queue event.
    fn notify(&self, queue: u32) {
        if !self.activated {
            return;
        }
        let device = lock(&self.device);
        if let Some(evt) = device.queue_events().get(queue as usize) {
            let _ = evt.write(1);
        }
    }

    /// The driver's status write: 0 resets; otherwise bits are only ever added, and
    /// FEATURES_OK and DRIVER_OK are granted only when their preconditions hold.
    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & self.status != self.status {
            return; // clearing bits other than by a reset: ignored
        }
        let new = value & !self.status;
        if new & STATUS_FAILED != 0 {
            self.status |= STATUS_FAILED;
            return;
        }
        self.status |= new & (STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        if new & STATUS_FEATURES_OK != 0 {
            if self.status & STATUS_DRIVER == 0 || !self.features_acceptable() {
                // FEATURES_OK stays unset: the driver reads it back and gives up.
                return;
            }
            lock(&self.device).ack_features(self.driver_features);
            self.status |= STATUS_FEATURES_OK;
        }
        if new & STATUS_DRIVER_OK != 0 && self.status & STATUS_FEATURES_OK != 0 {
            self.status |= STATUS_DRIVER_OK;
            self.activate();
        }
    }

    fn features_acceptable(&self) -> bool {
        let offered = lock(&self.device).device_features();
        self.driver_features & !offered == 0 && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    fn activate(&mut self) {
        if self.activated {
            return;
        }
        let all_valid = self
            .queues
            .iter()
            .zip(&self.bad_size)
            .filter(|(q, _)| q.ready())
            .all(|(q, bad)| !bad && q.is_valid(&self.mem));
        // The ready queues must be the first ones: the device gets them in order without
        // their indexes (a device may work with fewer than it offers, never with a gap).
        let prefix = self.queues.iter().take_while(|q| q.ready()).count();
        let gap = self.queues.iter().skip(prefix).any(|q| q.ready());
        if !all_valid || gap {
            self.needs_reset();
            return;
        }
        // The device gets its own copies; ours keep answering register reads.
        let ready: Vec<Queue> = self
            .queues
            .iter()
            .filter(|q| q.ready())
            .filter_map(|q| Queue::try_from(q.state()).ok())
            .collect();
        let interrupt: Arc<dyn Interrupt> = self.interrupt.clone();
        let result = lock(&self.device).activate(self.mem.clone(), interrupt, ready);
        match result {
            Ok(()) => self.activated = true,
            Err(_) => self.needs_reset(),
        }
    }

    fn needs_reset(&mut self) {
        self.status |= STATUS_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        let _ = self.interrupt.trigger(super::INT_CONFIG);
    }

    fn reset(&mut self) {
        if self.activated && !lock(&self.device).reset() {
            // The device cannot start over; it stays as it is and says so.
            self.status |= STATUS_NEEDS_RESET;
            return;
        }
        self.activated = false;
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt_status.store(0, Ordering::SeqCst);
        self.interrupt.vring_pinned.store(false, Ordering::SeqCst);
        self.queues = Self::fresh_queues(&*lock(&self.device));
        self.bad_size = vec![false; self.queues.len()];
    }
}

/// Locks a device, recovering it if another thread panicked while holding it: device state
/// is still consistent enough to answer register reads.
fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
