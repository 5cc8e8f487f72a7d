//! Who the process is and what it may do: resource limits, user and groups, the five
//! capability sets, `no_new_privs` and the seccomp filter, in runc's order (limits first,
//! then the user switch keeping capabilities across it, then the sets themselves).

use std::io;

use guest_init::spec::{BpfInstruction, CapSets, Rlimit, Seccomp, User};

use super::sys;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const BpfInstructionC,
}

/// `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInstructionC {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// Applies every limit of `rlimits`.
pub fn set_rlimits(rlimits: &[Rlimit]) -> Result<(), String> {
    for r in rlimits {
        let limit = libc::rlimit64 {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: `limit` is a valid rlimit64; the old value is not asked for.
        let rc = unsafe {
            libc::prlimit64(
                0,
                r.resource as libc::__rlimit_resource_t,
                &limit,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "error setting rlimit type {}: {}",
                r.resource,
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`); read
/// while the guest's /proc is still reachable.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops capabilities outside the bounding set, switches to `user` (groups, gid, uid) and
/// sets the other capability sets; with no `caps`, the kernel's rules for a uid change apply
/// (root keeps everything, another user loses everything), as with runc.
pub fn switch_user(user: &User, caps: Option<&CapSets>, last_cap: u32) -> Result<(), String> {
    if let Some(c) = caps {
        for cap in 0..=last_cap.min(63) {
            if c.bounding & (1 << cap) == 0 {
                sys::prctl(
                    libc::PR_CAPBSET_DROP,
                    libc::c_ulong::from(cap),
                    "drop a bounding capability",
                )?;
            }
        }
        sys::prctl(libc::PR_SET_KEEPCAPS, 1, "keep capabilities")?;
    }
    let groups: Vec<libc::gid_t> = user.additional_gids.clone();
    // SAFETY: `groups` is a valid array of `groups.len()` gids.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(format!("setgroups: {}", io::Error::last_os_error()));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(user.gid, user.gid, user.gid) } != 0 {
        return Err(format!(
            "setgid {}: {}",
            user.gid,
            io::Error::last_os_error()
        ));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresuid(user.uid, user.uid, user.uid) } != 0 {
        return Err(format!(
            "setuid {}: {}",
            user.uid,
            io::Error::last_os_error()
        ));
    }
    if let Some(c) = caps {
        sys::prctl(libc::PR_SET_KEEPCAPS, 0, "stop keeping capabilities")?;
        set_caps(c)?;
    }
    Ok(())
}

fn set_caps(c: &CapSets) -> Result<(), String> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |set: u64, i: usize| (set >> (32 * i)) as u32;
    let data: [CapData; 2] = std::array::from_fn(|i| CapData {
        effective: word(c.effective, i),
        permitted: word(c.permitted, i),
        inheritable: word(c.inheritable, i),
    });
    // SAFETY: `header` and the two-element `data` array match the kernel's v3 layout.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(format!("capset: {}", io::Error::last_os_error()));
    }
    // SAFETY: plain integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    for cap in 0..64u32 {
        if c.ambient & (1 << cap) != 0 {
            // SAFETY: plain integer arguments.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    libc::c_ulong::from(cap),
                    0,
                    0,
                )
            };
            if rc != 0 {
                // As runc: a warning, and the process runs without it (the kernel refuses
                // an ambient capability that is not both permitted and inheritable, and
                // `runc spec` itself lists ambient ones with no inheritable set).
                eprintln!(
                    "runvm: warning: can't raise ambient capability {cap}: {}",
                    io::Error::last_os_error()
                );
            }
        }
    }
    Ok(())
}

/// Sets `no_new_privs`.
pub fn no_new_privileges() -> Result<(), String> {
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")
}

/// Installs every program of `seccomp`, in order.
pub fn install_seccomp(seccomp: &Seccomp) -> Result<(), String> {
    for program in &seccomp.programs {
        let insns: Vec<BpfInstructionC> = program
            .iter()
            .map(|&BpfInstruction { code, jt, jf, k }| BpfInstructionC { code, jt, jf, k })
            .collect();
        let prog = SockFprog {
            len: u16::try_from(insns.len()).map_err(|_| "seccomp program too long")?,
            filter: insns.as_ptr(),
        };
        // SAFETY: `prog` points at `insns`, alive for the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                seccomp.flags,
                &prog,
            )
        };
        if rc < 0 {
            return Err(format!(
                "error loading seccomp filter into kernel: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Sets the file mode creation mask (runc's default 0022 when the spec has none).
pub fn set_umask(umask: Option<u32>) {
    // SAFETY: umask takes an integer and cannot fail.
    unsafe { libc::umask(umask.unwrap_or(0o022) & 0o777) };
}
