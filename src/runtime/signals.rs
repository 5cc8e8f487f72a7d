//! Signal names and numbers as runc's `kill` takes them: `KILL`, `SIGKILL`, `kill`, or `9`.

/// The signals by name, without the `SIG` prefix.
const NAMES: &[(&str, libc::c_int)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("BUS", libc::SIGBUS),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("IO", libc::SIGIO),
    ("IOT", libc::SIGIOT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("PROF", libc::SIGPROF),
    ("PWR", libc::SIGPWR),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("STKFLT", libc::SIGSTKFLT),
    ("STOP", libc::SIGSTOP),
    ("SYS", libc::SIGSYS),
    ("TERM", libc::SIGTERM),
    ("TRAP", libc::SIGTRAP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("VTALRM", libc::SIGVTALRM),
    ("WINCH", libc::SIGWINCH),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
];

/// Parses a signal as runc does; `None` for anything unknown or out of range.
pub fn parse(text: &str) -> Option<libc::c_int> {
    if let Ok(n) = text.parse::<libc::c_int>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Whether `sig`'s default action ends a process (not stop, continue or ignore).
fn terminates(sig: i32) -> bool {
    let ignored_or_stopping = [
        libc::SIGCHLD,
        libc::SIGCONT,
        libc::SIGSTOP,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGURG,
        libc::SIGWINCH,
    ];
    (1..=64).contains(&sig) && !ignored_or_stopping.contains(&sig)
}

/// Ends this process by signal `sig` (default disposition, unblocked), as the container's
/// process ended. The number comes from the guest: one that would not end a process (a
/// stop, an ignored one, out of range) is not raised, and the caller exits with a status.
pub fn die_by(sig: i32) {
    if !terminates(sig) {
        return;
    }
    // SAFETY: resetting a disposition, unblocking and raising take no pointers but the
    // initialised signal set.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_terminating_signals_are_raised() {
        assert!(terminates(libc::SIGKILL) && terminates(libc::SIGTERM) && terminates(34));
        for sig in [
            0,
            -1,
            65,
            libc::SIGSTOP,
            libc::SIGTSTP,
            libc::SIGCHLD,
            libc::SIGWINCH,
        ] {
            assert!(!terminates(sig), "{sig}");
            die_by(sig); // returns
        }
    }

    #[test]
    fn names_and_numbers() {
        for (text, sig) in [
            ("KILL", libc::SIGKILL),
            ("SIGKILL", libc::SIGKILL),
            ("term", libc::SIGTERM),
            ("9", 9),
            ("SIGUSR1", libc::SIGUSR1),
        ] {
            assert_eq!(parse(text), Some(sig), "{text}");
        }
        for bad in ["0", "65", "NOPE", "SIG", ""] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
