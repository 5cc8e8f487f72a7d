//! Host Unix sockets bind-mounted into the container (`-v /var/run/docker.sock:...`), the
//! host's end. Through the share the guest sees only the socket's name: a connection to it
//! there reaches no host process. So each bind whose source is a socket gets a vsock port
//! ([`plan`]); guest-init listens at the mount's target on a socket of its own and carries
//! each connection to that port (`guest-init/src/hostsock.rs`), where the sandbox connects
//! to the host socket and copies both ways ([`serve`]). Only the sockets the spec binds are
//! reachable, each connection is bounded like a forwarded port's, and the host socket's own
//! permissions are checked again in the guest (guest-init copies its owner and mode).

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use guest_init::spec::{MAX_SOCKET_RELAYS, MountSpec, SOCKET_RELAY_BASE};
use guest_init::splice::{COPY_STACK, Slot, splice};

use super::shared_dir::HostBind;
use crate::devices::virtio::vsock::{VsockHandle, VsockListener};

/// Why a socket bind cannot be relayed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// More socket binds than relay ports.
    #[error("more than {MAX_SOCKET_RELAYS} bind-mounted Unix sockets")]
    TooMany,
    /// The port or its thread.
    #[error("cannot relay the bind-mounted socket {path}: {source}")]
    Relay {
        /// The host socket.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// One host socket to relay: the vsock port guest-init connects to, and the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRelay {
    /// The vsock port.
    pub port: u32,
    /// The host socket.
    pub path: PathBuf,
}

/// Gives the bind mounts among `mounts` whose host source (`binds`, in the same order) is a
/// Unix socket a relay port; returns what [`serve`] must relay.
pub fn plan(mounts: &mut [MountSpec], binds: &[HostBind]) -> Result<Vec<SocketRelay>, SocketError> {
    let bind_mounts = mounts.iter_mut().filter(|m| m.flags & libc::MS_BIND != 0);
    let mut relays = Vec::new();
    for (mount, bind) in bind_mounts.zip(binds) {
        let is_socket = std::fs::metadata(&bind.source).is_ok_and(|m| m.file_type().is_socket());
        if !is_socket {
            continue;
        }
        let n = u32::try_from(relays.len())
            .ok()
            .filter(|&n| n < MAX_SOCKET_RELAYS)
            .ok_or(SocketError::TooMany)?;
        mount.relay_port = SOCKET_RELAY_BASE + n;
        relays.push(SocketRelay {
            port: mount.relay_port,
            path: bind.source.clone(),
        });
    }
    Ok(relays)
}

/// Listens on each relay's port and, on a thread per relay for as long as the VM runs,
/// connects every connection guest-init makes there to the host socket.
pub fn serve(vsock: &VsockHandle, relays: Vec<SocketRelay>) -> Result<(), SocketError> {
    for SocketRelay { port, path } in relays {
        let err = |source| SocketError::Relay {
            path: path.clone(),
            source,
        };
        let listener = vsock.listen(port).map_err(err)?;
        let target = path.clone();
        std::thread::Builder::new()
            .name("socket-relay".into())
            .spawn(move || accept(&listener, &target))
            .map_err(err)?;
    }
    Ok(())
}

/// Carries each guest connection to `listener` to the socket at `path`, a bounded number at
/// a time; a connection the host socket refuses is closed (the guest's client sees the
/// connection end, as it would see it refused).
fn accept(listener: &VsockListener, path: &std::path::Path) {
    let open = Arc::new(AtomicUsize::new(0));
    while let Ok(guest) = listener.accept() {
        let Some(slot) = Slot::take(&open) else {
            continue;
        };
        let path = path.to_owned();
        let _ = std::thread::Builder::new()
            .name("socket-copy".into())
            .stack_size(COPY_STACK)
            .spawn(move || {
                let _slot = slot;
                if let Ok(host) = UnixStream::connect(&path) {
                    splice(guest, host);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_mount(target: &str) -> MountSpec {
        MountSpec {
            target: target.into(),
            source: format!("/share{target}"),
            flags: libc::MS_BIND,
            ..MountSpec::default()
        }
    }

    #[test]
    fn only_socket_binds_get_a_relay_port() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let proc_mount = MountSpec {
            target: "/proc".into(),
            source: "proc".into(),
            fstype: "proc".into(),
            ..MountSpec::default()
        };
        let mut mounts = vec![
            proc_mount,
            bind_mount("/file"),
            bind_mount("/run/a.sock"),
            bind_mount("/run/b.sock"),
        ];
        let host = |p: PathBuf| HostBind {
            source: p,
            readonly: false,
        };
        let binds = [
            host(dir.path().join("file")),
            host(sock.clone()),
            host(sock.clone()),
        ];
        let relays = plan(&mut mounts, &binds).unwrap();
        let ports: Vec<u32> = mounts.iter().map(|m| m.relay_port).collect();
        assert_eq!(ports, [0, 0, SOCKET_RELAY_BASE, SOCKET_RELAY_BASE + 1]);
        assert_eq!(relays.len(), 2);
        assert_eq!(relays[1].port, SOCKET_RELAY_BASE + 1);
        assert_eq!(relays[1].path, sock);
    }
}
