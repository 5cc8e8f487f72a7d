//! The spec's seccomp profile compiled to BPF on the host with rust-vmm's seccompiler, so the
//! guest only installs programs.
//!
//! seccompiler builds filters with one action on match and one on mismatch, while an OCI
//! profile gives each rule its own action. The kernel runs every installed filter and keeps
//! the most restrictive answer, so the profile becomes a stack: one program allows every
//! syscall some rule names (under that rule's argument conditions) and answers the default
//! action otherwise; one more program per other action answers that action for its rules
//! and allows the rest. A syscall a rule names thus gets that rule's action, any other the
//! default. The program that may refuse seccomp(2) itself is installed last (a profile
//! with two such programs is refused). Syscall names unknown on x86_64 are skipped, as libseccomp does. Programs check
//! the architecture: a call from another ABI (32-bit x86) ends the process.

use std::collections::BTreeMap;
use std::str::FromStr;

use guest_init::spec::{BpfInstruction, Seccomp};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Errors compiling a profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// Something the guest cannot do.
    #[error("seccomp: {0} is not supported")]
    Unsupported(String),
    /// seccompiler refused the profile.
    #[error("seccomp: {0}")]
    Compile(String),
}

/// Syscall numbers and their rules; `None` when the syscall matches whatever its arguments.
type RuleMap = BTreeMap<i64, Option<Vec<SeccompRule>>>;

/// The errno of `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` without `errnoRet` (runc's).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(DEFAULT_ERRNO)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(DEFAULT_ERRNO)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported("SCMP_ACT_NOTIFY".into()));
        }
    })
}

/// A rule's argument conditions (all must hold).
fn rule(args: &[oci_spec::runtime::LinuxSeccompArg]) -> Result<Option<SeccompRule>, SeccompError> {
    if args.is_empty() {
        return Ok(None);
    }
    let compile = |e: seccompiler::BackendError| SeccompError::Compile(e.to_string());
    let conditions = args
        .iter()
        .map(|a| {
            let (op, value) = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
                LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    SeccompCmpOp::MaskedEq(a.value()),
                    a.value_two().unwrap_or(0),
                ),
            };
            let index = u8::try_from(a.index())
                .map_err(|_| SeccompError::Compile(format!("argument index {}", a.index())))?;
            SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(compile)
        })
        .collect::<Result<Vec<_>, _>>()?;
    SeccompRule::new(conditions).map(Some).map_err(compile)
}

/// Adds `rule` for syscall `nr`: no rule means the syscall matches whatever its arguments,
/// which absorbs any conditional rule for it.
fn add(map: &mut RuleMap, nr: i64, rule: Option<SeccompRule>) {
    let entry = map.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (entry.as_mut(), rule) {
        (Some(rules), Some(r)) => rules.push(r),
        (_, None) => *entry = None,
        (None, Some(_)) => {}
    }
}

