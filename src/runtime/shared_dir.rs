//! The per-container shared directory exported over virtio-fs: a tmpfs with the bundle's root
//! file system at `rootfs/` and each bind mount's source at `binds/<n>`, all bind-mounted
//! inside a private mount namespace of the process that runs the VM. Nothing is mounted in
//! the host's namespace, so everything vanishes with that process, however it ends.
//!
//! [`SharedDir::create`] unshares the mount namespace of the calling process: call it while
//! the process is single-threaded (before the VM's threads start), as the kernel requires.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use guest_init::mount::mount;

use crate::devices::virtio::fs::{DataCache, ShareConfig};

/// Errors assembling the shared directory.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// A system call failed.
    #[error("{what} {path}: {source}")]
    Sys {
        /// The operation.
        what: &'static str,
        /// The path it was about.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A bind mount's source does not exist.
    #[error("bind mount source {0} does not exist")]
    MissingSource(PathBuf),
    /// An annotation choosing how the share is served has a value it does not take.
    #[error("annotation {name}={value}: expected {expected}")]
    Annotation {
        /// The annotation.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
}

/// Annotation turning the share's extended attributes off (`false`): each costs the guest a
/// round trip before a file's first write and before a `chown` (its `security.capability`
/// probe), which a workload that uses none may rather save.
pub const ANNOTATION_XATTRS: &str = "runvm.fs_xattrs";

/// Annotation choosing where the guest's file locks live: `host` (the default), on the host
/// file, binding other containers and host processes as under runc, at the price of a round
/// trip per `close` (the FLUSH that releases a process's POSIX locks); `guest`, in the guest
/// kernel alone (locks bind the container's own processes only; no FLUSH).
pub const ANNOTATION_LOCKS: &str = "runvm.fs_locks";

/// Annotation turning off telling the container's inotify watchers of host edits in its bind
/// mounts (`false`): each bind source is then not watched on the host.
pub const ANNOTATION_WATCH: &str = "runvm.fs_watch";

/// One bind mount's host source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// The host path (a directory or a file).
    pub source: PathBuf,
    /// Read-only: enforced here too, so a guest kernel that ignores its own read-only
    /// mount still cannot write to the host.
    pub readonly: bool,
}

/// The entry of the shared directory where the container's root file system is.
const ROOTFS_ENTRY: &std::ffi::CStr = c"rootfs";

/// How the shared directory is served: the guest keeps the data of the container's root
/// file system cached across opens, which only it writes while the container runs (each
/// file checked at open for changes made behind its back, such as `docker cp`); bind mounts,
/// which the host and other containers may change, are read again at every open
/// (close-to-open). Names and attributes are cached for 1 s everywhere. Extended attributes
/// are served unless `annotations` turn them off ([`ANNOTATION_XATTRS`]); file locks are held
/// on the host unless they keep them in the guest ([`ANNOTATION_LOCKS`]).
pub fn share_config(
    annotations: Option<&HashMap<String, String>>,
) -> Result<ShareConfig, ShareError> {
    let choice = |name: &'static str, yes: &str, no: &str, expected: &'static str| match annotations
        .and_then(|a| a.get(name))
    {
        None => Ok(true),
        Some(value) if value.trim() == yes => Ok(true),
        Some(value) if value.trim() == no => Ok(false),
        Some(value) => Err(ShareError::Annotation {
            name,
            value: value.clone(),
            expected,
        }),
    };
    let xattrs = choice(ANNOTATION_XATTRS, "true", "false", "true or false")?;
    let host_locks = choice(ANNOTATION_LOCKS, "host", "guest", "host or guest")?;
    let watch_edits = choice(ANNOTATION_WATCH, "true", "false", "true or false")?;
    Ok(ShareConfig {
        data_cache: DataCache::KeptUnder(ROOTFS_ENTRY),
        xattrs,
        host_locks,
        watch_edits,
        ..ShareConfig::default()
    })
}

/// [`share_config`] for `share`: the guest's own changes are noted for the host-edit watch
/// only where there is a bind mount to watch (a share without binds skips that work on every
/// changing request).
pub fn share_config_for(
    share: &SharedDir,
    annotations: Option<&HashMap<String, String>>,
) -> Result<ShareConfig, ShareError> {
    let config = share_config(annotations)?;
    Ok(ShareConfig {
        watch_edits: config.watch_edits && !share.binds.is_empty(),
        ..config
    })
}

