//! Emulated devices of the microVM: legacy port-I/O devices and virtio devices over mmio.

pub mod legacy;
pub mod virtio;
