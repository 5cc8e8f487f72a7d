//! The guest side of runvm as a library: the host<->guest [`protocol`], shared with the host
//! binary, which depends on this crate for it.

pub mod protocol;
pub mod spec;
