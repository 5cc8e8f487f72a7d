//! Starting the host's process: its stdin, stdout and stderr are vsock streams to the host
//! (the process reads and writes them directly: back-pressure is the socket's). A clone into
//! new pid, mount, UTS and IPC namespaces re-executes guest-init as the container stage
//! (`container`), which sets the container up and execs the process, so the process is
//! PID 1 of its pid namespace as with runc. A process for `runvm exec` joins that
//! container instead: a short-lived helper enters the container's namespaces and forks the
//! stage as guest-init's own child (`CLONE_PARENT`), from guest-init's binary opened before
//! the mount namespace changed. A failure comes back as one line over a close-on-exec pipe.
//! A waiter thread reports how each process ended.

use std::collections::HashMap;
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

/// The namespaces an exec'd process joins, in setns order (the mount namespace last: it
/// changes what the other paths mean).
const JOINED_NAMESPACES: [&str; 4] = ["ipc", "uts", "pid", "mnt"];
/// The most processes one container may have started through runvm at a time.
pub const MAX_PROCESSES: usize = 1024;

/// The running processes: the host's number for each, and its guest pid.
#[derive(Clone, Default)]
pub struct Processes(Arc<Mutex<HashMap<u32, i32>>>);

impl Processes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, i32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The guest pid of process `id`, while it runs.
    pub fn pid(&self, id: u32) -> Option<i32> {
        self.lock().get(&id).copied()
    }
}

/// What a joining process needs, opened before the fork.
struct Join {
    namespaces: Vec<OwnedFd>,
    /// guest-init's own binary: /init is not reachable from inside the container.
    exe: OwnedFd,
    /// The helper writes the pid of the stage here.
    pid_read: OwnedFd,
    pid_write: OwnedFd,
}

fn open_high(path: &str) -> Result<OwnedFd, String> {
    let f = File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    high(&f)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    let (read, low_write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Every copy of the write end must be gone for a read to end: only the high one stays.
    Ok((read, high(&low_write)?))
}

impl Join {
    fn open(container: i32) -> Result<Join, String> {
        let namespaces = JOINED_NAMESPACES
            .iter()
            .map(|ns| open_high(&format!("/proc/{container}/ns/{ns}")))
            .collect::<Result<Vec<_>, _>>()?;
        let (pid_read, pid_write) = pipe()?;
        Ok(Join {
            namespaces,
            exe: open_high("/init")?,
            pid_read,
            pid_write,
        })
    }
}

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
    processes: &Processes,
    control: Arc<Mutex<impl Write + Send + 'static>>,
) -> Result<i32, String> {
    req.validate().map_err(|e| format!("exec: {e}"))?;
    let join = {
        let running = processes.lock();
        if running.contains_key(&req.process) {
            return Err(format!("process {} is already running", req.process));
        }
        if running.len() >= MAX_PROCESSES {
            return Err(format!("more than {MAX_PROCESSES} processes"));
        }
        match (req.join, running.get(&0)) {
            (true, Some(&init)) => Some(Join::open(init)?),
            (true, None) => return Err("the container is not running".into()),
            (false, None) if running.is_empty() => None,
            (false, _) => return Err("the container is already running".into()),
        }
    };
    let spec = high(&spec_file(&req)?)?;
    let mut stdio = Vec::with_capacity(3);
    for port in req.stdio_ports {
        let s = vsock::connect(HOST_CID, port, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect stdio port {port}: {e}"))?;
        stdio.push(high(&s)?);
    }
    let (err_read, err_write) = pipe()?;
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

    let flags = if join.is_some() {
        0
    } else {
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC
    };
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
        match &join {
            // SAFETY: in the child: setns, clone, dup2 and execveat on prepared, valid data;
            // never returns.
            Some(j) => unsafe { join_child(j, err_write.as_raw_fd(), &moves, &argv, &envp) },
            // SAFETY: in the child: dup2 and execve on prepared, valid data; never returns.
            None => unsafe { child(&moves, &argv, &envp) },
        }
    }
    drop((err_write, spec, stdio)); // the stage holds them now; our copies would keep them open
    let pid = match join {
        None => pid,
        Some(j) => {
            drop(j.pid_write);
            let mut status = 0;
            // SAFETY: reaping our own child (the helper); `status` is a valid int.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let mut buf = [0u8; 4];
            match File::from(j.pid_read).read_exact(&mut buf) {
                Ok(()) => i32::from_ne_bytes(buf),
                Err(_) => {
                    let mut message = Vec::new();
                    let _ = File::from(err_read)
                        .take(MAX_ERROR)
                        .read_to_end(&mut message);
                    return Err(String::from_utf8_lossy(&message).replace('\n', " "));
                }
            }
        }
    };
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
    let id = req.process;
    processes.lock().insert(id, pid);
    let processes = processes.clone();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is a valid int.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        let (code, signal) = if rc != pid {
            (Some(255), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (Some(libc::WEXITSTATUS(status)), None)
        };
        processes.lock().remove(&id);
        let msg = GuestMessage::Exited {
            process: id,
            code,
            signal,
        };
        let mut w = control.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write_frame(&mut *w, &msg);
    });
    Ok(pid)
}

/// The helper of a joining process: enters the container's namespaces, forks the stage as
/// guest-init's child, tells guest-init its pid and exits.
///
/// # Safety
/// Only to be called in the forked child, with NULL-terminated pointer arrays.
unsafe fn join_child(
    join: &Join,
    err: i32,
    moves: &[(i32, i32)],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: raw system calls on descriptors and strings prepared before the fork.
    unsafe {
        for ns in &join.namespaces {
            if libc::setns(ns.as_raw_fd(), 0) != 0 {
                let msg = b"cannot join the container's namespaces";
                libc::write(err, msg.as_ptr().cast(), msg.len());
                libc::_exit(126);
            }
        }
        let flags = libc::CLONE_PARENT | libc::SIGCHLD;
        let pid = libc::syscall(libc::SYS_clone, libc::c_long::from(flags), 0, 0, 0, 0) as i32;
        if pid == 0 {
            for &(from, to) in moves {
                if libc::dup2(from, to) < 0 {
                    libc::_exit(126);
                }
            }
            libc::syscall(
                libc::SYS_execveat,
                join.exe.as_raw_fd(),
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            let msg = b"cannot start the container stage";
            libc::write(ERROR_FD, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
        if pid > 0 {
            let bytes = pid.to_ne_bytes();
            libc::write(
                join.pid_write.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
            );
            libc::_exit(0);
        }
        let msg = b"cannot fork inside the container";
        libc::write(err, msg.as_ptr().cast(), msg.len());
        libc::_exit(126)
    }
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
