//! Per-request credentials: files the guest creates are owned by the request's uid and gid.
//!
//! For the duration of a creating call the calling thread's effective uid/gid become the
//! request's, through the raw `setresuid`/`setresgid` system calls, which act on the calling
//! thread only (the libc wrappers would change every thread of the VMM). They are restored when
//! the guard drops: uid first (back to root, which regains the right to set the gid), then gid.

use std::io;

/// The calling thread's effective ids while it lives; restores the previous ones on drop.
#[derive(Debug)]
pub(super) struct ScopedCreds {
    old_uid: Option<libc::uid_t>,
    old_gid: Option<libc::gid_t>,
}

/// `setresuid(-1, id, -1)` or `setresgid(-1, id, -1)` on this thread only.
fn set_effective(syscall: libc::c_long, id: u32) -> io::Result<()> {
    let keep: libc::c_long = -1;
    // SAFETY: the raw system call takes three integers and touches no memory.
    let ret = unsafe { libc::syscall(syscall, keep, libc::c_long::from(id), keep) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ScopedCreds {
    /// Switches this thread to effective `uid` and `gid` (gid first: after the uid the thread
    /// may no longer change it). Ids already in effect are left alone.
    pub(super) fn switch(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<Self> {
        // SAFETY: these calls cannot fail and touch no memory.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut creds = ScopedCreds {
            old_uid: None,
            old_gid: None,
        };
        if gid != egid {
            set_effective(libc::SYS_setresgid, gid)?;
            creds.old_gid = Some(egid);
        }
        if uid != euid {
            // On failure the drop puts the gid back.
            set_effective(libc::SYS_setresuid, uid)?;
            creds.old_uid = Some(euid);
        }
        Ok(creds)
    }
}

impl Drop for ScopedCreds {
    fn drop(&mut self) {
        for (syscall, old) in [
            (libc::SYS_setresuid, self.old_uid),
            (libc::SYS_setresgid, self.old_gid),
        ] {
            if let Some(id) = old
                && let Err(err) = set_effective(syscall, id)
            {
                // Serving later requests with the guest's ids would be worse than stopping.
                eprintln!("virtio-fs: cannot restore the thread's credentials: {err}");
                std::process::abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_ids_change_nothing() {
        // SAFETY: these calls cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let creds = ScopedCreds::switch(euid, egid).unwrap();
        assert!(creds.old_uid.is_none() && creds.old_gid.is_none());
    }

    #[test]
    fn files_are_created_as_the_request_on_this_thread_only() {
        // SAFETY: cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return; // Only root can switch.
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let path = dir.path().join("owned");
        // On a thread of its own: the switch must not leak into the test harness's threads.
        let handle = std::thread::spawn(move || {
            let creds = ScopedCreds::switch(1234, 5678).unwrap();
            std::fs::write(&path, b"").unwrap();
            drop(creds);
            // SAFETY: cannot fail.
            (
                unsafe { libc::geteuid() },
                std::fs::metadata(&path).unwrap(),
            )
        });
        let (euid_after, meta) = handle.join().unwrap();
        assert_eq!(euid_after, 0);
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 1234);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 5678);
    }
}