/// The assembled directory.
#[derive(Debug)]
pub struct SharedDir {
    /// Its root (the tmpfs).
    pub root: PathBuf,
    /// Where each bind source appears, relative to `root` (`binds/<n>`), in order.
    pub binds: Vec<PathBuf>,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn sys(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ShareError {
    let path = path.to_owned();
    move |source| ShareError::Sys { what, path, source }
}

impl SharedDir {
    /// Unshares the mount namespace, stops propagation to the host, mounts a tmpfs at `at`
    /// and binds `rootfs` and every source of `binds` into it.
    pub fn create(at: &Path, rootfs: &Path, binds: &[HostBind]) -> Result<SharedDir, ShareError> {
        // SAFETY: unshare takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(sys("unshare the mount namespace for", at)(
                io::Error::last_os_error(),
            ));
        }
        // Nothing mounted from here on may reach the host's namespace.
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        )
        .map_err(sys("make private", Path::new("/")))?;
        std::fs::create_dir_all(at).map_err(sys("create", at))?;
        mount(
            Some(Path::new("tmpfs")),
            at,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(sys("mount a tmpfs on", at))?;
        let root_target = at.join(std::ffi::OsStr::from_bytes(ROOTFS_ENTRY.to_bytes()));
        std::fs::create_dir(&root_target).map_err(sys("create", &root_target))?;
        mount(
            Some(rootfs),
            &root_target,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(sys("bind the root file system", rootfs))?;
        let mut placed = Vec::with_capacity(binds.len());
        for (n, HostBind { source, readonly }) in binds.iter().enumerate() {
            let meta =
                std::fs::metadata(source).map_err(|_| ShareError::MissingSource(source.clone()))?;
            let rel = PathBuf::from("binds").join(n.to_string());
            let target = at.join(&rel);
            std::fs::create_dir_all(at.join("binds")).map_err(sys("create", &at.join("binds")))?;
            if meta.is_dir() {
                std::fs::create_dir(&target).map_err(sys("create", &target))?;
            } else {
                std::fs::File::create(&target).map_err(sys("create", &target))?;
            }
            mount(
                Some(source),
                &target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(sys("bind", source))?;
            if *readonly {
                mount(
                    None,
                    &target,
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    None,
                )
                .map_err(sys("make read-only", source))?;
            }
            placed.push(rel);
        }
        Ok(SharedDir {
            root: at.to_owned(),
            binds: placed,
        })
    }
}

impl SharedDir {
    /// Unmounts the share at `at` (in this namespace) and removes the empty mount point.
    pub fn remove(at: &Path) -> io::Result<()> {
        let c = cstr(at)?;
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        std::fs::remove_dir(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_keeps_its_cache_and_xattrs_follow_the_annotation() {
        let config = share_config(None).unwrap();
        assert_eq!(config.data_cache, DataCache::KeptUnder(c"rootfs"));
        assert!(config.xattrs);
        let with = |value: &str| {
            let a = HashMap::from([(ANNOTATION_XATTRS.to_owned(), value.to_owned())]);
            share_config(Some(&a))
        };
        assert!(!with("false").unwrap().xattrs);
        assert!(with("true").unwrap().xattrs);
        let err = with("no").unwrap_err().to_string();
        assert_eq!(err, "annotation runvm.fs_xattrs=no: expected true or false");
        assert!(config.host_locks);
        let locks = |value: &str| {
            let a = HashMap::from([(ANNOTATION_LOCKS.to_owned(), value.to_owned())]);
            share_config(Some(&a))
        };
        assert!(!locks("guest").unwrap().host_locks);
        assert!(locks("host").unwrap().host_locks);
        let err = locks("local").unwrap_err().to_string();
        assert_eq!(
            err,
            "annotation runvm.fs_locks=local: expected host or guest"
        );
    }

    /// Runs `f` in a forked child (the namespace work needs a single-threaded process) and
    /// returns its exit status; `f` returns the status to exit with.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `f` and _exits; glibc keeps malloc usable after fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `status` is a valid int; `pid` is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128
        }
    }

    #[test]
    fn binds_are_visible_inside_and_gone_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs-src");
        std::fs::create_dir(&rootfs).unwrap();
        std::fs::write(rootfs.join("etc-file"), "root").unwrap();
        let bind_dir = tmp.path().join("data");
        std::fs::create_dir(&bind_dir).unwrap();
        let bind_file = tmp.path().join("resolv.conf");
        std::fs::write(&bind_file, "nameserver 192.0.2.1\n").unwrap();
        let at = tmp.path().join("share");

        let (r, a, d, f) = (
            rootfs.clone(),
            at.clone(),
            bind_dir.clone(),
            bind_file.clone(),
        );
        let code = in_child(move || {
            let binds = [
                HostBind {
                    source: d.clone(),
                    readonly: false,
                },
                HostBind {
                    source: f,
                    readonly: true,
                },
            ];
            let Ok(share) = SharedDir::create(&a, &r, &binds) else {
                return 2;
            };
            let ok = std::fs::read_to_string(a.join("rootfs/etc-file"))
                .ok()
                .as_deref()
                == Some("root")
                && std::fs::read_to_string(a.join(&share.binds[1]))
                    .ok()
                    .as_deref()
                    == Some("nameserver 192.0.2.1\n")
                && std::fs::write(a.join(&share.binds[0]).join("new"), "via share").is_ok()
                && std::fs::write(a.join(&share.binds[1]), "overwritten").is_err();
            if ok { 0 } else { 3 }
        });
        assert_eq!(code, 0);
        // The write went through to the host directory...
        assert_eq!(
            std::fs::read_to_string(bind_dir.join("new")).unwrap(),
            "via share"
        );
        // ...but no mount is left in ours: the share is an empty directory here.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(at.to_str().unwrap()), "a mount leaked");
        assert_eq!(std::fs::read_dir(&at).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_bind_source_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (at, rootfs) = (tmp.path().join("share"), tmp.path().to_owned());
        let code = in_child(move || {
            let missing = HostBind {
                source: PathBuf::from("/nonexistent/source"),
                readonly: false,
            };
            match SharedDir::create(&at, &rootfs, &[missing]) {
                Err(ShareError::MissingSource(p)) if p == Path::new("/nonexistent/source") => 0,
                _ => 1,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn host_edits_are_watched_only_with_binds() {
        let share = |binds: Vec<PathBuf>| SharedDir {
            root: PathBuf::from("/share"),
            binds,
        };
        assert!(!share_config_for(&share(vec![]), None).unwrap().watch_edits);
        assert!(
            share_config_for(&share(vec!["binds/0".into()]), None)
                .unwrap()
                .watch_edits
        );
        let off = HashMap::from([(ANNOTATION_WATCH.to_string(), "false".to_string())]);
        let config = share_config_for(&share(vec!["binds/0".into()]), Some(&off)).unwrap();
        assert!(!config.watch_edits);
    }
}
