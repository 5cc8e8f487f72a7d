//! Starting the host's process: its stdin, stdout and stderr are vsock streams to the host
//! (the process reads and writes them directly: back-pressure is the socket's). A clone into
//! new pid, mount, UTS and IPC namespaces re-executes guest-init as the container stage
//! (`container`), which sets the container up and execs the process, so the process is
//! PID 1 of its pid namespace as with runc. A process for `runvm exec` joins that
//! container instead: a short-lived helper enters the container's namespaces and forks the
//! stage as guest-init's own child (`CLONE_PARENT`), from guest-init's binary opened before
//! the mount namespace changed. A failure comes back as one line over a close-on-exec pipe.
//! A waiter thread reports how each process ended.
//!
//! With a terminal, the stage makes the pty inside the container and passes the master back
//! over a socket; guest-init relays it over one vsock stream (`console`). A held process
//! (`runvm create`) stops in the stage, ready to exec, until the host releases it.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_init::protocol::{ExecSpec, GuestMessage, write_frame};

use crate::container::{CONSOLE_FD, ERROR_FD, HOLD_FD, READY, SPEC_FD, STAGE_ARG};
use crate::{cgroup, console, fdpass, vsock};

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
const JOINED_NAMESPACES: [&str; 5] = ["ipc", "uts", "cgroup", "pid", "mnt"];
/// The most processes one container may have started through runvm at a time.
pub const MAX_PROCESSES: usize = 1024;

/// The running processes, by the host's number for each.
#[derive(Clone, Default)]
pub struct Processes(Arc<Mutex<HashMap<u32, Entry>>>);

/// One running process.
struct Entry {
    /// Its guest pid.
    pid: i32,
    /// While it is held: the pipe whose byte releases it.
    hold: Option<File>,
    /// Its terminal's master.
    console: Option<Arc<OwnedFd>>,
}

