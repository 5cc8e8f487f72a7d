//! The container stage: guest-init re-executed (`/init --container-stage`) as PID 1 of the
//! container's new pid, mount, UTS and IPC namespaces. A fresh single-threaded process can
//! use the whole standard library while it sets the container up, which a child forked
//! from the multi-threaded guest-init could not.
//!
//! Run for `runvm exec` ([`ExecSpec::join`]), it starts inside the running container's
//! namespaces and applies only the process's own settings.
//!
//! Its stdio are already the process's vsock streams. It reads the [`ExecSpec`] from
//! [`SPEC_FD`], sets everything up in runc's order and execs the process; on any failure
//! it writes one line to [`ERROR_FD`] (close-on-exec, so a successful exec closes it with
//! nothing written) and exits. Held ([`ExecSpec::hold`]), it writes [`READY`] there once
//! everything but the exec is done and waits for guest-init's byte on [`HOLD_FD`].

mod console;
mod devices;
mod exec;
mod identity;
mod rootfs;
mod sys;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use guest_init::protocol::MAX_FRAME;
use guest_init::spec::ExecSpec;

/// The argument that selects the container stage.
pub const STAGE_ARG: &str = "--container-stage";
/// Descriptor the stage reads its spec (JSON) from.
pub const SPEC_FD: i32 = 3;
/// Descriptor the stage reports a failure on.
pub const ERROR_FD: i32 = 4;
/// Descriptor the stage sends its terminal's master on (with a terminal).
pub const CONSOLE_FD: i32 = 5;
/// Descriptor a held stage waits on for its release.
pub const HOLD_FD: i32 = 6;
/// What a held stage writes on [`ERROR_FD`] once it is ready to exec.
pub const READY: u8 = 0;

/// Runs the stage; never returns.
pub fn stage() -> ! {
    // The process must inherit none of them.
    for fd in [ERROR_FD, CONSOLE_FD, HOLD_FD] {
        // SAFETY: fcntl on a descriptor number; harmless if it is not open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let message = match set_up_and_exec() {
        Err(message) | Ok(message) => message,
    };
    // SAFETY: ERROR_FD was handed to us for this; File takes it over for the write.
    let mut err = unsafe { File::from_raw_fd(ERROR_FD) };
    let _ = err.write_all(message.as_bytes());
    // SAFETY: ends the stage without running exit handlers.
    unsafe { libc::_exit(127) }
}

