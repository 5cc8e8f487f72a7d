//! A process's terminal on guest-init's side: the container stage made the pty inside the
//! container and handed the master over; guest-init copies the master's output to the
//! host's stream and the stream's bytes to the master, and sets the window size the host
//! asks for.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// Starts the two copies between `master` and the host's `stream`. The output copy ends
/// when the last slave is closed (the master then reads EIO) and shuts the stream, so the
/// host sees the end of the output; the input copy ends with the host's side.
pub fn relay(master: Arc<OwnedFd>, stream: File) -> io::Result<()> {
    let to_host = stream.try_clone()?;
    let out_master = File::from(master.try_clone()?);
    std::thread::spawn(move || {
        copy(out_master, &to_host);
        // SAFETY: shutdown on a socket we own; no pointers.
        unsafe { libc::shutdown(to_host.as_raw_fd(), libc::SHUT_WR) };
    });
    let in_master = File::from(master.try_clone()?);
    std::thread::spawn(move || copy(stream, &in_master));
    Ok(())
}

fn copy(mut from: File, mut to: &File) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Sets the terminal's window size; the kernel signals the foreground group if it changed.
pub fn resize(master: &OwnedFd, rows: u16, cols: u16) {
    // A master that fails the ioctl is one whose process is going: nothing to tell.
    let _ = guest_init::pty::set_size(master, rows, cols);
}
