//! The guest side of runvm as a library: the host<->guest [`protocol`] and [`spec`], the
//! [`mount`] and [`pty`] helpers, and the rtnetlink client [`netlink`], shared with the host
//! binary, which depends on this crate for them.

pub mod beneath;
pub mod dnsrelay;
pub mod mount;
pub mod netlink;
pub mod netspec;
pub mod portfwd;
pub mod protocol;
pub mod pty;
pub mod spec;
pub mod splice;
