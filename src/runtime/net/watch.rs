//! Follows the container's network namespace while the container runs: `docker network
//! connect` and `disconnect`, an address or route the engine changes. A thread listens to
//! rtnetlink's link, address and route announcements in the namespace; after each burst
//! (quiet for [`SETTLE`]) it syncs the NICs ([`Nics::sync`]) and, when the guest's wanted
//! network changed, sends it to guest-init. The announcements only wake it: their contents
//! come from the guest-side of nothing and are not parsed.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_init::netlink::set_recv_timeout;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::nics::{Nics, Synced};
use crate::agent::Agent;

/// How long the namespace must be quiet before a sync: an engine's changes come in bursts.
const SETTLE: Duration = Duration::from_millis(150);
/// The longest guest-init may take to apply a change.
const APPLY_PATIENCE: Duration = Duration::from_secs(30);

/// rtnetlink's multicast groups: links, v4 and v6 addresses and routes.
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_ROUTE) as u32;

/// Opens the announcement socket (in the calling thread's namespace, which every thread of
/// the sandbox shares).
pub fn subscribe() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, GROUPS))?;
    Ok(socket)
}

/// Starts the thread: on each settled burst, syncs `nics` and tells the guest through
/// `agent` when its network changed from `last`. It ends when the agent's requests fail
/// (the VM is gone).
pub fn spawn(socket: Socket, nics: Arc<Mutex<Nics>>, agent: Arc<Agent>, last: Synced) {
    let spawned = std::thread::Builder::new()
        .name("netns-watch".into())
        .spawn(move || follow(socket, &nics, &agent, last));
    if let Err(e) = spawned {
        eprintln!("runvm: warning: network changes will not reach the guest: {e}");
    }
}

fn follow(socket: Socket, nics: &Mutex<Nics>, agent: &Agent, mut last: Synced) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // Block for the first announcement, then drain until quiet. ENOBUFS (announcements
        // were lost) still means something changed.
        let woken = set_recv_timeout(&socket, None).and_then(|()| recv(&socket, &mut buf));
        if let Err(e) = woken
            && e.raw_os_error() != Some(libc::ENOBUFS)
            && e.kind() != io::ErrorKind::Interrupted
        {
            eprintln!("runvm: warning: network changes will not reach the guest: {e}");
            return;
        }
        if set_recv_timeout(&socket, Some(SETTLE)).is_err() {
            return;
        }
        while recv(&socket, &mut buf).is_ok() {}
        let synced = match nics.lock().unwrap_or_else(|p| p.into_inner()).sync() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("runvm: warning: {e}");
                continue;
            }
        };
        if let Err(e) = super::deliver(&synced, Some(&last), agent, APPLY_PATIENCE) {
            eprintln!("runvm: warning: the guest did not take the network change: {e}");
            if matches!(e, crate::agent::AgentError::Io(_)) {
                return;
            }
        }
        last = synced;
    }
}

/// Receives (and discards) one announcement.
fn recv(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which we own.
    let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
