//! The host end of the device: a non-blocking tap (or any descriptor that keeps frame
//! boundaries), one frame per `read` and per `write`, header included.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// How often a read or write interrupted by a signal is tried again before it counts as
/// failed (it cannot block: the descriptor is non-blocking).
const EINTR_RETRIES: usize = 4;

/// The attached tap.
#[derive(Debug)]
pub(super) struct Tap {
    file: File,
    /// The tap reported an error or a hang-up, or a read failed: it is not watched any more
    /// (it would wake the event loop forever) and nothing is read from it. Writes are still
    /// tried (and counted as dropped when they fail) until the handle replaces it.
    failed: bool,
}

impl Tap {
    /// Wraps `fd` (already non-blocking: see `NetHandle::attach`).
    pub(super) fn new(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
            failed: false,
        }
    }

    /// The descriptor, for the event loop.
    pub(super) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Whether the tap failed (see [`Tap::mark_failed`]).
    pub(super) fn failed(&self) -> bool {
        self.failed
    }

    /// Stops reading and watching the tap for good.
    pub(super) fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// Reads one frame (header included) into `buf`; `WouldBlock` when there is none, 0 at
    /// end of file (a shut-down socket: a tap has no end of file).
    pub(super) fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        retry_eintr(|| self.file.read(buf))
    }

    /// Writes one frame (header included); `WouldBlock` (or `ENOBUFS`) when the tap has no
    /// room for it.
    pub(super) fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        retry_eintr(|| self.file.write(frame))
    }
}

fn retry_eintr(mut op: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    let mut tries = 0;
    loop {
        match op() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted && tries < EINTR_RETRIES => {
                tries += 1;
            }
            result => return result,
        }
    }
}
