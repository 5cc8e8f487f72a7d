//! SETLKW, a lock the guest waits for, without stopping the device: the request's chain stays
//! unanswered while a thread of its own waits on the host (`F_OFD_SETLKW` or `flock`), and
//! the event loop answers it when that thread is done, out of order with the other requests
//! (virtio lets a device use chains in any order).
//!
//! What is kept of the chain meanwhile is its head index and where its device-writable
//! buffers are: the reply is only a `fuse_out_header`. Those buffers are checked against guest
//! memory when the reply is written, as any other reply's are.
//!
//! At most [`MAX_WAITS`] wait threads alive at a time, across resets; beyond, the guest gets
//! `ENOLCK`. The guest kernel cannot cancel a wait over virtio-fs (it sends no
//! FUSE_INTERRUPT there, and a request already sent is waited for uninterruptibly): the
//! waiting guest process would stay in its `fcntl` until the lock is granted, even when
//! killed. So the sandbox answers every wait `EINTR` before each signal it sends into the
//! guest ([`LockCanceller`]); a wait granted after that gives its range back.
//! An owner that goes meanwhile (a FLUSH, a new session) has its locks released and a lock
//! granted later given back at once (`server/locks.rs`).

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fuse_backend_rs::abi::fuse_abi::OutHeader;
use virtio_queue::DescriptorChain;
use vm_memory::{ByteValued, Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::server::BlockedLock;
use crate::vmm::GuestMemory;

/// The most SETLKW requests waiting at a time.
pub(super) const MAX_WAITS: usize = 64;

/// A waiting request's chain: what answering it needs.
#[derive(Debug)]
pub(super) struct WaitingChain {
    /// The queue it came from.
    pub(super) queue: usize,
    /// Its head descriptor's index.
    pub(super) head: u16,
    /// The request's `unique`.
    pub(super) unique: u64,
    /// Its device-writable buffers, in order.
    reply_to: Vec<(GuestAddress, u32)>,
}

impl WaitingChain {
    /// What to keep of `chain`, the request `unique` on `queue`.
    pub(super) fn of(queue: usize, unique: u64, chain: DescriptorChain<&GuestMemory>) -> Self {
        let head = chain.head_index();
        let reply_to = chain
            .filter(|desc| desc.is_write_only())
            .map(|desc| (desc.addr(), desc.len()))
            .collect();
        WaitingChain {
            queue,
            head,
            unique,
            reply_to,
        }
    }

    /// Writes the reply (`errno` 0: the lock is held) into the chain; returns its length, or
    /// 0 when the chain has no room for it in guest memory.
    pub(super) fn write_reply(&self, mem: &GuestMemory, errno: i32) -> u32 {
        const LEN: usize = size_of::<OutHeader>();
        let header = OutHeader {
            len: LEN as u32,
            error: -errno,
            unique: self.unique,
        };
        let mut rest = header.as_slice();
        for &(addr, len) in &self.reply_to {
            if rest.is_empty() {
                break;
            }
            let n = rest.len().min(len as usize);
            let (now, later) = rest.split_at(n);
            if mem.write_slice(now, addr).is_err() {
                return 0;
            }
            rest = later;
        }
        if rest.is_empty() { LEN as u32 } else { 0 }
    }
}

/// The waits under way and those done but not yet answered.
#[derive(Debug)]
pub(super) struct LockWaits {
    /// Signalled by a wait that ended.
    event: Arc<EventFd>,
    /// Ended waits: the wait's number and its errno (0: granted).
    ended: Arc<Mutex<Vec<(u64, i32)>>>,
    /// The waiting chains, with the flag that abandons their wait.
    waiting: HashMap<u64, (WaitingChain, Arc<AtomicBool>)>,
    next: u64,
    /// Wait threads alive, across resets (a reset forgets their chains, not the threads).
    live: Arc<AtomicUsize>,
    /// Set by a [`LockCanceller`]: every wait is answered `EINTR` at the next event.
    cancel: Arc<AtomicBool>,
}

/// Ends the guest's lock waits from another thread: each waiting request is answered
/// `EINTR`, as a signal interrupts `F_SETLKW` on a host. The sandbox does it before each
/// signal it sends into the guest, since the guest kernel cannot interrupt a sent request
/// and a killed process would otherwise stay in its wait.
#[derive(Debug, Clone)]
pub struct LockCanceller {
    cancel: Arc<AtomicBool>,
    event: Arc<EventFd>,
}

impl LockCanceller {
    /// Answers every lock wait now under way with `EINTR` (done on the device's loop).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        let _ = self.event.write(1);
    }
}

