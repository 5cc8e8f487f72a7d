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

/// Ends this process by signal `sig` (default disposition, unblocked), as the container's
/// process ended; exits 128+sig if the signal does not end a process.
pub fn die_by(sig: i32) {
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
