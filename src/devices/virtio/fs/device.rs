//! The virtio-fs device: features, config space, activation, and the processing of its two
//! queues (every available chain through the FUSE server), which the event handler calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fuse_backend_rs::api::server::Server;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::lock_wait::{LockCanceller, LockWaits};
use super::request::{FsServer, handle_chain};
use super::server::{ShareConfig, ShareFs};
use super::stats::FsStats;
use super::{FsError, NUM_QUEUES, QUEUE_SIZE, TAG_MAX_LEN};
use crate::devices::virtio::{
    ActivateError, Interrupt, TYPE_FS, VIRTIO_F_VERSION_1, VirtioDevice, activation_queues,
};
use crate::vmm::GuestMemory;

/// Maximum size of each queue (hiprio, request).
const QUEUE_MAX_SIZES: [u16; NUM_QUEUES] = [QUEUE_SIZE; NUM_QUEUES];
/// Chains handled per queue event before the device lets other events run.
const MAX_BATCH: usize = QUEUE_SIZE as usize;

/// What the device works with once the driver has set it up.
struct ActiveQueues {
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    /// In queue index order: hiprio, request.
    queues: [Queue; NUM_QUEUES],
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
    server: FsServer,
    /// The file system behind `server`, for its figures.
    share: Arc<ShareFs>,
    active: Option<ActiveQueues>,
    errors_seen: u32,
    /// What the requests cost, by opcode (kept across resets: one per device).
    stats: Arc<FsStats>,
    /// The SETLKW requests waiting for their locks.
    lock_waits: LockWaits,
}

impl std::fmt::Debug for VirtioFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioFs")
            .field("tag", &self.tag())
            .field("shared_dir", &self.shared_dir)
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

    /// [`VirtioFs::new`] with `config` (a smaller descriptor budget, other timeouts).
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
        let queue_events = (0..NUM_QUEUES)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(FsError::QueueEvent)?;
        let (server, share) = new_server(&resolved, config)?;
        Ok(VirtioFs {
            tag: tag_bytes,
            shared_dir: resolved,
            config,
            acked_features: 0,
            queue_events,
            server,
            share,
            active: None,
            errors_seen: 0,
            stats: Arc::default(),
            lock_waits: LockWaits::new().map_err(FsError::QueueEvent)?,
        })
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

    /// Answers every request the guest queued on queue `index`, then interrupts the guest if it
    /// wants to be told. Does nothing before activation.
    pub(super) fn process_queue(&mut self, index: usize) {
        let Self {
            active,
            server,
            share,
            errors_seen,
            queue_events,
            stats,
            lock_waits,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return;
        };
        let Some(queue) = active.queues.get_mut(index) else {
            return;
        };
        let mem = &active.mem;
        let mut used = 0;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let started = Instant::now();
            let completion = handle_chain(server, share, mem, index, chain);
            stats.record(
                completion.opcode,
                completion.request_len,
                completion.used_len,
                started.elapsed(),
                completion.error.is_some(),
            );
            if let Some(err) = completion.error {
                log_error(errors_seen, &err);
            }
            let mut used_len = completion.used_len;
            if let Some((lock, waiting)) = completion.wait {
                match lock_waits.start(lock, waiting) {
                    // Answered when the wait ends (`answer_lock_waits`).
                    Ok(()) => continue,
                    Err((errno, waiting)) => used_len = waiting.write_reply(mem, errno),
                }
            }
            if let Err(err) = queue.add_used(mem, head, used_len) {
                log_error(errors_seen, &err);
            }
            used += 1;
            if used == MAX_BATCH {
                // A guest refilling the queue as fast as we drain it must not starve the rest
                // of the event loop: come back through the queue event.
                if let Some(event) = queue_events.get(index)
                    && let Err(err) = event.write(1)
                {
                    log_error(errors_seen, &err);
                }
                break;
            }
        }
        if used > 0
            && let Err(err) = super::super::notify_used(queue, mem, &*active.interrupt)
        {
            log_error(errors_seen, &err);
        }
    }
}

impl VirtioFs {
    /// The event a lock wait's end signals.
    pub(super) fn lock_wait_event(&self) -> &EventFd {
        self.lock_waits.event()
    }

    /// The SETLKW requests waiting now.
    pub fn lock_waits(&self) -> usize {
        self.lock_waits.len()
    }

    /// The server, shared, for the host-edit watch (`host_watch.rs`, `server/nudge.rs`).
    pub fn share_handle(&self) -> Arc<ShareFs> {
        Arc::clone(&self.share)
    }

    /// A handle that answers every SETLKW wait `EINTR` from another thread.
    pub fn lock_canceller(&self) -> LockCanceller {
        self.lock_waits.canceller()
    }

    /// Answers the SETLKW requests whose waits ended, then interrupts the guest if it wants
    /// to be told.
    pub(super) fn answer_lock_waits(&mut self) {
        let ended = self.lock_waits.take_ended();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let mut touched = [false; NUM_QUEUES];
        for (waiting, errno) in ended {
            let Some(queue) = active.queues.get_mut(waiting.queue) else {
                continue;
            };
            let used_len = waiting.write_reply(mem, errno);
            if let Err(err) = queue.add_used(mem, waiting.head, used_len) {
                log_error(&mut self.errors_seen, &err);
            }
            if let Some(t) = touched.get_mut(waiting.queue) {
                *t = true;
            }
        }
        for (queue, _) in active.queues.iter_mut().zip(touched).filter(|(_, t)| *t) {
            if let Err(err) = super::super::notify_used(queue, mem, &*active.interrupt) {
                log_error(&mut self.errors_seen, &err);
            }
        }
    }
}

/// A FUSE server over a new [`ShareFs`] of `shared_dir`, and that file system.
fn new_server(shared_dir: &Path, config: ShareConfig) -> Result<(FsServer, Arc<ShareFs>), FsError> {
    let share = Arc::new(ShareFs::new(shared_dir, config).map_err(FsError::Backend)?);
    Ok((Server::new(Arc::clone(&share)), share))
}

fn log_error(errors_seen: &mut u32, err: &dyn std::fmt::Display) {
    super::super::log_guest_error("virtio-fs", errors_seen, err);
}

impl VirtioDevice for VirtioFs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_MAX_SIZES
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.device_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_fs_config { u8 tag[36]; le32 num_request_queues; }
        let mut config = [0u8; super::CONFIG_SIZE];
        let (tag, num_request_queues) = config.split_at_mut(TAG_MAX_LEN);
        tag.copy_from_slice(&self.tag);
        num_request_queues.copy_from_slice(&1u32.to_le_bytes());
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
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        let queues = activation_queues(self.active.is_some(), queues)?;
        self.active = Some(ActiveQueues {
            mem,
            interrupt,
            queues,
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
                self.server = server;
                self.share = share;
            }
            Err(err) => {
                log_error(&mut self.errors_seen, &err);
                return false;
            }
        }
        self.active = None;
        self.acked_features = 0;
        self.lock_waits.forget();
        true
    }
}
