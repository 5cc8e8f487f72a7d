//! Host edits in the container's bind mounts told to its inotify watchers: the share's
//! watch (`devices/virtio/fs/host_watch.rs`) finds them, the server turns each into what
//! guest-init repeats (`server/nudge.rs`), and this thread carries them over the agent, one
//! at a time (the server answers guest-init's calls for the one edit under way).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use guest_init::protocol::{Touch, TouchKind};

use crate::agent::{Agent, AgentError};
use crate::devices::virtio::fs::{HostWatch, NodeKind, Nudge, ShareFs};

/// How long guest-init may take to repeat one edit (a paused container answers none).
const TOUCH_PATIENCE: Duration = Duration::from_secs(5);

/// The message for `nudge` (paths relative to the share's root, as guest-init takes them).
pub fn touch_for(nudge: &Nudge) -> Touch {
    let path = |p: &Path| p.as_os_str().as_bytes().to_vec();
    match nudge {
        Nudge::Modify(p) => Touch::Modify { path: path(p) },
        Nudge::Create(p, kind) => Touch::Create {
            path: path(p),
            kind: match kind {
                NodeKind::File => TouchKind::File,
                NodeKind::Dir => TouchKind::Dir,
                NodeKind::Symlink => TouchKind::Symlink,
                NodeKind::Fifo => TouchKind::Fifo,
                NodeKind::Socket => TouchKind::Socket,
            },
        },
        Nudge::Delete(p, dir) => Touch::Delete {
            path: path(p),
            dir: *dir,
        },
        Nudge::Move(from, to) => Touch::Move {
            from: path(from),
            to: path(to),
        },
    }
}

/// Watches `binds` (relative to the share's root `root`) and tells the guest of their host
/// edits for as long as the sandbox runs. A watch that cannot start (no inotify instance
/// left for root: `fs.inotify.max_user_instances`) is a warning: the container runs, its
/// watchers miss host edits.
pub fn follow(
    share: Arc<ShareFs>,
    root: PathBuf,
    binds: Vec<PathBuf>,
    agent: Arc<Agent>,
    guest_share: &'static str,
) {
    if binds.is_empty() {
        return;
    }
    let watch = match HostWatch::start(Arc::clone(&share), root, binds) {
        Ok(watch) => watch,
        Err(e) => {
            eprintln!(
                "runvm: warning: host edits in bind mounts wake no watcher in the container: {e}"
            );
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("host-edits".into())
        .spawn(move || {
            loop {
                let Some(edit) = watch.next(Duration::from_secs(3600)) else {
                    continue;
                };
                let Some(nudge) = share.begin_nudge(&edit) else {
                    continue;
                };
                let told = agent.touch(guest_share, touch_for(&nudge), TOUCH_PATIENCE);
                // An edit guest-init repeated or refused (gone again in the guest) was
                // answered. One it did not answer in time (a paused guest), or whose answer
                // was not its own (a late answer of another request), is abandoned, and
                // nothing more is sent until the guest has answered everything before a ping.
                let answered = matches!(told, Ok(()) | Err(AgentError::Guest(_)));
                share.end_nudge(answered);
                match told {
                    Err(AgentError::Io(_) | AgentError::VmStopped { .. }) => return,
                    Err(AgentError::Timeout { .. } | AgentError::Protocol(_)) => {
                        // Late answers may come first (each an unexpected answer to a
                        // ping); a closed channel ends it.
                        let mut unexpected = 0;
                        while let Err(e) = agent.ping(TOUCH_PATIENCE) {
                            match e {
                                AgentError::Timeout { .. } => {}
                                AgentError::Protocol(_) if unexpected < 64 => unexpected += 1,
                                _ => return,
                            }
                        }
                        // guest-init answers in order: whatever it repeats late is done.
                        share.clear_abandoned();
                    }
                    _ => {}
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!(
            "runvm: warning: host edits in bind mounts wake no watcher in the container: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nudges_become_touches_with_share_paths() {
        let touch = touch_for(&Nudge::Move("binds/0/a".into(), "binds/0/b".into()));
        assert_eq!(
            touch,
            Touch::Move {
                from: b"binds/0/a".to_vec(),
                to: b"binds/0/b".to_vec(),
            }
        );
        let touch = touch_for(&Nudge::Create("binds/1/d".into(), NodeKind::Dir));
        assert_eq!(
            touch,
            Touch::Create {
                path: b"binds/1/d".to_vec(),
                kind: TouchKind::Dir,
            }
        );
    }
}
