//! Starting the host's process: its stdin, stdout and stderr are vsock streams to the host
//! (the process reads and writes them directly: back-pressure is the socket's). A clone into
//! new pid, mount, UTS and IPC namespaces re-executes guest-init as the container stage
//! (`container`), which sets the container up and execs the process, so the process is
//! PID 1 of its pid namespace as with runc. A failure comes back as one line over a
//! close-on-exec pipe. A waiter thread reports how the process ended.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_init::protocol::{ExecSpec, GuestMessage, write_frame};

use crate::container::{ERROR_FD, SPEC_FD, STAGE_ARG};
use crate::vsock;

/// The host's vsock context id.
const HOST_CID: u32 = 2;
/// The program re-executed as the container stage: guest-init itself.
const SELF: &std::ffi::CStr = c"/init";
/// The longest failure message read back from the stage.
const MAX_ERROR: u64 = 64 << 10;
/// Descriptors the child's inputs are moved to before the clone, above every target.
const HIGH_FD: i32 = 10;

/// A close-on-exec copy of `fd` at or above [`HIGH_FD`]; the caller drops the original.
fn high(fd: &impl AsRawFd) -> Result<OwnedFd, String> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new one or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if new < 0 {
        return Err(format!("fcntl: {}", io::Error::last_os_error()));
    }
    // SAFETY: fcntl just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The spec, as JSON in an anonymous memory file read from its start.
fn spec_file(req: &ExecSpec) -> Result<File, String> {
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name; memfd_create returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"exec-spec".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(&body)
        .and_then(|()| std::io::Seek::rewind(&mut f))
        .map_err(|e| format!("write the container spec: {e}"))?;
    Ok(f)
}

/// Starts the process; returns its pid, or the one-line reason it could not start. On
/// success a thread reports its end on `control`.
pub fn start(
    req: ExecSpec,
    control: Arc<Mutex<impl Write + Send + 'static>>,
) -> Result<i32, String> {
    req.validate().map_err(|e| format!("exec: {e}"))?;
    let spec = high(&spec_file(&req)?)?;
    let mut stdio = Vec::with_capacity(3);
    for port in req.stdio_ports {
        let s = vsock::connect(HOST_CID, port, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect stdio port {port}: {e}"))?;
        stdio.push(high(&s)?);
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    let (err_read, low_write) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let err_write = high(&low_write)?;
    // Every copy of the write end must be gone for the read below to end.
    drop(low_write);
    let stage_arg = CString::new(STAGE_ARG).map_err(|e| e.to_string())?;
    let argv = [SELF.as_ptr(), stage_arg.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // Every descriptor the child moves into place, as (from, to).
    let moves = [
        (stdio[0].as_raw_fd(), 0),
        (stdio[1].as_raw_fd(), 1),
        (stdio[2].as_raw_fd(), 2),
        (spec.as_raw_fd(), SPEC_FD),
        (err_write.as_raw_fd(), ERROR_FD),
    ];

    let flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    // SAFETY: clone without CLONE_VM or a new stack is a fork; the child only makes
    // async-signal-safe system calls on data prepared above.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(flags) | libc::c_long::from(libc::SIGCHLD),
            0,
            0,
            0,
            0,
        )
    } as i32;
    if pid < 0 {
        return Err(format!("clone: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child: dup2 and execve on prepared, valid data; never returns.
        unsafe { child(&moves, &argv, &envp) }
    }
    drop((err_write, spec, stdio)); // the stage holds them now; our copies would keep them open
    let mut message = Vec::new();
    let _ = File::from(err_read)
        .take(MAX_ERROR)
        .read_to_end(&mut message);
    if !message.is_empty() {
        let mut status = 0;
        // SAFETY: reaping our own child; `status` is a valid int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(String::from_utf8_lossy(&message).replace('\n', " "));
    }
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is a valid int.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        let msg = if rc != pid {
            GuestMessage::Exited {
                code: Some(255),
                signal: None,
            }
        } else if libc::WIFSIGNALED(status) {
            GuestMessage::Exited {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            GuestMessage::Exited {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        };
        let mut w = control.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write_frame(&mut *w, &msg);
    });
    Ok(pid)
}

/// The cloned child: descriptors into place, then guest-init again as the container stage.
///
/// # Safety
/// Only to be called in the forked child, with NULL-terminated pointer arrays.
unsafe fn child(
    moves: &[(i32, i32)],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: dup2 and execve on descriptors and strings prepared before the clone; the
    // sources are all at or above HIGH_FD, so no move overwrites a later source.
    unsafe {
        for &(from, to) in moves {
            if libc::dup2(from, to) < 0 {
                libc::_exit(126);
            }
        }
        libc::execve(SELF.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let msg = b"cannot start the container stage /init";
        libc::write(ERROR_FD, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}
