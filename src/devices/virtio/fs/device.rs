//! The virtio-fs device: features, config space, activation, and who serves its queues: the
//! hiprio queue on the event loop (the event handler calls in), the request queues on their
//! workers (`workers.rs`), or on the event loop too when the device has none.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuse_backend_rs::api::server::Server;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::lanes::{Lane, Pace, Serving, log_error};
use super::lock_wait::{LockCanceller, LockWaits};
use super::request::FsServer;
use super::server::{ShareConfig, ShareFs, lock};
use super::stats::FsStats;
use super::workers::{MAX_WORKERS_PER_QUEUE, Workers};
use super::{FsError, HIPRIO_QUEUE, MAX_REQUEST_QUEUES, QUEUE_SIZE, TAG_MAX_LEN};
use crate::devices::virtio::{ActivateError, Interrupt, TYPE_FS, VIRTIO_F_VERSION_1, VirtioDevice};
use crate::vmm::GuestMemory;

/// The largest size of each queue a device may offer: hiprio, then the request queues.
const QUEUE_MAX_SIZES: [u16; 1 + MAX_REQUEST_QUEUES] = [QUEUE_SIZE; 1 + MAX_REQUEST_QUEUES];
/// Chains served per queue event when the event loop serves a queue, before it lets other
/// events run.
const MAX_BATCH: usize = QUEUE_SIZE as usize;

/// What the device works with once the driver has set it up.
struct ActiveQueues {
    serving: Arc<Serving>,
    /// In queue index order: hiprio, then the request queues the driver set up.
    lanes: Vec<Arc<Lane>>,
    /// The request queues' workers; None when the event loop serves them.
    workers: Option<Workers>,
}

/// A virtio-fs device sharing one host directory (see the module docs).
pub struct VirtioFs {
    /// `virtio_fs_config.tag`: the tag, NUL-padded.
    tag: [u8; TAG_MAX_LEN],
    /// The shared directory, resolved (absolute, no symlinks).
    shared_dir: PathBuf,
    /// How it is served (kept for the server a reset makes).
    config: ShareConfig,
    acked_features: u64,
    queue_events: Vec<EventFd>,
    /// Worker threads per request queue (0: the event loop serves them).
    workers_per_queue: usize,
    server: Arc<FsServer>,
    /// The file system behind `server`, for its figures.
    share: Arc<ShareFs>,
    active: Option<ActiveQueues>,
    errors_seen: u32,
    /// What the requests cost, by opcode (kept across resets: one per device).
    stats: Arc<FsStats>,
    /// The SETLKW requests waiting for their locks.
    lock_waits: Arc<Mutex<LockWaits>>,
    /// The event a lock wait's end signals.
    lock_wait_event: Arc<EventFd>,
}