impl Processes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The guest pid of process `id`, while it runs.
    pub fn pid(&self, id: u32) -> Option<i32> {
        self.lock().get(&id).map(|e| e.pid)
    }

    /// Lets held process `id` exec its program.
    pub fn release(&self, id: u32) -> Result<(), String> {
        let hold = match self.lock().get_mut(&id) {
            Some(entry) => entry.hold.take(),
            None => return Err(format!("process {id} is not running")),
        };
        let Some(mut hold) = hold else {
            return Err(format!("process {id} is not held"));
        };
        hold.write_all(b"g")
            .map_err(|e| format!("cannot release process {id}: {e}"))
    }

    /// Sets the window size of process `id`'s terminal, if it has one.
    pub fn resize(&self, id: u32, rows: u16, cols: u16) {
        if let Some(master) = self.lock().get(&id).and_then(|e| e.console.clone()) {
            console::resize(&master, rows, cols);
        }
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
pub fn start<W: Write + Send + 'static>(
    req: ExecSpec,
    processes: &Processes,
    control: Arc<Mutex<W>>,
    oom: Option<Arc<crate::oom::Watch<W>>>,
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
            (true, Some(init)) => Some(Join::open(init.pid)?),
            (true, None) => return Err("the container is not running".into()),
            (false, None) if running.is_empty() => None,
            (false, _) => return Err("the container is already running".into()),
        }
    };
    if let (false, Some(r)) = (req.join, &req.resources) {
        cgroup::apply(r)?;
    }
    let spec = high(&spec_file(&req)?)?;
    let stdio = Stdio::connect(&req)?;
    let (err_read, err_write) = pipe()?;
    // The stage passes its terminal's master back on this pair.
    let console = match req.terminal {
        true => Some(socket_pair()?),
        false => None,
    };
    // A held stage waits for a byte on this pipe.
    let hold = match req.hold {
        true => {
            let (read, write) = pipe()?;
            Some((high(&read)?, File::from(write)))
        }
        false => None,
    };
    let stage_arg = CString::new(STAGE_ARG).map_err(|e| e.to_string())?;
    let argv = [SELF.as_ptr(), stage_arg.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // Every descriptor the child moves into place, as (from, to).
    let mut moves = vec![
        (stdio.fds[0].as_raw_fd(), 0),
        (stdio.fds[1].as_raw_fd(), 1),
        (stdio.fds[2].as_raw_fd(), 2),
        (spec.as_raw_fd(), SPEC_FD),
        (err_write.as_raw_fd(), ERROR_FD),
    ];
    if let Some((_, theirs)) = &console {
        moves.push((theirs.as_raw_fd(), CONSOLE_FD));
    }
    if let Some((read, _)) = &hold {
        moves.push((read.as_raw_fd(), HOLD_FD));
    }

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
    // The stage holds them now; our copies would keep them open.
    drop((err_write, spec, stdio.fds));
    let console = console.map(|(ours, _theirs)| ours);
    let hold = hold.map(|(_read, write)| write);
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
    let master = outcome(File::from(err_read), hold.is_some()).and_then(|()| match &console {
        Some(ours) => fdpass::recv_fd_now(ours.as_raw_fd())
            .map(|m| Some(Arc::new(m)))
            .map_err(|e| format!("cannot receive the terminal: {e}")),
        None => Ok(None),
    });
    let master = master.and_then(|m| match (&m, stdio.terminal) {
        (Some(m), Some(stream)) => console::relay(m.clone(), stream)
            .map(|()| Some(m.clone()))
            .map_err(|e| format!("cannot relay the terminal: {e}")),
        _ => Ok(None),
    });
    let master = match master {
        Ok(m) => m,
        Err(message) => {
            let mut status = 0;
            // SAFETY: kill and waitpid on our own child (gone already, or held): no pointers
            // but a valid int.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(message);
        }
    };
    let id = req.process;
    let entry = Entry {
        pid,
        hold,
        console: master,
    };
    processes.lock().insert(id, entry);
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
        // A kill for the memory limit is told before the end it caused.
        if let Some(oom) = &oom {
            oom.report_new();
        }
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

/// A process's stdio as the stage gets it: three vsock streams, or with a terminal
/// /dev/null until the pty's slave replaces it, and the one stream the master is relayed on.
struct Stdio {
    fds: [OwnedFd; 3],
    terminal: Option<File>,
}

impl Stdio {
    fn connect(req: &ExecSpec) -> Result<Stdio, String> {
        let connect = |port: u32| {
            vsock::connect(HOST_CID, port, Duration::from_secs(5))
                .map_err(|e| format!("cannot connect stdio port {port}: {e}"))
        };
        if req.terminal {
            let stream = connect(req.stdio_ports[0])?;
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| format!("open /dev/null: {e}"))?;
            let null = high(&null)?;
            let fds = [high(&null)?, high(&null)?, null];
            return Ok(Stdio {
                fds,
                terminal: Some(stream),
            });
        }
        let mut fds = Vec::with_capacity(3);
        for port in req.stdio_ports {
            fds.push(high(&connect(port)?)?);
        }
        let fds = fds
            .try_into()
            .map_err(|_| "three stdio streams".to_owned())?;
        Ok(Stdio {
            fds,
            terminal: None,
        })
    }
}

/// A Unix socket pair, both ends close-on-exec at or above [`HIGH_FD`].
fn socket_pair() -> Result<(OwnedFd, OwnedFd), String> {
    let (a, b) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    Ok((high(&a)?, high(&b)?))
}

/// What the stage said on its error pipe: nothing before it exec'd (the pipe closes on
/// exec), or held, the [`READY`] byte once prepared; anything else is why it failed.
fn outcome(err: File, held: bool) -> Result<(), String> {
    let mut message = Vec::new();
    let mut err = err.take(MAX_ERROR);
    if held {
        let mut first = [0u8; 1];
        match err.read(&mut first) {
            Ok(1) if first[0] == READY => return Ok(()),
            Ok(1) => message.push(first[0]),
            _ => return Err("the container stage ended before it was ready".into()),
        }
    }
    let _ = err.read_to_end(&mut message);
    if message.is_empty() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&message).replace('\n', " "))
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
        enter_cgroup();
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

/// Moves the calling process into the container's cgroup; a guest without one leaves it
/// where it is.
///
/// # Safety
/// Async-signal-safe: only open, write and close, for a forked child.
unsafe fn enter_cgroup() {
    // SAFETY: a NUL-terminated path and a one-byte buffer, both static.
    unsafe {
        let fd = libc::open(cgroup::PROCS.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, c"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
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
        enter_cgroup();
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
