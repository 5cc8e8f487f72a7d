//! OCI mount options to `mount(2)` flags, the way runc reads them: flags set or cleared by
//! name, propagation types applied separately after the mount, anything else passed to the
//! file system as data. Bind mounts are recognised here (type `bind` or a `bind`/`rbind`
//! option); their sources are shared with the guest by the runtime.

/// A mount's options, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `MS_*` flags to mount with.
    pub flags: u64,
    /// Propagation changes, each one `mount(2)` call after the mount.
    pub propagation: Vec<u64>,
    /// What the file system gets as data, comma-joined.
    pub data: String,
}

/// Options that set (`true`) or clear (`false`) a flag.
const FLAGS: &[(&str, bool, u64)] = &[
    ("acl", true, libc::MS_POSIXACL),
    ("async", false, libc::MS_SYNCHRONOUS),
    ("atime", false, libc::MS_NOATIME),
    ("bind", true, libc::MS_BIND),
    ("defaults", true, 0),
    ("dev", false, libc::MS_NODEV),
    ("diratime", false, libc::MS_NODIRATIME),
    ("dirsync", true, libc::MS_DIRSYNC),
    ("exec", false, libc::MS_NOEXEC),
    ("iversion", true, libc::MS_I_VERSION),
    ("lazytime", true, libc::MS_LAZYTIME),
    ("loud", false, libc::MS_SILENT),
    ("mand", true, libc::MS_MANDLOCK),
    ("noacl", false, libc::MS_POSIXACL),
    ("noatime", true, libc::MS_NOATIME),
    ("nodev", true, libc::MS_NODEV),
    ("nodiratime", true, libc::MS_NODIRATIME),
    ("noexec", true, libc::MS_NOEXEC),
    ("noiversion", false, libc::MS_I_VERSION),
    ("nolazytime", false, libc::MS_LAZYTIME),
    ("nomand", false, libc::MS_MANDLOCK),
    ("norelatime", false, libc::MS_RELATIME),
    ("nostrictatime", false, libc::MS_STRICTATIME),
    ("nosuid", true, libc::MS_NOSUID),
    ("rbind", true, libc::MS_BIND | libc::MS_REC),
    ("relatime", true, libc::MS_RELATIME),
    ("remount", true, libc::MS_REMOUNT),
    ("ro", true, libc::MS_RDONLY),
    ("rw", false, libc::MS_RDONLY),
    ("silent", true, libc::MS_SILENT),
    ("strictatime", true, libc::MS_STRICTATIME),
    ("suid", false, libc::MS_NOSUID),
    ("sync", true, libc::MS_SYNCHRONOUS),
];

/// runc's own extensions that mean nothing to a guest kernel mount.
const IGNORED: &[&str] = &["tmpcopyup", "notmpcopyup", "nosymfollow", "symfollow"];

/// Every option name runvm understands (for `runvm features`).
pub fn option_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = FLAGS.iter().map(|(n, ..)| *n).collect();
    for p in ["private", "shared", "slave", "unbindable"] {
        names.push(p);
    }
    for p in ["rprivate", "rshared", "rslave", "runbindable"] {
        names.push(p);
    }
    names.extend_from_slice(IGNORED);
    names.sort_unstable();
    names
}

/// A propagation type's flags (`rprivate` = `MS_PRIVATE|MS_REC`...).
pub fn propagation(name: &str) -> Option<u64> {
    let (rec, base) = match name.strip_prefix('r') {
        Some(b) if b != "o" && b != "w" && b != "bind" => (libc::MS_REC, b),
        _ => (0, name),
    };
    let flag = match base {
        "private" => libc::MS_PRIVATE,
        "shared" => libc::MS_SHARED,
        "slave" => libc::MS_SLAVE,
        "unbindable" => libc::MS_UNBINDABLE,
        _ => return None,
    };
    Some(flag | rec)
}

/// Parses `options` in order (later options win).
pub fn parse(options: &[String]) -> Options {
    let mut out = Options::default();
    let mut data = Vec::new();
    for o in options {
        if let Some(&(_, set, flag)) = FLAGS.iter().find(|(n, ..)| *n == o) {
            if set {
                out.flags |= flag;
            } else {
                out.flags &= !flag;
            }
        } else if let Some(p) = propagation(o) {
            out.propagation.push(p);
        } else if !IGNORED.contains(&o.as_str()) {
            data.push(o.as_str());
        }
    }
    out.data = data.join(",");
    out
}

/// Whether a mount of type `fstype` with `options` is a bind mount.
pub fn is_bind(fstype: Option<&str>, options: &[String]) -> bool {
    fstype == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dockers_devpts_options() {
        let o = parse(&opts(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]));
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC);
        assert_eq!(o.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
        assert!(o.propagation.is_empty());
    }

    #[test]
    fn later_options_win_and_propagation_is_separate() {
        let o = parse(&opts(&["rbind", "ro", "rw", "rprivate", "tmpcopyup"]));
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_REC);
        assert_eq!(o.propagation, [libc::MS_PRIVATE | libc::MS_REC]);
        assert_eq!(o.data, "");
        assert_eq!(propagation("slave"), Some(libc::MS_SLAVE));
        assert_eq!(propagation("ro"), None);
    }

    #[test]
    fn binds_are_recognised_by_type_or_option() {
        assert!(is_bind(Some("bind"), &[]));
        assert!(is_bind(None, &opts(&["rbind", "ro"])));
        assert!(!is_bind(Some("tmpfs"), &opts(&["nosuid"])));
    }
}