impl LockWaits {
    pub(super) fn new() -> std::io::Result<Self> {
        Ok(LockWaits {
            event: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?),
            ended: Arc::default(),
            waiting: HashMap::new(),
            next: 0,
            live: Arc::default(),
            cancel: Arc::default(),
        })
    }

    /// The event a wait's end signals.
    pub(super) fn event(&self) -> Arc<EventFd> {
        Arc::clone(&self.event)
    }

    /// Starts waiting for `lock` on a thread; `chain` is answered when it ends. When it
    /// cannot (too many waits, no thread), the errno to answer the chain with now, and it.
    pub(super) fn start(
        &mut self,
        lock: BlockedLock,
        chain: WaitingChain,
    ) -> Result<(), (i32, WaitingChain)> {
        if self.live.fetch_add(1, Ordering::SeqCst) >= MAX_WAITS {
            self.live.fetch_sub(1, Ordering::SeqCst);
            return Err((libc::ENOLCK, chain));
        }
        let live = Arc::clone(&self.live);
        let abandon = lock.abandon_flag();
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        let (event, ended) = (Arc::clone(&self.event), Arc::clone(&self.ended));
        let spawned = std::thread::Builder::new()
            .name("fs-lock-wait".into())
            .spawn(move || {
                let errno = match lock.wait() {
                    Ok(()) => 0,
                    Err(err) => err.raw_os_error().unwrap_or(libc::EIO),
                };
                live.fetch_sub(1, Ordering::SeqCst);
                ended
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((id, errno));
                let _ = event.write(1);
            });
        match spawned {
            Ok(_) => {
                self.waiting.insert(id, (chain, abandon));
                Ok(())
            }
            Err(_) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                Err((libc::ENOLCK, chain))
            }
        }
    }

    /// The waits that ended since last asked, with their chains and errno; every wait when
    /// a [`LockCanceller`] asked (`EINTR`; their threads' ends are then ignored).
    pub(super) fn take_ended(&mut self) -> Vec<(WaitingChain, i32)> {
        let _ = self.event.read();
        let ended = std::mem::take(&mut *self.ended.lock().unwrap_or_else(PoisonError::into_inner));
        let mut out: Vec<(WaitingChain, i32)> = ended
            .into_iter()
            .filter_map(|(id, errno)| self.waiting.remove(&id).map(|(chain, _)| (chain, errno)))
            .collect();
        if self.cancel.swap(false, Ordering::SeqCst) {
            for (_, (chain, abandon)) in self.waiting.drain() {
                abandon.store(true, Ordering::SeqCst);
                out.push((chain, libc::EINTR));
            }
        }
        out
    }

    /// A handle that cancels the waits from another thread.
    pub(super) fn canceller(&self) -> LockCanceller {
        LockCanceller {
            cancel: Arc::clone(&self.cancel),
            event: Arc::clone(&self.event),
        }
    }

    /// Forgets every wait (a reset: the chains belong to the old queues). Their threads end
    /// when their locks are granted, and give them back.
    pub(super) fn forget(&mut self) {
        for (_, (_, abandon)) in self.waiting.drain() {
            abandon.store(true, Ordering::SeqCst);
        }
    }

    /// The number of waits under way.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }
}
