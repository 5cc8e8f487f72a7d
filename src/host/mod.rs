//! What this machine can do for runvm: KVM, cgroups, host devices and installed guest assets.
//!
//! Every probe reads files below a [`HostRoot`], normally `/`, so that unit tests can lay out
//! a fake `/proc` and `/sys` and check each verdict without the real hardware.

pub mod assets;
pub mod cgroup;
pub mod check;
pub mod devices;
pub mod kvm;
pub mod netmods;

use std::path::{Path, PathBuf};

/// The directory that stands for `/` when probing the host.
#[derive(Debug, Clone)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    /// The real machine.
    pub fn system() -> Self {
        HostRoot(PathBuf::from("/"))
    }

    /// A fake machine laid out below `dir` (for tests).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        HostRoot(dir.into())
    }

    /// The host path `abs` (written as an absolute path such as `/proc/cpuinfo`).
    pub fn path(&self, abs: &str) -> PathBuf {
        self.0.join(abs.trim_start_matches('/'))
    }

    /// True when `abs` exists on the host.
    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// The text of `abs`, or an empty string if it cannot be read.
    pub fn read(&self, abs: &str) -> String {
        std::fs::read_to_string(self.path(abs)).unwrap_or_default()
    }

    /// The directory standing for `/`.
    pub fn dir(&self) -> &Path {
        &self.0
    }
}
