//! The transport driven by a fake guest driver, the well-behaved way and the hostile ways.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use virtio_queue::Queue;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::virtio::{ActivateError, INT_VRING, Interrupt, VirtioDevice};

const FEATURE_X: u64 = 1 << 3;

struct Dummy {
    max_sizes: Vec<u16>,
    events: Vec<EventFd>,
    acked: Option<u64>,
    activated_queues: Option<Vec<(u16, u64)>>,
    interrupt: Option<Arc<dyn Interrupt>>,
    config: [u8; 8],
    resettable: bool,
    /// Whether it works with its first queues only (as virtio-fs with fewer request queues).
    accepts_fewer: bool,
}

impl Dummy {
    fn new(max_sizes: &[u16]) -> Arc<Mutex<Dummy>> {
        Arc::new(Mutex::new(Dummy {
            max_sizes: max_sizes.to_vec(),
            events: max_sizes
                .iter()
                .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
                .collect(),
            acked: None,
            activated_queues: None,
            interrupt: None,
            config: *b"abcdefgh",
            resettable: true,
            accepts_fewer: false,
        }))
    }
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }
    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | FEATURE_X
    }
    fn ack_features(&mut self, features: u64) {
        self.acked = Some(features);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| self.config.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn queue_events(&self) -> &[EventFd] {
        &self.events
    }
    fn activate(
        &mut self,
        _mem: GuestMemory,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        let fewer_ok = self.accepts_fewer && (1..self.max_sizes.len()).contains(&queues.len());
        if queues.len() != self.max_sizes.len() && !fewer_ok {
            return Err(ActivateError::QueueCount {
                expected: self.max_sizes.len(),
                got: queues.len(),
            });
        }
        self.activated_queues = Some(queues.iter().map(|q| (q.size(), q.desc_table())).collect());
        self.interrupt = Some(interrupt);
        Ok(())
    }
    fn reset(&mut self) -> bool {
        self.activated_queues = None;
        self.resettable
    }
}

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
}

fn transport(dev: &Arc<Mutex<Dummy>>) -> MmioTransport {
    let dyn_dev: Arc<Mutex<dyn VirtioDevice>> = dev.clone();
    MmioTransport::new(dyn_dev, memory()).unwrap()
}

