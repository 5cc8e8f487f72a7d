//! The host end of the device: a non-blocking tap (or any descriptor that keeps frame
//! boundaries), one frame per `read` and per `write`, header included, and how its offloads
//! are set ([`OffloadControl`]).

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
    /// The `TUN_F_*` offloads the tap was last set to; `None` before the first attempt.
    offloads: Option<u32>,
    /// The tap refused to have its offloads set: it is left to send plain frames (always
    /// acceptable) and never asked again.
    offloads_refused: bool,
}

impl Tap {
    /// Wraps `fd` (already non-blocking: see `NetHandle::attach`).
    pub(super) fn new(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
            failed: false,
            offloads: None,
            offloads_refused: false,
        }
    }

    /// The descriptor, for the event loop.
    pub(super) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The tap itself, for vhost-net.
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Whether the tap failed (see [`Tap::mark_failed`]).
    pub(super) fn failed(&self) -> bool {
        self.failed
    }

    /// Stops reading and watching the tap for good.
    pub(super) fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// Sets the tap's offloads to `flags` through `control`, unless they already are or the
    /// tap refused before. When it refuses, it is asked for none instead (best effort: it then
    /// sends plain frames) and never asked again; the error is returned, for the one log line.
    pub(super) fn set_offloads(
        &mut self,
        control: &mut dyn OffloadControl,
        flags: u32,
    ) -> io::Result<()> {
        if self.offloads_refused || self.offloads == Some(flags) {
            return Ok(());
        }
        let fd = self.raw_fd();
        match control.set_offloads(fd, flags) {
            Ok(()) => {
                self.offloads = Some(flags);
                Ok(())
            }
            Err(err) => {
                self.offloads_refused = true;
                self.offloads = None;
                if flags != 0 {
                    let _ = control.set_offloads(fd, 0);
                }
                Err(err)
            }
        }
    }

    /// The offloads the tap was last set to (`None`: never, or it refused).
    #[cfg(test)]
    pub(super) fn offloads(&self) -> Option<u32> {
        self.offloads
    }

    /// Whether the tap refused to have its offloads set.
    #[cfg(test)]
    pub(super) fn offloads_refused(&self) -> bool {
        self.offloads_refused
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

/// Sets a tap's offloads: which `TUN_F_*` kinds of frames (partial checksums, unsegmented
/// TCP) it may hand the device. `TUNSETOFFLOAD` in production ([`TunOffloads`]); a recorder
/// in tests.
pub(super) trait OffloadControl: Send {
    /// Lets the tap behind `fd` use the offloads in `flags`, and no others.
    fn set_offloads(&mut self, fd: RawFd, flags: u32) -> io::Result<()>;
}

/// Sets offloads with `TUNSETOFFLOAD`. Anything but a tap refuses it (`ENOTTY`, `EINVAL`)
/// without side effects.
#[derive(Debug, Default)]
pub(super) struct TunOffloads;

impl OffloadControl for TunOffloads {
    fn set_offloads(&mut self, fd: RawFd, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of TUN_F_*
        // flags): no memory is passed. `fd` is the device's open tap for the duration of the
        // call; on any other descriptor the kernel refuses the request.
        let ret = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
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
