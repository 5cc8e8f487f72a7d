//! The host's end of a process's terminal. The pty itself is in the guest; its master is
//! relayed over one vsock stream. On the host that stream meets either:
//!
//! - a `--console-socket` (as containerd's shim and conmon use it): runvm makes a host pty,
//!   sends its master over the socket with `SCM_RIGHTS` as runc does, and relays the slave,
//!   in raw mode so that only the guest's line discipline acts. The relaying process makes
//!   the slave its controlling terminal, so a resize of the master reaches it as SIGWINCH;
//! - or runvm's own stdin and stdout (`runvm run`/`exec -t` in the foreground), with the
//!   calling terminal, if any, in raw mode until the end.
//!
//! Either way SIGWINCH turns into the new size for the guest's pty.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::relay;

/// Where a process's terminal goes on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyTarget {
    /// A pty whose master is sent over this socket.
    Socket(PathBuf),
    /// runvm's own stdin and stdout.
    Own,
}

/// The host's end of a terminal, relayed to the guest's.
pub struct Terminal {
    /// What the relay reads the user's input from.
    input: File,
    /// What it writes the process's output to.
    output: File,
    /// Whose window size the guest's pty follows.
    size_source: Arc<File>,
    /// A terminal's settings to put back when done.
    saved: Option<(File, libc::termios)>,
}

fn context(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Sets `tty` raw; returns its previous settings (`None` if it is not a terminal).
fn make_raw(tty: &impl AsRawFd) -> io::Result<Option<libc::termios>> {
    // SAFETY: termios is plain data; zeroed is valid, and tcgetattr fills it.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a termios.
    if unsafe { libc::tcgetattr(tty.as_raw_fd(), &mut saved) } != 0 {
        return Ok(None);
    }
    let mut raw = saved;
    // SAFETY: a valid pointer to a termios.
    unsafe { libc::cfmakeraw(&mut raw) };
    // SAFETY: a valid pointer to a termios.
    if unsafe { libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &raw) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(saved))
}

impl Terminal {
    /// Opens the host end for `target`. For a socket, the master is sent before this
    /// returns; call it while this process is single-threaded, as it may start a session.
    pub fn open(target: &TtyTarget) -> io::Result<Terminal> {
        match target {
            TtyTarget::Socket(path) => Terminal::for_socket(path),
            TtyTarget::Own => {
                let input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
                let output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
                let saved = make_raw(&input)?
                    .map(|t| input.try_clone().map(|f| (f, t)))
                    .transpose()?;
                Ok(Terminal {
                    size_source: Arc::new(input.try_clone()?),
                    input,
                    output,
                    saved,
                })
            }
        }
    }

    fn for_socket(path: &Path) -> io::Result<Terminal> {
        let pty = guest_init::pty::open(c"/dev/ptmx")?;
        make_raw(&pty.slave).map_err(context("cannot set the console raw"))?;
        // The slave as this process's controlling terminal: a resize of the master then
        // signals us. Only a process that leads no group may start a session; one that
        // cannot (a foreground `runvm run` its shell made a group leader) relays sizes
        // set before the start only.
        // SAFETY: setsid and TIOCSCTTY take no pointers.
        unsafe {
            if libc::setsid() >= 0 {
                libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCSCTTY, 0);
            }
        }
        send_master(path, pty.master, &pty.path)?;
        let slave = File::from(pty.slave);
        Ok(Terminal {
            input: slave.try_clone()?,
            size_source: Arc::new(slave.try_clone()?),
            output: slave,
            saved: None,
        })
    }

    /// The current window size to give the guest's pty, if there is one.
    pub fn size(&self) -> Option<(u16, u16)> {
        guest_init::pty::size(&*self.size_source)
    }

    /// A handle that reads the window size from another thread (for SIGWINCH).
    pub fn sizer(&self) -> relay::Sizer {
        let source = self.size_source.clone();
        Box::new(move || guest_init::pty::size(&*source))
    }

    /// Starts copying between this end and the guest's `stream`; returns the output copy,
    /// which ends when the guest's side of the terminal does.
    pub fn relay(&self, stream: UnixStream) -> io::Result<JoinHandle<()>> {
        relay::spawn_input_relay(self.input.try_clone()?, stream.try_clone()?);
        Ok(relay::spawn_output_relay(stream, self.output.try_clone()?))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some((tty, termios)) = &self.saved {
            // SAFETY: a valid pointer to the settings read at the start.
            unsafe { libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, termios) };
        }
    }
}

/// Sends `master` over the Unix socket at `path`, with the pty's name as the data (runc's
/// form, which containerd's and conmon's receivers read).
fn send_master(path: &Path, master: OwnedFd, name: &str) -> io::Result<()> {
    let conn = super::control::connect(path).map_err(context(&format!(
        "cannot connect to the console socket {}",
        path.display()
    )))?;
    conn.send_with_fds(&[name.as_bytes()], &[master.as_raw_fd()])
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
        .map_err(context("cannot send the console to the console socket"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;

    #[test]
    fn the_master_reaches_the_console_socket_and_the_slave_is_raw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let receiver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut name = [0u8; 64];
            let mut iov = [libc::iovec {
                iov_base: name.as_mut_ptr().cast(),
                iov_len: name.len(),
            }];
            let mut fds = [-1; 1];
            // SAFETY: the iovec points at `name`, alive for the call.
            let (n, count) = unsafe { conn.recv_with_fds(&mut iov, &mut fds) }.unwrap();
            assert_eq!(count, 1);
            let name = String::from_utf8_lossy(&name[..n]).into_owned();
            // SAFETY: recvmsg just gave us this descriptor.
            (name, unsafe { File::from_raw_fd(fds[0]) })
        });
        // A test thread may not start a session: the socket path still works without one.
        let pty = guest_init::pty::open(c"/dev/ptmx").unwrap();
        make_raw(&pty.slave).unwrap();
        send_master(&path, pty.master, &pty.path).unwrap();
        let (name, mut master) = receiver.join().unwrap();
        assert_eq!(name, pty.path);
        let mut slave = File::from(pty.slave);
        // Raw: a newline written to the slave comes out of the master unchanged.
        slave.write_all(b"a\n").unwrap();
        let mut got = [0u8; 2];
        master.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"a\n");
        guest_init::pty::set_size(&master, 40, 120).unwrap();
        assert_eq!(guest_init::pty::size(&slave), Some((40, 120)));
    }

    #[test]
    fn a_missing_console_socket_is_one_clear_error() {
        let pty = guest_init::pty::open(c"/dev/ptmx").unwrap();
        let err = send_master(
            Path::new("/nonexistent/console.sock"),
            pty.master,
            &pty.path,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot connect to the console socket /nonexistent/console.sock:"),
            "{err}"
        );
    }
}
