//! runvm: an OCI runtime, called like runc, that runs every container inside its own KVM
//! microVM with its own guest kernel.
//!
//! The crate reads like the architecture (see ARCHITECTURE.md): [`cli`] holds one file per
//! runc verb, [`host`] probes what this machine can do, [`config`] says where the guest
//! assets live.

pub mod agent;
pub mod cli;
pub mod config;
pub mod devices;
pub mod host;
pub mod image;
pub mod network;
pub mod runtime;
pub mod time;
pub mod vmm;

/// The version of the OCI runtime specification runvm implements.
pub const OCI_SPEC_VERSION: &str = "1.2.0";
