//! The process's terminal, made as runc makes it: a pty from the container's own devpts
//! (`/dev/ptmx`), after the spec's mounts and before the root is sealed. The master goes to
//! guest-init over [`CONSOLE_FD`]; the slave becomes `/dev/console` (for the container's
//! first process), the process's controlling terminal, and its stdin, stdout and stderr,
//! owned by the process's user.

use std::os::fd::AsRawFd;

use guest_init::pty;

use super::CONSOLE_FD;
use super::sys::{self, last_error};

/// The process's pty.
pub struct Pty(pty::Pty);

fn ioctl_failed(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Opens a pty in the container's devpts, `size` `(rows, columns)` its first window size.
pub fn open(size: Option<(u16, u16)>) -> Result<Pty, String> {
    let pty = pty::open(c"/dev/ptmx").map_err(|e| e.to_string())?;
    if let Some((rows, cols)) = size {
        pty::set_size(&pty.master, rows, cols).map_err(|e| e.to_string())?;
    }
    Ok(Pty(pty))
}

impl Pty {
    /// Binds the slave over `/dev/console` (created if missing), as runc does.
    pub fn mount_console(&self) -> Result<(), String> {
        match std::fs::symlink_metadata("/dev/console") {
            Err(_) => {
                std::fs::File::create("/dev/console")
                    .map_err(|e| format!("create /dev/console: {e}"))?;
            }
            // The mount would follow a link wherever the image points it.
            Ok(m) if m.file_type().is_symlink() => {
                return Err("/dev/console is a symbolic link".into());
            }
            Ok(_) => {}
        }
        sys::mount(
            Some(&self.0.path),
            "/dev/console",
            None,
            libc::MS_BIND,
            None,
        )
    }

    /// Hands the master to guest-init, then makes the slave the controlling terminal and
    /// stdio of this process, owned by `uid` (its group stays devpts's).
    pub fn attach(self, uid: u32) -> Result<(), String> {
        let pty::Pty {
            master,
            slave,
            path,
        } = self.0;
        crate::fdpass::send_fd(CONSOLE_FD, master.as_raw_fd())
            .map_err(|e| format!("cannot hand the terminal over: {e}"))?;
        drop(master);
        // SAFETY: close takes no pointers; the descriptor was ours for this one message.
        unsafe { libc::close(CONSOLE_FD) };
        let slave = slave.as_raw_fd();
        // SAFETY: fchown and ioctl on a descriptor we own; TIOCSCTTY takes an int.
        unsafe {
            if libc::fchown(slave, uid, u32::MAX) != 0 {
                return Err(last_error("chown", &path));
            }
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
                return Err(ioctl_failed("set the controlling terminal"));
            }
        }
        for target in 0..3 {
            // SAFETY: dup2 of a descriptor we own onto a standard one.
            if unsafe { libc::dup2(slave, target) } < 0 {
                return Err(ioctl_failed("dup2 the terminal"));
            }
        }
        Ok(())
    }
}