fn read_spec() -> Result<ExecSpec, String> {
    // SAFETY: SPEC_FD was handed to us for this; File takes it over and closes it.
    let file = unsafe { File::from_raw_fd(SPEC_FD) };
    let mut body = Vec::new();
    file.take(MAX_FRAME as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("read the container spec: {e}"))?;
    if body.len() > MAX_FRAME {
        return Err("container spec too large".into());
    }
    let spec: ExecSpec =
        serde_json::from_slice(&body).map_err(|e| format!("bad container spec: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

/// Default dispositions and an empty mask: guest-init's own settings (Rust ignores SIGPIPE)
/// must not leak into the process, as ignored signals survive exec.
fn reset_signals() {
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: installing the default disposition takes no pointers.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: `none` is initialised by sigemptyset before use.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

fn write_sysctl(key: &str, value: &str) -> Result<(), String> {
    if key
        .split('.')
        .any(|p| p.is_empty() || p == ".." || p.contains('/'))
    {
        return Err(format!("invalid sysctl {key}"));
    }
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| format!("write sysctl {key}: {e}"))
}

/// Everything, in order; returns only with the reason it stopped.
fn set_up_and_exec() -> Result<String, String> {
    let spec = read_spec()?;
    reset_signals();
    // SAFETY: no arguments; a new session for the container's process.
    unsafe { libc::setsid() };
    // SAFETY: umask cannot fail; nodes and mount points get exactly the modes asked.
    unsafe { libc::umask(0) };
    // A joining process is already in the container's namespaces and root (guest-init's
    // helper entered them before it forked us); the container is set up.
    let last_cap = identity::last_cap();
    // Always written: guest-init's own -1000 (never chosen by the OOM killer) must not pass
    // to the container, whose processes the killer must be able to end at their limit.
    let adj = spec.oom_score_adj.unwrap_or(0);
    std::fs::write("/proc/self/oom_score_adj", adj.to_string())
        .map_err(|e| format!("set oom_score_adj: {e}"))?;
    // The process is in the container's cgroup already (entered before this stage ran).
    if spec.cgroup_ns && !spec.join {
        // SAFETY: unshare takes only flags.
        if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
            return Err(sys::last_error("unshare", "the cgroup namespace"));
        }
    }
    let pty = if spec.join {
        spec.terminal
            .then(|| console::open(spec.console_size))
            .transpose()?
    } else {
        set_up_container(&spec)?
    };
    if let Some(pty) = pty {
        pty.attach(spec.user.uid)?;
    }
    identity::set_rlimits(&spec.rlimits)?;
    let env = exec::with_home(spec.env.clone(), spec.user.uid);
    if let Some(s) = spec.seccomp.as_ref().filter(|_| !spec.no_new_privileges) {
        // Without no_new_privs the filter needs CAP_SYS_ADMIN: install it while root.
        identity::install_seccomp(s)?;
    }
    identity::switch_user(&spec.user, spec.capabilities.as_ref(), last_cap)?;
    identity::set_umask(spec.user.umask);
    if spec.hold {
        exec::check_found(&spec.args, &env, &spec.cwd)?;
        wait_for_release()?;
    }
    if spec.no_new_privileges {
        identity::no_new_privileges()?;
        if let Some(s) = &spec.seccomp {
            identity::install_seccomp(s)?;
        }
    }
    Ok(exec::exec(&spec.args, &env, &spec.cwd))
}

/// Tells guest-init the process is ready and waits for its release; from then on a
/// failure is told on the process's stderr, as nobody waits on [`ERROR_FD`] any more.
fn wait_for_release() -> Result<(), String> {
    // SAFETY: File takes over ERROR_FD only for this write and gives it back unclosed.
    let mut err = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(ERROR_FD) });
    err.write_all(&[READY])
        .map_err(|e| format!("cannot report ready: {e}"))?;
    // SAFETY: File takes over HOLD_FD, ours for this one read, and closes it.
    let mut hold = unsafe { File::from_raw_fd(HOLD_FD) };
    let mut byte = [0u8; 1];
    if !matches!(hold.read(&mut byte), Ok(1)) {
        // guest-init is gone: nobody will release us.
        // SAFETY: ends the stage without running exit handlers.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: dup3 of stderr onto ERROR_FD, close-on-exec like the pipe it replaces.
    unsafe { libc::dup3(2, ERROR_FD, libc::O_CLOEXEC) };
    Ok(())
}

/// The container's namespaces' contents, in runc's order: sysctls, hostname, the root and
/// its mounts, devices, masked and read-only paths, the working directory, then the
/// terminal (returned for the process to take) before the root is sealed.
fn set_up_container(spec: &ExecSpec) -> Result<Option<console::Pty>, String> {
    // While the guest's /proc and the share are still reachable.
    let binds = rootfs::open_bind_sources(&spec.mounts)?;
    for (key, value) in &spec.sysctl {
        write_sysctl(key, value)?;
    }
    if let Some(h) = &spec.hostname {
        // SAFETY: `h` is valid for `h.len()` bytes.
        if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
            return Err(sys::last_error("sethostname", h));
        }
    }
    rootfs::enter(&spec.root)?;
    rootfs::mount_all(&spec.mounts, binds)?;
    devices::populate(&spec.devices)?;
    rootfs::readonly_paths(&spec.readonly_paths)?;
    rootfs::mask_paths(&spec.masked_paths)?;
    exec::make_cwd(&spec.cwd)?;
    let pty = spec
        .terminal
        .then(|| console::open(spec.console_size))
        .transpose()?;
    if let Some(pty) = &pty {
        pty.mount_console()?;
    }
    rootfs::finish_root(spec)?;
    Ok(pty)
}