impl std::fmt::Debug for VirtioFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioFs")
            .field("tag", &self.tag())
            .field("shared_dir", &self.shared_dir)
            .field("request_queues", &self.request_queues())
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl VirtioFs {
    /// A device that shares `shared_dir` (an existing directory) under the mount tag `tag`
    /// (1 to 36 bytes, no NUL), with the default [`ShareConfig`].
    pub fn new(tag: &str, shared_dir: &Path) -> Result<VirtioFs, FsError> {
        Self::with_config(tag, shared_dir, ShareConfig::default())
    }

    /// [`VirtioFs::new`] with `config` (a smaller descriptor budget, other timeouts). One
    /// request queue with one worker; see [`VirtioFs::with_queues`].
    pub fn with_config(
        tag: &str,
        shared_dir: &Path,
        config: ShareConfig,
    ) -> Result<VirtioFs, FsError> {
        let mut tag_bytes = [0u8; TAG_MAX_LEN];
        match tag_bytes.get_mut(..tag.len()) {
            Some(prefix) if !tag.is_empty() && !tag.contains('\0') => {
                prefix.copy_from_slice(tag.as_bytes());
            }
            _ => return Err(FsError::InvalidTag { tag: tag.into() }),
        }
        // Resolved, so that the server (which opens it with O_NOFOLLOW) gets the directory
        // itself.
        let resolved = std::fs::canonicalize(shared_dir).map_err(|source| FsError::SharedDir {
            path: shared_dir.to_path_buf(),
            source,
        })?;
        if !resolved.is_dir() {
            return Err(FsError::NotADirectory(shared_dir.to_path_buf()));
        }
        let (server, share) = new_server(&resolved, config)?;
        let lock_waits = LockWaits::new().map_err(FsError::QueueEvent)?;
        let lock_wait_event = lock_waits.event();
        let mut device = VirtioFs {
            tag: tag_bytes,
            shared_dir: resolved,
            config,
            acked_features: 0,
            queue_events: Vec::new(),
            workers_per_queue: 1,
            server,
            share,
            active: None,
            errors_seen: 0,
            stats: Arc::default(),
            lock_waits: Arc::new(Mutex::new(lock_waits)),
            lock_wait_event,
        };
        device.set_request_queues(1)?;
        Ok(device)
    }

    /// The device with `request_queues` request queues offered (1 to
    /// [`MAX_REQUEST_QUEUES`]; a guest kernel uses at most one per vCPU), each served by
    /// `workers` threads of its own (at most [`MAX_WORKERS_PER_QUEUE`]; 0: on the event
    /// loop, one request at a time). To be called before the device is attached.
    pub fn with_queues(mut self, request_queues: usize, workers: usize) -> Result<Self, FsError> {
        self.set_request_queues(request_queues.clamp(1, MAX_REQUEST_QUEUES))?;
        self.workers_per_queue = workers.min(MAX_WORKERS_PER_QUEUE);
        Ok(self)
    }

    fn set_request_queues(&mut self, request_queues: usize) -> Result<(), FsError> {
        self.queue_events = (0..1 + request_queues)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(FsError::QueueEvent)?;
        Ok(())
    }

    /// The number of request queues offered.
    pub fn request_queues(&self) -> usize {
        self.queue_events.len().saturating_sub(1)
    }

    /// Whether the event loop serves the request queues (the device has no workers).
    pub(super) fn loop_serves_requests(&self) -> bool {
        self.workers_per_queue == 0
    }

    /// The worker threads running now.
    pub fn workers(&self) -> usize {
        self.active
            .as_ref()
            .and_then(|a| a.workers.as_ref())
            .map_or(0, Workers::len)
    }

    /// The mount tag.
    pub fn tag(&self) -> &str {
        let len = self.tag.iter().position(|&b| b == 0).unwrap_or(TAG_MAX_LEN);
        // The tag was a &str cut at a char boundary (its own end): this cannot fail.
        std::str::from_utf8(self.tag.get(..len).unwrap_or_default()).unwrap_or_default()
    }

    /// The shared directory, resolved.
    pub fn shared_dir(&self) -> &Path {
        &self.shared_dir
    }

    /// The file system the device serves (its inode and descriptor figures).
    pub fn share(&self) -> &ShareFs {
        &self.share
    }

    /// What the guest's requests have cost so far, by opcode (shared: readable while the
    /// device runs).
    pub fn stats(&self) -> Arc<FsStats> {
        Arc::clone(&self.stats)
    }

    /// Whether the driver has activated the device.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The event signalled when the driver notifies queue `index`.
    pub(super) fn queue_event(&self, index: usize) -> Option<&EventFd> {
        self.queue_events.get(index)
    }

    /// Serves the requests the guest queued on queue `index` on the calling thread (the
    /// event loop), at most a batch of them. Does nothing before activation, nor for a
    /// queue the driver did not set up.
    pub(super) fn process_queue(&mut self, index: usize) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let Some(lane) = active.lanes.get(index) else {
            return;
        };
        let pace = Pace {
            batch: MAX_BATCH,
            peers: false,
        };
        lane.serve(&active.serving, pace, &mut self.errors_seen);
    }
}

impl VirtioFs {
    /// The event a lock wait's end signals.
    pub(super) fn lock_wait_event(&self) -> &EventFd {
        &self.lock_wait_event
    }

    /// The SETLKW requests waiting now.
    pub fn lock_waits(&self) -> usize {
        lock(&self.lock_waits).len()
    }