fn r(t: &MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn w(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// Negotiates `features` as a Linux driver does; returns the status read back.
fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
    w(t, REG_STATUS, STATUS_ACKNOWLEDGE);
    w(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w(t, REG_DRIVER_FEATURES_SEL, 0);
    w(t, REG_DRIVER_FEATURES, features as u32);
    w(t, REG_DRIVER_FEATURES_SEL, 1);
    w(t, REG_DRIVER_FEATURES, (features >> 32) as u32);
    w(
        t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    r(t, REG_STATUS)
}

/// Sets up queue `index` with `size` entries at `base` (desc), base+0x1000 (avail),
/// base+0x2000 (used).
fn setup_queue(t: &mut MmioTransport, index: u32, size: u32, base: u64) {
    w(t, REG_QUEUE_SEL, index);
    w(t, REG_QUEUE_NUM, size);
    w(t, REG_QUEUE_DESC_LOW, base as u32);
    w(t, REG_QUEUE_DESC_HIGH, (base >> 32) as u32);
    w(t, REG_QUEUE_AVAIL_LOW, (base + 0x1000) as u32);
    w(t, REG_QUEUE_AVAIL_HIGH, 0);
    w(t, REG_QUEUE_USED_LOW, (base + 0x2000) as u32);
    w(t, REG_QUEUE_USED_HIGH, 0);
    w(t, REG_QUEUE_READY, 1);
}

const ALL_BUT_DRIVER_OK: u32 = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;

#[test]
fn identity_registers() {
    let dev = Dummy::new(&[16, 8]);
    let mut t = transport(&dev);
    assert_eq!(r(&t, REG_MAGIC), 0x7472_6976);
    assert_eq!(r(&t, REG_VERSION), 2);
    assert_eq!(r(&t, REG_DEVICE_ID), 42);
    w(&mut t, REG_DEVICE_FEATURES_SEL, 0);
    assert_eq!(r(&t, REG_DEVICE_FEATURES), FEATURE_X as u32);
    w(&mut t, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(r(&t, REG_DEVICE_FEATURES), 1);
    w(&mut t, REG_DEVICE_FEATURES_SEL, 7);
    assert_eq!(r(&t, REG_DEVICE_FEATURES), 0);
    w(&mut t, REG_QUEUE_SEL, 1);
    assert_eq!(r(&t, REG_QUEUE_NUM_MAX), 8);
    w(&mut t, REG_QUEUE_SEL, 2);
    assert_eq!(r(&t, REG_QUEUE_NUM_MAX), 0, "a queue that does not exist");
}

#[test]
fn config_space_reads_any_width_and_pads_with_zeros() {
    let dev = Dummy::new(&[16]);
    let t = transport(&dev);
    let mut b = [0u8; 2];
    t.read(REG_CONFIG + 2, &mut b);
    assert_eq!(&b, b"cd");
    let mut b = [0xffu8; 4];
    t.read(REG_CONFIG + 6, &mut b);
    assert_eq!(&b, b"gh\0\0");
    t.read(REG_CONFIG + 0xeff, &mut b);
    assert_eq!(b, [0; 4]);
}

#[test]
fn a_well_behaved_driver_activates_the_device() {
    let dev = Dummy::new(&[16, 8]);
    let mut t = transport(&dev);
    assert_eq!(
        negotiate(&mut t, VIRTIO_F_VERSION_1 | FEATURE_X),
        ALL_BUT_DRIVER_OK
    );
    assert_eq!(
        dev.lock().unwrap().acked,
        Some(VIRTIO_F_VERSION_1 | FEATURE_X)
    );
    setup_queue(&mut t, 0, 16, 0x1000);
    setup_queue(&mut t, 1, 8, 0x4000);
    w(&mut t, REG_QUEUE_SEL, 0);
    assert_eq!(r(&t, REG_QUEUE_READY), 1);
    w(&mut t, REG_STATUS, ALL_BUT_DRIVER_OK | STATUS_DRIVER_OK);
    assert_eq!(r(&t, REG_STATUS), ALL_BUT_DRIVER_OK | STATUS_DRIVER_OK);
    assert!(t.is_activated());
    assert_eq!(
        dev.lock().unwrap().activated_queues,
        Some(vec![(16, 0x1000), (8, 0x4000)])
    );

    // Queue set-up is frozen once running.
    w(&mut t, REG_QUEUE_SEL, 0);
    w(&mut t, REG_QUEUE_READY, 0);
    assert_eq!(r(&t, REG_QUEUE_READY), 1);

    // The device's interrupt shows in InterruptStatus until acknowledged.
    let irq = dev.lock().unwrap().interrupt.clone().unwrap();
    irq.trigger(INT_VRING).unwrap();
    assert_eq!(r(&t, REG_INTERRUPT_STATUS), INT_VRING);
    assert_eq!(t.interrupt().irqfd().read().unwrap(), 1);
    w(&mut t, REG_INTERRUPT_ACK, INT_VRING);
    assert_eq!(r(&t, REG_INTERRUPT_STATUS), 0);

    // The irqfd handed out for direct use: VRING shows from then on, whatever the driver
    // acknowledges; other bits clear as before.
    let direct = irq.direct_eventfd().unwrap().as_raw_fd();
    assert_eq!(direct, t.interrupt().irqfd().as_raw_fd());
    assert_eq!(r(&t, REG_INTERRUPT_STATUS), INT_VRING);
    irq.trigger(crate::devices::virtio::INT_CONFIG).unwrap();
    assert_eq!(t.interrupt().irqfd().read().unwrap(), 1);
    w(
        &mut t,
        REG_INTERRUPT_ACK,
        INT_VRING | crate::devices::virtio::INT_CONFIG,
    );
    assert_eq!(r(&t, REG_INTERRUPT_STATUS), INT_VRING);

    // A notify that exits to us reaches the queue's event.
    w(&mut t, REG_QUEUE_NOTIFY, 1);
    assert_eq!(dev.lock().unwrap().events[1].read().unwrap(), 1);
    w(&mut t, REG_QUEUE_NOTIFY, 9); // no such queue: ignored
}

#[test]
fn features_the_device_did_not_offer_are_refused() {
    let dev = Dummy::new(&[16]);
    let mut t = transport(&dev);
    let status = negotiate(&mut t, VIRTIO_F_VERSION_1 | (1 << 5));
    assert_eq!(status & STATUS_FEATURES_OK, 0);
    assert_eq!(dev.lock().unwrap().acked, None);
    // DRIVER_OK without FEATURES_OK does nothing.
    w(&mut t, REG_STATUS, status | STATUS_DRIVER_OK);
    assert!(!t.is_activated());
}

#[test]
fn a_legacy_driver_without_version_1_is_refused() {
    let dev = Dummy::new(&[16]);
    let mut t = transport(&dev);
    assert_eq!(negotiate(&mut t, FEATURE_X) & STATUS_FEATURES_OK, 0);
}

#[test]
fn features_ok_before_driver_is_refused() {
    let dev = Dummy::new(&[16]);
    let mut t = transport(&dev);
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_FEATURES_OK);
    assert_eq!(r(&t, REG_STATUS), STATUS_ACKNOWLEDGE);
}

#[test]
fn rings_outside_guest_memory_need_reset_not_panic() {
    let dev = Dummy::new(&[16]);
    let mut t = transport(&dev);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    setup_queue(&mut t, 0, 16, 0xffff_0000_0000);
    w(&mut t, REG_STATUS, ALL_BUT_DRIVER_OK | STATUS_DRIVER_OK);
    assert!(!t.is_activated());
    assert_ne!(r(&t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
    assert_ne!(
        r(&t, REG_INTERRUPT_STATUS) & crate::devices::virtio::INT_CONFIG,
        0
    );
}

#[test]
fn bad_queue_sizes_leave_the_queue_unusable() {
    for size in [0u32, 3, 32, 0x1_0010] {
        let dev = Dummy::new(&[16]);
        let mut t = transport(&dev);
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, size, 0x1000);
        w(&mut t, REG_STATUS, ALL_BUT_DRIVER_OK | STATUS_DRIVER_OK);
        assert!(!t.is_activated(), "size {size} was accepted");
    }
}

#[test]
fn missing_queues_fail_activation() {
    let dev = Dummy::new(&[16, 16]);
    let mut t = transport(&dev);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    setup_queue(&mut t, 0, 16, 0x1000);
    w(&mut t, REG_STATUS, ALL_BUT_DRIVER_OK | STATUS_DRIVER_OK);
    assert!(!t.is_activated());
    assert_ne!(r(&t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn ready_queues_must_be_the_first_ones() {
    // A device may work with its first queues only; a gap among the ready ones would hand
    // it queue 2 as its queue 1 (and queue 1's notifications).
    for (ready, activated) in [(&[0u32, 1][..], true), (&[0, 2][..], false)] {
        let dev = Dummy::new(&[16, 16, 16]);
        dev.lock().unwrap().accepts_fewer = true;
        let mut t = transport(&dev);
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        for &index in ready {
            setup_queue(&mut t, index, 16, 0x1000 + u64::from(index) * 0x1000);
        }
        w(&mut t, REG_STATUS, ALL_BUT_DRIVER_OK | STATUS_DRIVER_OK);
        assert_eq!(t.is_activated(), activated, "ready {ready:?}");
        assert_eq!(
            r(&t, REG_STATUS) & STATUS_NEEDS_RESET != 0,
            !activated,
            "ready {ready:?}"
        );
    }
}

#[test]
fn odd_accesses_are_ignored() {
    let dev = Dummy::new(&[16]);
    let mut t = transport(&dev);
    t.write(REG_STATUS, &[1, 0]); // 2-byte register write
    t.write(REG_STATUS + 1, &1u32.to_le_bytes()); // unaligned
    assert_eq!(r(&t, REG_STATUS), 0);
    let mut b = [0xffu8; 2];
    t.read(REG_MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
    let mut b = [0xffu8; 4];
    t.read(REG_MAGIC + 2, &mut b);
    assert_eq!(b, [0; 4]);
    // Clearing bits without a reset is ignored.
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
    w(&mut t, REG_STATUS, STATUS_DRIVER);
    assert_eq!(r(&t, REG_STATUS), STATUS_ACKNOWLEDGE);
}

#[test]
fn reset_starts_over_and_a_failed_reset_is_reported() {
    let dev = Dummy::new(&[16]);
    let mut t = transport(&dev);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    setup_queue(&mut t, 0, 16, 0x1000);
    w(&mut t, REG_STATUS, ALL_BUT_DRIVER_OK | STATUS_DRIVER_OK);
    assert!(t.is_activated());
    w(&mut t, REG_STATUS, 0);
    assert_eq!(r(&t, REG_STATUS), 0);
    assert!(!t.is_activated());
    assert_eq!(r(&t, REG_QUEUE_READY), 0);

    negotiate(&mut t, VIRTIO_F_VERSION_1);
    setup_queue(&mut t, 0, 16, 0x1000);
    w(&mut t, REG_STATUS, ALL_BUT_DRIVER_OK | STATUS_DRIVER_OK);
    assert!(t.is_activated());
    dev.lock().unwrap().resettable = false;
    w(&mut t, REG_STATUS, 0);
    assert_ne!(r(&t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn failed_is_sticky() {
    let dev = Dummy::new(&[16]);
    let mut t = transport(&dev);
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_FAILED);
    assert_ne!(r(&t, REG_STATUS) & STATUS_FAILED, 0);
}
