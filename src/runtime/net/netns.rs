//! The container's network namespace on the host: the container's host process (the
//! sandbox, or `runvm run`) joins `linux.namespaces[network].path` when the spec gives one,
//! or unshares a new network namespace when it asks for one without a path, as runc's init
//! does. Hooks and engines find it through the host pid (`/proc/<pid>/ns/net`); docker's
//! libnetwork moves the container's veth there. A spec without a network namespace keeps
//! the host's. The guest's own network is separate (loopback today).
//!
//! Namespaces belong to threads: call [`enter`] while the process has one thread, so every
//! thread started later (vCPUs, devices) is in it too.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Why the network namespace could not be entered, one line.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The given namespace could not be opened or joined.
    #[error("cannot join the network namespace {path}: {source}")]
    Join {
        /// The spec's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A new namespace could not be made.
    #[error("cannot create a network namespace: {0}")]
    Create(io::Error),
}

/// What the spec asks for the network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// The host's (no network namespace in the spec).
    Host,
    /// A new one.
    New,
    /// The one at this path.
    Join(PathBuf),
}

/// Reads the spec's choice.
pub fn wanted(spec: &Spec) -> Network {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let Some(ns) = namespaces
        .into_iter()
        .flatten()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
    else {
        return Network::Host;
    };
    match ns.path() {
        Some(p) if !p.as_os_str().is_empty() => Network::Join(p.clone()),
        _ => Network::New,
    }
}

/// The host's network namespace: PID 1's.
const HOST_NETNS: &str = "/proc/1/ns/net";

/// Whether the container shares the host's network: no namespace of its own in the spec,
/// or the path of the host's own namespace, which docker gives for `--network host` (its
/// "default" sandbox, `/var/run/docker/netns/default`). Its interfaces are the host's: they
/// must never be wired to a VM.
pub fn shares_host(spec: &Spec) -> bool {
    match wanted(spec) {
        Network::Host => true,
        Network::New => false,
        Network::Join(path) => same_namespace(&path, std::path::Path::new(HOST_NETNS)),
    }
}

/// Whether the namespace files `a` and `b` name the same namespace (false if either
/// cannot be read).
fn same_namespace(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Moves the calling (single-threaded) process into the network namespace `spec` asks for.
pub fn enter(spec: &Spec) -> Result<(), NetnsError> {
    match wanted(spec) {
        Network::Host => Ok(()),
        Network::New => {
            // SAFETY: unshare takes no pointers.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Create(io::Error::last_os_error()));
            }
            Ok(())
        }
        Network::Join(path) => {
            let join = |path: &PathBuf| {
                let ns = File::open(path)?;
                // SAFETY: setns on a descriptor we hold open; CLONE_NEWNET checks its kind.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            };
            join(&path).map_err(|source| NetnsError::Join { path, source })
        }
    }
}

/// Runs `f` on a new thread that has joined the network namespace at `path` (this thread's
/// own namespace is untouched), and returns what it returned.
pub fn within<T: Send + 'static>(
    path: &std::path::Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let ns = File::open(path).map_err(|source| NetnsError::Join {
        path: path.to_owned(),
        source,
    })?;
    let joined = std::thread::spawn(move || {
        // SAFETY: setns on a descriptor we hold open; CLONE_NEWNET checks its kind. Only
        // this thread, which ends with `f`, changes namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("the thread panicked"))
    .and_then(|r| r);
    joined.map_err(|source| NetnsError::Join {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: serde_json::Value) -> Spec {
        let mut v = serde_json::to_value(Spec::default()).unwrap();
        v["linux"]["namespaces"] = namespaces;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_spec_says_host_new_or_join() {
        let none = spec(serde_json::json!([{ "type": "pid" }, { "type": "mount" }]));
        assert_eq!(wanted(&none), Network::Host);
        let new = spec(serde_json::json!([{ "type": "network" }]));
        assert_eq!(wanted(&new), Network::New);
        let empty = spec(serde_json::json!([{ "type": "network", "path": "" }]));
        assert_eq!(wanted(&empty), Network::New);
        let join = spec(serde_json::json!([{ "type": "network", "path": "/run/netns/x" }]));
        assert_eq!(wanted(&join), Network::Join("/run/netns/x".into()));
    }

    #[test]
    fn the_hosts_namespace_by_path_is_the_hosts() {
        use std::path::Path;
        let this = Path::new("/proc/self/ns/net");
        assert!(same_namespace(this, this));
        assert!(!same_namespace(this, Path::new("/proc/self/ns/mnt")));
        assert!(!same_namespace(this, Path::new("/nonexistent")));
        assert!(shares_host(&spec(serde_json::json!([{ "type": "pid" }]))));
        assert!(!shares_host(&spec(
            serde_json::json!([{ "type": "network" }])
        )));
        let host = spec(serde_json::json!([{ "type": "network", "path": HOST_NETNS }]));
        // As root (where runvm runs), PID 1's namespace is readable: it is the host's.
        let readable = std::fs::metadata(HOST_NETNS).is_ok();
        assert_eq!(shares_host(&host), readable);
        let elsewhere =
            spec(serde_json::json!([{ "type": "network", "path": "/proc/self/ns/mnt" }]));
        assert!(!shares_host(&elsewhere));
    }

    #[test]
    fn joining_what_is_not_a_network_namespace_fails_in_one_line() {
        let bad = spec(serde_json::json!([{ "type": "network", "path": "/proc/self/ns/mnt" }]));
        let e = enter(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot join the network namespace /proc/self/ns/mnt: "),
            "{e}"
        );
        let missing = spec(serde_json::json!([{ "type": "network", "path": "/nonexistent" }]));
        assert!(enter(&missing).is_err());
    }
}
