//! Facts about the guest (boot time, kernel release) and the way out: a sync and a restart
//! through the keyboard controller (`reboot=k`), which the VMM takes as the end of the VM.

use std::ffi::CStr;
use std::process::ExitCode;

/// CLOCK_BOOTTIME in nanoseconds: time since the kernel started.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// CPUs online in the guest.
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf takes no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).unwrap_or(0)
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; zeroed is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::from("unknown");
    }
    // SAFETY: uname NUL-terminates the release field.
    unsafe { CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Flushes file systems and restarts the machine, which ends a runvm VM. Never returns:
/// PID 1 must not exit.
pub fn power_off() -> ExitCode {
    // SAFETY: sync and reboot take no pointers; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    // reboot failed (not PID 1 in the initial namespace?): wait to be killed.
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}
