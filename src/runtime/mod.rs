//! The runtime side of runvm: bundles, VM sizing, and (later) container state, hooks and the
//! sandbox process.

pub mod bundle;
pub mod control;
pub mod exec;
pub mod hooks;
pub mod host_cgroup;
pub mod host_edits;
pub mod host_oom;
pub mod net;
pub mod pausing;
pub mod relay;
pub mod resources;
pub mod run;
pub mod sandbox;
pub mod serve;
pub mod shared_dir;
pub mod signals;
pub mod sizing;
pub mod spec;
pub mod state;
pub mod tty;