    /// The server, shared, for the host-edit watch (`host_watch.rs`, `server/nudge.rs`).
    pub fn share_handle(&self) -> Arc<ShareFs> {
        Arc::clone(&self.share)
    }

    /// A handle that answers every SETLKW wait `EINTR` from another thread.
    pub fn lock_canceller(&self) -> LockCanceller {
        lock(&self.lock_waits).canceller()
    }

    /// Gives back the SETLKW requests whose waits ended, interrupting the guest if it wants
    /// to be told.
    pub(super) fn answer_lock_waits(&mut self) {
        let ended = lock(&self.lock_waits).take_ended();
        let Some(active) = self.active.as_ref() else {
            return;
        };
        for lane in &active.lanes {
            lane.give_back_waits(&active.serving, &ended, &mut self.errors_seen);
        }
    }
}

/// A FUSE server over a new [`ShareFs`] of `shared_dir`, and that file system.
fn new_server(
    shared_dir: &Path,
    config: ShareConfig,
) -> Result<(Arc<FsServer>, Arc<ShareFs>), FsError> {
    let share = Arc::new(ShareFs::new(shared_dir, config).map_err(FsError::Backend)?);
    Ok((Arc::new(Server::new(Arc::clone(&share))), share))
}

impl VirtioDevice for VirtioFs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        // One per queue event: hiprio and the request queues offered.
        QUEUE_MAX_SIZES
            .get(..self.queue_events.len())
            .unwrap_or(&QUEUE_MAX_SIZES)
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.device_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_fs_config { u8 tag[36]; le32 num_request_queues; }
        let mut config = [0u8; super::CONFIG_SIZE];
        let (tag, num_request_queues) = config.split_at_mut(TAG_MAX_LEN);
        tag.copy_from_slice(&self.tag);
        let offered = u32::try_from(self.request_queues()).unwrap_or(1);
        num_request_queues.copy_from_slice(&offered.to_le_bytes());
        super::super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The config space is read-only.
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn Interrupt>,
        mut queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        // Hiprio and at least one request queue; the driver may use fewer request queues
        // than offered (one per vCPU at most).
        if !(2..=self.queue_events.len()).contains(&queues.len()) {
            return Err(ActivateError::QueueCount {
                expected: self.queue_events.len(),
                got: queues.len(),
            });
        }
        let event_idx = self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let lanes = queues
            .drain(..)
            .zip(&self.queue_events)
            .enumerate()
            .map(|(index, (mut queue, event))| {
                queue.set_event_idx(event_idx);
                Lane::new(index, queue, event).map(Arc::new)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let serving = Arc::new(Serving {
            mem,
            interrupt,
            server: Arc::clone(&self.server),
            share: Arc::clone(&self.share),
            stats: Arc::clone(&self.stats),
            lock_waits: Arc::clone(&self.lock_waits),
        });
        let workers = match self.workers_per_queue {
            0 => None,
            per_lane => {
                let requests = lanes.get(HIPRIO_QUEUE + 1..).unwrap_or_default();
                Some(Workers::start(&serving, requests, per_lane)?)
            }
        };
        self.active = Some(ActiveQueues {
            serving,
            lanes,
            workers,
        });
        // Requests the driver queued before it finished activating are waiting.
        for event in &self.queue_events {
            if let Err(err) = event.write(1) {
                log_error(&mut self.errors_seen, &err);
            }
        }
        Ok(())
    }

    fn reset(&mut self) -> bool {
        // A fresh server forgets the old session's inodes and open files; the driver sends
        // FUSE_INIT again.
        match new_server(&self.shared_dir, self.config) {
            Ok((server, share)) => {
                // The workers are stopped (joined) first: none serves the old session after.
                self.active = None;
                self.server = server;
                self.share = share;
            }
            Err(err) => {
                // The old rings are the driver's again: nothing serves them any more.
                self.active = None;
                log_error(&mut self.errors_seen, &err);
                return false;
            }
        }
        self.active = None;
        self.acked_features = 0;
        lock(&self.lock_waits).forget();
        true
    }
}
