//! Host character devices runvm may use: `/dev/net/tun` (guest NICs are fed from a tap in the
//! container's network namespace) and `/dev/vhost-vsock` (not needed: runvm serves
//! virtio-vsock in userspace, but its presence is worth reporting).

use std::fs::OpenOptions;

use super::HostRoot;

/// Whether a device node can be opened read-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    /// Opened read-write.
    Usable,
    /// Not there.
    Missing,
    /// There, but opening it failed.
    Unusable(String),
}

/// Tries to open the device `abs` below `root` read-write.
pub fn open_state(root: &HostRoot, abs: &str) -> DeviceState {
    let path = root.path(abs);
    if !path.exists() {
        return DeviceState::Missing;
    }
    match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(_) => DeviceState::Usable,
        Err(e) => DeviceState::Unusable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_present() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::at(d.path());
        assert_eq!(open_state(&root, "/dev/net/tun"), DeviceState::Missing);
        std::fs::create_dir_all(d.path().join("dev/net")).unwrap();
        std::fs::write(d.path().join("dev/net/tun"), "").unwrap();
        assert_eq!(open_state(&root, "/dev/net/tun"), DeviceState::Usable);
    }

    #[test]
    fn a_directory_is_unusable() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dev/net/tun")).unwrap();
        let state = open_state(&HostRoot::at(d.path()), "/dev/net/tun");
        assert!(matches!(state, DeviceState::Unusable(_)), "{state:?}");
    }
}
