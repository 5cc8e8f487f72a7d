//! Host Unix sockets bind-mounted into the container (`-v /var/run/docker.sock:...`): the
//! share carries the socket's name, but a connection to it in the guest reaches nothing.
//! For each such mount ([`MountSpec::relay_port`]) guest-init listens on a socket of its own
//! in the guest (`/run/runvm-sockets/<port>.sock`, owner and mode copied from the host's
//! socket, so the guest kernel lets in whom the host would), which is bind-mounted at the
//! target instead; each connection is carried over vsock to the host, which connects to the
//! real socket (`runtime/sockets.rs`) and copies both ways.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use guest_init::spec::MountSpec;
use guest_init::splice::{COPY_STACK, Slot, splice};

use crate::vsock;

const HOST_CID: u32 = 2;
/// How long a relayed connection waits for the host to take it.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// Where the relay sockets are (the guest's own file system, never the share).
const RELAY_DIR: &str = "/run/runvm-sockets";

/// For every mount of a host socket: a relay listening, and the mount's source pointed at it.
pub fn relay_sockets(mounts: &mut [MountSpec]) -> Result<(), String> {
    for m in mounts.iter_mut().filter(|m| m.relay_port != 0) {
        m.source = listen(m.relay_port, &m.source)?;
    }
    Ok(())
}

/// Listens for the mount relayed on `port`, whose socket in the share is `shared`; returns
/// the relay socket's path.
fn listen(port: u32, shared: &str) -> Result<String, String> {
    let host = std::fs::metadata(shared).map_err(|e| format!("socket {shared}: {e}"))?;
    std::fs::create_dir_all(RELAY_DIR).map_err(|e| format!("create {RELAY_DIR}: {e}"))?;
    let path = format!("{RELAY_DIR}/{port}.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("listen at {path}: {e}"))?;
    std::os::unix::fs::chown(&path, Some(host.uid()), Some(host.gid()))
        .map_err(|e| format!("chown {path}: {e}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(host.mode() & 0o7777))
        .map_err(|e| format!("chmod {path}: {e}"))?;
    std::thread::Builder::new()
        .name("socket-relay".into())
        .spawn(move || accept(&listener, port))
        .map_err(|e| format!("socket relay thread: {e}"))?;
    Ok(path)
}

/// Carries each connection to `listener` to the host's `port`, a thread each, a bounded
/// number at a time (beyond it a connection is closed at once).
fn accept(listener: &UnixListener, port: u32) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            continue;
        };
        let Some(slot) = Slot::take(&open) else {
            continue;
        };
        let _ = std::thread::Builder::new()
            .name("socket-copy".into())
            .stack_size(COPY_STACK)
            .spawn(move || {
                let _slot = slot;
                if let Ok(host) = vsock::connect(HOST_CID, port, CONNECT_PATIENCE) {
                    splice(conn, host);
                }
            });
    }
}
