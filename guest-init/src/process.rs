//! Running the host's process: its stdin, stdout and stderr are vsock streams to the host
//! (the process reads and writes them directly: back-pressure is the socket's), its root is
//! the shared root file system, its working directory is created if missing (as runc does),
//! and a failure to exec comes back in runc's words over a close-on-exec pipe. A waiter
//! thread reports how the process ended.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_init::protocol::{ExecSpec, GuestMessage, write_frame};

use crate::vsock;

/// PATH when the process's environment has none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The host's vsock context id.
const HOST_CID: u32 = 2;

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// The executables to try for `name`, in order: itself when it has a `/`, else each PATH
/// entry joined with it.
fn candidates(name: &str, env: &[String]) -> Vec<String> {
    if name.contains('/') {
        return vec![name.to_owned()];
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
        .collect()
}

/// runc's words for a failed exec of `name` (docker maps "not found" to 127 and "permission
/// denied" to 126).
fn exec_error(name: &str, errno: i32) -> String {
    let err = io::Error::from_raw_os_error(errno);
    match errno {
        libc::ENOENT if !name.contains('/') => {
            format!("exec: \"{name}\": executable file not found in $PATH")
        }
        libc::ENOENT => format!("exec: \"{name}\": stat {name}: no such file or directory"),
        libc::EACCES => format!("exec: \"{name}\": permission denied"),
        _ => format!("exec: \"{name}\": {}", err.to_string().to_lowercase()),
    }
}

/// Starts the process; returns its pid, or runc's message when it could not start. On
/// success a thread reports its end on `control`.
pub fn start(
    req: ExecSpec,
    control: Arc<Mutex<impl Write + Send + 'static>>,
) -> Result<i32, String> {
    let name = req.args.first().cloned().ok_or("exec: no command given")?;
    // Everything the child needs is built before fork: it only makes system calls.
    let argv: Vec<CString> = req
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = req
        .env
        .iter()
        .map(|e| cstring(e))
        .collect::<Result<_, _>>()?;
    let paths: Vec<CString> = candidates(&name, &req.env)
        .iter()
        .map(|p| cstring(p))
        .collect::<Result<_, _>>()?;
    let root = cstring(&req.root)?;
    let hostname = req.hostname.as_deref().map(cstring).transpose()?;
    let cwd = cstring(&req.cwd)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    let mut stdio = Vec::with_capacity(3);
    for port in req.stdio_ports {
        let s = vsock::connect(HOST_CID, port, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect stdio port {port}: {e}"))?;
        stdio.push(s);
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    let (err_read, err_write) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // A fork into new pid, mount, UTS and IPC namespaces: the process is PID 1 of its own
    // pid namespace, as with runc. (Raw clone with no new stack behaves like fork.)
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
        // SAFETY: in the child: only system calls on prepared, valid pointers; never returns.
        unsafe {
            child(&ChildPlan {
                stdio: &stdio,
                hostname: hostname.as_ref(),
                root: &root,
                cwd: &cwd,
                paths: &paths,
                argv: &argv_ptrs,
                envp: &envp_ptrs,
                err_fd: err_write.as_raw_fd(),
            })
        }
    }
    drop(err_write);
    drop(stdio); // the process holds the streams now; our copies would keep them open
    let mut errno_bytes = Vec::new();
    let _ = File::from(err_read).read_to_end(&mut errno_bytes);
    if let Ok(b) = <[u8; 4]>::try_from(errno_bytes.as_slice()) {
        let mut status = 0;
        // SAFETY: reaping our own child; `status` is a valid int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let errno = i32::from_ne_bytes(b);
        return Err(match errno {
            0 => format!("cannot create the working directory {}", req.cwd),
            -1 => format!("cannot change root to {}", req.root),
            e => exec_error(&name, e),
        });
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

/// Reports `errno` on the error pipe and exits the child.
///
/// # Safety
/// Only to be called in the forked child.
unsafe fn fail(err_fd: i32, errno: i32) -> ! {
    let b = errno.to_ne_bytes();
    // SAFETY: `b` is a valid 4-byte buffer; _exit never returns.
    unsafe {
        libc::write(err_fd, b.as_ptr().cast(), b.len());
        libc::_exit(127)
    }
}

/// Everything the child needs, prepared before the clone.
#[derive(Clone, Copy)]
struct ChildPlan<'a> {
    stdio: &'a [File],
    hostname: Option<&'a CString>,
    root: &'a CString,
    cwd: &'a CString,
    paths: &'a [CString],
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    err_fd: i32,
}

/// The cloned child: stdio, new session, root, hostname, working directory, exec.
///
/// # Safety
/// Only to be called in the forked child, with NUL-terminated pointer arrays.
unsafe fn child(plan: &ChildPlan<'_>) -> ! {
    let ChildPlan {
        stdio,
        hostname,
        root,
        cwd,
        paths,
        argv,
        envp,
        err_fd,
    } = *plan;
    // SAFETY: system calls on valid descriptors and NUL-terminated strings prepared before
    // fork; every failure ends in `fail`, which exits.
    unsafe {
        for (target, f) in stdio.iter().enumerate() {
            if libc::dup2(f.as_raw_fd(), target as i32) < 0 {
                fail(err_fd, *libc::__errno_location());
            }
        }
        libc::setsid();
        // Start the process with default signal handling and nothing blocked: guest-init's
        // own settings (Rust ignores SIGPIPE) must not leak into it, as ignored signals
        // survive exec.
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // The root file system becomes /: a private mount tree, the root bound onto itself,
        // that mount moved over / and entered. pivot_root is not possible: the guest's own
        // root is the initramfs, which cannot be pivoted away from (runc's --no-pivot does
        // this too). A process that escapes this chroot reaches only the guest's initramfs;
        // the VM is the boundary.
        let dot = c".".as_ptr();
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
            || libc::mount(
                root.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            || libc::chdir(root.as_ptr()) != 0
            || libc::mount(
                dot,
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            ) != 0
            || libc::chroot(dot) != 0
            || libc::chdir(c"/".as_ptr()) != 0
        {
            fail(err_fd, -1);
        }
        // A /proc of the new pid namespace.
        libc::mkdir(c"/proc".as_ptr(), 0o555);
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        );
        if let Some(h) = hostname {
            libc::sethostname(h.as_ptr(), h.as_bytes().len());
        }
        if libc::chdir(cwd.as_ptr()) != 0 {
            // Like runc, create a missing working directory (one level at a time).
            let bytes = cwd.as_bytes();
            let mut buf = [0u8; 4096];
            if bytes.len() >= buf.len() {
                fail(err_fd, 0);
            }
            for (i, &c) in bytes.iter().enumerate() {
                if c == b'/' && i > 0 {
                    buf[i] = 0;
                    libc::mkdir(buf.as_ptr().cast(), 0o755);
                }
                buf[i] = c;
            }
            buf[bytes.len()] = 0;
            libc::mkdir(buf.as_ptr().cast(), 0o755);
            if libc::chdir(cwd.as_ptr()) != 0 {
                fail(err_fd, 0);
            }
        }
        let mut errno = libc::ENOENT;
        for p in paths {
            libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let e = *libc::__errno_location();
            // Keep looking past missing entries; remember a permission problem.
            if e != libc::ENOENT && e != libc::ENOTDIR {
                errno = e;
            }
        }
        fail(err_fd, errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_order() {
        let env = vec!["PATH=/usr/bin:/bin/".to_owned()];
        assert_eq!(candidates("sh", &env), ["/usr/bin/sh", "/bin/sh"]);
        assert_eq!(candidates("./run", &env), ["./run"]);
        assert_eq!(candidates("ls", &[]).len(), 6);
    }

    #[test]
    fn runcs_words() {
        assert_eq!(
            exec_error("nope", libc::ENOENT),
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            exec_error("/bin/nope", libc::ENOENT),
            "exec: \"/bin/nope\": stat /bin/nope: no such file or directory"
        );
        assert_eq!(
            exec_error("/etc/passwd", libc::EACCES),
            "exec: \"/etc/passwd\": permission denied"
        );
    }
}
