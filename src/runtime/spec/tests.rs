//! The docker and podman samples translate into what the guest needs.

use super::*;

fn sample(name: &str) -> Bundle {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let spec: Spec = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Bundle {
        dir: PathBuf::from("/bundles/b1"),
        root: PathBuf::from("/bundles/b1/rootfs"),
        spec,
    }
}

fn translate(b: &Bundle) -> ExecSpec {
    let binds: Vec<String> = (0..host_binds(b).len())
        .map(|n| format!("/run/share/binds/{n}"))
        .collect();
    let process = b.spec.process().as_ref().unwrap();
    exec_spec(b, process, "/run/share/rootfs", &binds, [1, 2, 3]).unwrap()
}

#[test]
fn dockers_mounts_keep_their_order_flags_and_data() {
    let b = sample("docker-run-config.json");
    let spec = translate(&b);
    let targets: Vec<&str> = spec.mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(
        &targets[..7],
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/mqueue",
            "/dev/shm"
        ]
    );
    let devpts = &spec.mounts[2];
    assert_eq!(devpts.fstype, "devpts");
    assert_eq!(devpts.flags, libc::MS_NOSUID | libc::MS_NOEXEC);
    assert_eq!(devpts.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    assert_eq!(spec.mounts[4].fstype, "cgroup2");
    assert_ne!(spec.mounts[3].flags & libc::MS_RDONLY, 0);
    // The bind mounts point into the share, in order, with their propagation.
    let resolv = spec
        .mounts
        .iter()
        .find(|m| m.target == "/etc/resolv.conf")
        .unwrap();
    assert_eq!(resolv.source, "/run/share/binds/0");
    assert_eq!(resolv.flags, libc::MS_BIND | libc::MS_REC);
    assert_eq!(resolv.propagation, [libc::MS_PRIVATE | libc::MS_REC]);
}

#[test]
fn bind_sources_are_the_hosts_and_remember_read_only() {
    let b = sample("docker-run-limits-config.json");
    let binds = host_binds(&b);
    assert_eq!(binds.len(), 3);
    assert!(binds.iter().all(|h| h.readonly && h.source.is_absolute()));
    let mut relative = b.clone();
    let mount: oci_spec::runtime::Mount = serde_json::from_str(
        r#"{"destination":"/data","type":"bind","source":"data","options":["rbind"]}"#,
    )
    .unwrap();
    relative.spec.set_mounts(Some(vec![mount]));
    let binds = host_binds(&relative);
    assert_eq!(binds[0].source, Path::new("/bundles/b1/data"));
    assert!(!binds[0].readonly);
}

#[test]
fn capabilities_become_kernel_bits() {
    let spec = translate(&sample("docker-run-limits-config.json"));
    let caps = spec.capabilities.unwrap();
    // CAP_NET_BIND_SERVICE is capability 10.
    assert_eq!(caps.bounding, 1 << 10);
    // That sample names only a bounding set: the others are empty, as docker asked.
    assert_eq!((caps.effective, caps.permitted, caps.ambient), (0, 0, 0));
    let spec = translate(&sample("docker-run-config.json"));
    let caps = spec.capabilities.unwrap();
    assert_eq!(caps.bounding.count_ones(), 14);
    assert_ne!(caps.bounding & 1, 0, "CAP_CHOWN is bit 0");
}

#[test]
fn security_settings_carry_over() {
    let spec = translate(&sample("docker-run-config.json"));
    assert!(spec.masked_paths.iter().any(|p| p == "/proc/kcore"));
    assert!(spec.readonly_paths.iter().any(|p| p == "/proc/sys"));
    assert_eq!(spec.oom_score_adj, Some(0));
    assert!(
        spec.sysctl
            .iter()
            .any(|(k, v)| k == "net.ipv4.ping_group_range" && v == "0 2147483647")
    );
    let seccomp = spec.seccomp.unwrap();
    assert!(!seccomp.programs.is_empty());
    assert!(seccomp.programs.iter().all(|p| p.len() <= 4096));

    let spec = translate(&sample("podman-run-config.json"));
    assert_eq!(
        spec.rlimits,
        [
            Rlimit {
                resource: libc::RLIMIT_NOFILE,
                soft: 20000,
                hard: 20000
            },
            Rlimit {
                resource: libc::RLIMIT_NPROC,
                soft: 32768,
                hard: 32768
            }
        ]
    );
    spec.validate().unwrap();
}
