//! One forwarded connection's bytes, for both ends of [`crate::portfwd`]: two sockets
//! copied both ways by two threads until both directions have ended, a half-close passed on
//! (shutdown of writing when one direction reaches end of file), and the bound on the
//! connections open at once ([`Slot`], [`MAX_FORWARDED`]).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::portfwd::MAX_FORWARDED;

/// Bytes copied at once, each way.
const COPY_BUF: usize = 16 << 10;
/// The stack of a forwarded connection's threads (they hold little: the buffer is on the
/// heap).
pub const COPY_STACK: usize = 256 << 10;

/// One of the [`MAX_FORWARDED`] connections that may be open at once; freed on drop.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot of the `open` connections, or `None` when [`MAX_FORWARDED`] are.
    pub fn take(open: &Arc<AtomicUsize>) -> Option<Slot> {
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_FORWARDED {
            open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connected stream socket both threads of a connection use at once.
pub trait Duplex: AsRawFd + Send + Sync + 'static {
    /// Reads what is there (blocking until something is).
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `buf`.
    fn write_all_of(&self, buf: &[u8]) -> io::Result<()>;
}

impl<T: AsRawFd + Send + Sync + 'static> Duplex for T
where
    for<'a> &'a T: Read + Write,
{
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut this = self;
        this.read(buf)
    }

    fn write_all_of(&self, buf: &[u8]) -> io::Result<()> {
        let mut this = self;
        this.write_all(buf)
    }
}

/// Shuts `how` of a socket down; one already shut down or reset is no error worth reporting.
pub fn shut(socket: &impl AsRawFd, how: libc::c_int) {
    // SAFETY: shutdown takes no pointers; the fd is open as long as `socket` is borrowed.
    unsafe { libc::shutdown(socket.as_raw_fd(), how) };
}

/// Copies `a` to `b` and `b` to `a` until both directions have ended, then closes both.
pub fn splice<A: Duplex, B: Duplex>(a: A, b: B) {
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (a2, b2) = (a.clone(), b.clone());
    let back = std::thread::Builder::new()
        .name("port-copy".into())
        .stack_size(COPY_STACK)
        .spawn(move || pump(&*b2, &*a2));
    let Ok(back) = back else {
        return;
    };
    pump(&*a, &*b);
    let _ = back.join();
}

/// Copies `from` to `to` until `from` ends, then shuts down writing on `to` (its peer sees
/// end of file and may still answer). On an error either way both sockets are shut down,
/// which ends the other direction too.
fn pump<R: Duplex, W: Duplex>(from: &R, to: &W) {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match from.read_some(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return abort(from, to),
        };
        if to.write_all_of(&buf[..n]).is_err() {
            return abort(from, to);
        }
    }
    shut(to, libc::SHUT_WR);
}

fn abort(a: &impl AsRawFd, b: &impl AsRawFd) {
    shut(a, libc::SHUT_RDWR);
    shut(b, libc::SHUT_RDWR);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded() {
        let open = Arc::new(AtomicUsize::new(0));
        let slots: Vec<Slot> = (0..MAX_FORWARDED)
            .map(|_| Slot::take(&open).unwrap())
            .collect();
        assert!(Slot::take(&open).is_none());
        drop(slots);
        assert_eq!(open.load(Ordering::Acquire), 0);
        assert!(Slot::take(&open).is_some());
    }
}
