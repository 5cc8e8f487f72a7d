//! [`NetHandle`]: how other threads give a running [`Net`](super::Net) its tap (or take it
//! away), and read its [`NetStats`].
//!
//! The handle only records the change and signals the device's wake-up event: the device
//! swaps the backend on its event-loop thread, where it can also (un)watch the tap. Only the
//! latest change counts: attaching twice before the device wakes up closes the first tap.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

/// A backend change waiting for the device's event loop.
#[derive(Debug)]
pub(super) enum BackendChange {
    /// Use this tap from now on (closing the previous one).
    Attach(OwnedFd),
    /// Close the tap: drop tx frames, receive nothing.
    Detach,
}

/// The device's counters, updated on the event loop and read anywhere.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) tx_frames: AtomicU64,
    pub(super) tx_bytes: AtomicU64,
    pub(super) tx_dropped: AtomicU64,
    pub(super) rx_frames: AtomicU64,
    pub(super) rx_bytes: AtomicU64,
    pub(super) rx_dropped: AtomicU64,
    pub(super) bad_chains: AtomicU64,
    pub(super) tx_bad_header: AtomicU64,
    pub(super) rx_bad_header: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter` (the counters are statistics: relaxed is enough).
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> NetStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStats {
            tx_frames: get(&self.tx_frames),
            tx_bytes: get(&self.tx_bytes),
            tx_dropped: get(&self.tx_dropped),
            rx_frames: get(&self.rx_frames),
            rx_bytes: get(&self.rx_bytes),
            rx_dropped: get(&self.rx_dropped),
            bad_chains: get(&self.bad_chains),
            tx_bad_header: get(&self.tx_bad_header),
            rx_bad_header: get(&self.rx_bad_header),
        }
    }
}

/// What the device has moved since it was created. "tx" is guest to host, "rx" host to
/// guest (the queues' names); bytes count Ethernet frames, without the vnet header.
///
/// Only the frames the device moves itself are counted: those the kernel's vhost-net carries
/// (while it runs the queues, see the module docs) never pass through the device and leave
/// every counter as it was. Tests that read the counters use a backend vhost-net does not
/// drive (a socket pair), or a VM built with `RUNVM_VHOST_NET=0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames the guest sent that the tap took.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames the guest sent that were lost: malformed, no tap, or the tap refused them.
    pub tx_dropped: u64,
    /// Of those, frames whose header asked for what was not negotiated or pointed outside
    /// the frame.
    pub tx_bad_header: u64,
    /// Frames from the tap delivered to the guest.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames from the tap that were lost: larger than the guest's buffers, or malformed.
    pub rx_dropped: u64,
    /// Of those, frames whose header carried offloads the guest did not accept.
    pub rx_bad_header: u64,
    /// Chains the device refused and returned unused (bad shape, outside guest memory); a bad
    /// tx chain is also a dropped tx frame.
    pub bad_chains: u64,
}

/// The state a [`Net`](super::Net) shares with its handles.
#[derive(Debug)]
pub(super) struct Shared {
    pending: Mutex<Option<BackendChange>>,
    pub(super) wake: EventFd,
    pub(super) counters: Counters,
}

impl Shared {
    /// The change waiting for the device, if any.
    pub(super) fn take_pending(&self) -> Option<BackendChange> {
        lock(&self.pending).take()
    }
}

fn lock(pending: &Mutex<Option<BackendChange>>) -> MutexGuard<'_, Option<BackendChange>> {
    // The slot stays consistent even if a holder panicked: every update is one assignment.
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Attaches and detaches the tap of a [`Net`](super::Net) from any thread.
#[derive(Debug, Clone)]
pub struct NetHandle {
    shared: Arc<Shared>,
}

impl NetHandle {
    /// Hands the device `tap`: a tap opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and a
    /// vnet header size of 12 (or anything else that keeps frame boundaries, such as a
    /// datagram socket). It is made non-blocking here. The device closes the tap it had, if
    /// any, and uses this one once its event loop wakes up.
    pub fn attach(&self, tap: OwnedFd) -> io::Result<()> {
        set_nonblocking(&tap)?;
        self.change(BackendChange::Attach(tap))
    }

    /// Takes the tap away: the device closes it once its event loop wakes up, then drops the
    /// guest's frames and receives nothing.
    pub fn detach(&self) -> io::Result<()> {
        self.change(BackendChange::Detach)
    }

    /// The device's counters right now.
    pub fn stats(&self) -> NetStats {
        self.shared.counters.snapshot()
    }

    fn change(&self, change: BackendChange) -> io::Result<()> {
        *lock(&self.shared.pending) = Some(change);
        self.shared.wake.write(1)
    }
}

/// Sets `O_NONBLOCK` on `fd`: the device must never block its event loop.
fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: F_GETFL takes no argument and only reads the flags of `raw`, which is open for
    // the duration of the call (borrowed from `fd`).
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: F_SETFL takes an int of file status flags; `raw` is open for the duration of the
    // call (borrowed from `fd`). No memory is passed.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the state shared by a device and its handles, and the first handle.
pub(super) fn handle_pair() -> io::Result<(Arc<Shared>, NetHandle)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(None),
        wake: EventFd::new(libc::EFD_NONBLOCK)?,
        counters: Counters::default(),
    });
    let handle = NetHandle {
        shared: Arc::clone(&shared),
    };
    Ok((shared, handle))
}