fn program(
    rules: RuleMap,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<Vec<BpfInstruction>, SeccompError> {
    let rules = rules
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, on_match, TargetArch::x86_64)
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    let bpf: BpfProgram =
        BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile(e.to_string()))?;
    Ok(bpf
        .iter()
        .map(|i| BpfInstruction {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

fn flags(spec: &LinuxSeccomp) -> u32 {
    spec.flags().iter().flatten().fold(0, |f, flag| {
        f | match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Only meaningful with a notify listener, which runvm does not support.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        } as u32
    })
}

/// Compiles `spec` into the programs the guest installs.
pub fn compile(spec: &LinuxSeccomp) -> Result<Seccomp, SeccompError> {
    if spec.listener_path().is_some() {
        return Err(SeccompError::Unsupported(
            "a listener (listenerPath)".into(),
        ));
    }
    let default = action(spec.default_action(), spec.default_errno_ret())?;
    // All named syscalls, for the program that answers the default action.
    let mut named = BTreeMap::new();
    // Per non-default action, its syscalls.
    let mut by_action: Vec<(SeccompAction, RuleMap)> = Vec::new();
    for s in spec.syscalls().iter().flatten() {
        let act = action(s.action(), s.errno_ret())?;
        let r = rule(s.args().as_deref().unwrap_or_default())?;
        for name in s.names() {
            let Ok(sysno) = syscalls::Sysno::from_str(name) else {
                continue; // not a syscall of this architecture
            };
            let nr = i64::from(sysno.id());
            if act != default {
                add(&mut named, nr, r.clone());
                let slot = match by_action.iter().position(|(a, _)| *a == act) {
                    Some(i) => i,
                    None => {
                        by_action.push((act.clone(), BTreeMap::new()));
                        by_action.len() - 1
                    }
                };
                add(&mut by_action[slot].1, nr, r.clone());
            }
        }
    }
    // Each program with whether it may refuse seccomp(2) itself: such a program must be
    // installed last, or the programs after it could not be installed.
    let seccomp_nr = libc::SYS_seccomp;
    let mut programs: Vec<(bool, Vec<BpfInstruction>)> = Vec::with_capacity(1 + by_action.len());
    if default != SeccompAction::Allow {
        let restricts = !matches!(named.get(&seccomp_nr), Some(None));
        programs.push((restricts, program(named, default, SeccompAction::Allow)?));
    }
    for (act, rules) in by_action {
        if act != SeccompAction::Allow {
            let restricts = rules.contains_key(&seccomp_nr);
            programs.push((restricts, program(rules, SeccompAction::Allow, act)?));
        }
    }
    if programs.iter().filter(|(r, _)| *r).count() > 1 {
        return Err(SeccompError::Unsupported(
            "a profile that restricts seccomp(2) under more than one action".into(),
        ));
    }
    programs.sort_by_key(|(restricts, _)| *restricts);
    let mut programs: Vec<Vec<BpfInstruction>> = programs.into_iter().map(|(_, p)| p).collect();
    if programs.is_empty() {
        // Everything allowed: still one program, so a 32-bit call ends the process as
        // with any other profile.
        programs.push(program(
            BTreeMap::new(),
            SeccompAction::Allow,
            SeccompAction::Log,
        )?);
    }
    Ok(Seccomp {
        programs,
        flags: flags(spec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Installs `profile` (JSON) in a forked child with no_new_privs, runs `probe` there
    /// and returns what it returned (0..=255), so the real kernel judges the programs.
    fn in_filtered_child(profile: &str, probe: fn() -> i32) -> i32 {
        let spec: LinuxSeccomp = serde_json::from_str(profile).unwrap();
        let compiled = compile(&spec).unwrap();
        let programs: Vec<Vec<libc::sock_filter>> = compiled
            .programs
            .iter()
            .map(|p| {
                p.iter()
                    .map(|i| libc::sock_filter {
                        code: i.code,
                        jt: i.jt,
                        jf: i.jf,
                        k: i.k,
                    })
                    .collect()
            })
            .collect();
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: prctl and seccomp with a valid sock_fprog; _exit ends the child.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                for p in &programs {
                    let prog = libc::sock_fprog {
                        len: p.len() as u16,
                        filter: p.as_ptr().cast_mut(),
                    };
                    if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog)
                        != 0
                    {
                        libc::_exit(200);
                    }
                }
                libc::_exit(probe())
            }
        }
        let mut status = 0;
        // SAFETY: our child; `status` is a valid int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        libc::WEXITSTATUS(status)
    }

    fn errno_of(rc: libc::c_long) -> i32 {
        if rc >= 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    }

    #[test]
    fn a_denied_syscall_returns_the_rules_errno_and_others_the_default() {
        // Docker's shape: default ERRNO(EPERM), an allow list, one rule with its own errno.
        let profile = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["exit_group", "exit", "getpid", "no_such_syscall", "seccomp"],
                 "action": "SCMP_ACT_ALLOW"},
                {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }"#;
        let probe = || {
            // SAFETY: raw syscalls with no pointers (getcwd's NULL buffer is never used).
            unsafe {
                let pid_ok = libc::syscall(libc::SYS_getpid) > 0;
                let cwd = errno_of(libc::syscall(libc::SYS_getcwd, 0, 0));
                let ppid = errno_of(libc::syscall(libc::SYS_getppid));
                i32::from(pid_ok) * 100
                    + i32::from(cwd == libc::ENOSYS) * 10
                    + i32::from(ppid == libc::EPERM)
            }
        };
        assert_eq!(in_filtered_child(profile, probe), 111);
    }

    #[test]
    fn argument_conditions_decide() {
        // Allowed by default; personality denied unless its argument is 0xffffffff (query).
        let profile = r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_NE"}]}
            ]
        }"#;
        let probe = || {
            // SAFETY: personality takes an integer.
            unsafe {
                let query = errno_of(libc::syscall(libc::SYS_personality, 0xffff_ffffu64));
                let change = errno_of(libc::syscall(libc::SYS_personality, 0u64));
                i32::from(query == 0) * 10 + i32::from(change == libc::EACCES)
            }
        };
        assert_eq!(in_filtered_child(profile, probe), 11);
    }

    #[test]
    fn notify_is_refused_with_a_clear_message() {
        let spec: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        let err = compile(&spec).unwrap_err().to_string();
        assert_eq!(err, "seccomp: SCMP_ACT_NOTIFY is not supported");
    }
}
