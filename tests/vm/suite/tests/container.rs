//! The container set-up of guest-init, asserted from inside the container: what a docker-like
//! spec asks (user, groups, capabilities, seccomp, rlimits, sysctl, read-only root, masked and
//! read-only paths, devices, bind mounts) is what the process finds.

#![allow(clippy::unwrap_used)]

use runvm_vm_tests::{
    busybox_bundle, edit_config, guest_image, key_values as values, require_real_kvm, run_bundle,
};

const PATH: &str = "PATH=/bin";

/// What the script reports about itself, one `key=value` per line.
const PROBE: &str = r#"
st() { grep "^$1:" /proc/self/status | tr -s ' \t' ' ' | cut -d' ' -f2-; }
echo "uid=$(id -u) gid=$(id -g)" | tr ' ' '\n'
echo "groups=$(id -G)"
echo "pid=$$"
echo "cwd=$(pwd)"
echo "home=$HOME"
echo "hostname=$(hostname)"
echo "capeff=$(st CapEff)"
echo "capprm=$(st CapPrm)"
echo "capbnd=$(st CapBnd)"
echo "nnp=$(st NoNewPrivs)"
echo "seccomp=$(st Seccomp)"
echo "umask=$(umask)"
echo "nofile=$(ulimit -n) $(ulimit -Hn)"
echo "shmmax=$(cat /proc/sys/kernel/shmmax)"
echo "oom=$(cat /proc/self/oom_score_adj)"
grep -q ' / ro,' /proc/self/mountinfo && echo "root=ro"
grep -q ' /proc/kmsg ' /proc/self/mountinfo && echo "kmsg=masked"
grep -q ' /sys/firmware ro,' /proc/self/mountinfo && [ -z "$(ls -A /sys/firmware)" ] && echo "firmware=masked"
grep -q ' /proc/sys ro,' /proc/self/mountinfo && echo "procsys=ro"
mkdir /dev/shm/x 2>/dev/null && echo "mkdir=ok" || echo "mkdir=denied:$(mkdir /dev/shm/x 2>&1 | grep -o 'Function not implemented')"
[ -c /dev/null ] && [ -c /dev/urandom ] && [ -L /dev/fd ] && echo "devices=ok"
[ -c /dev/custom0 ] && echo "custom=$(stat -c '%t:%T %a %u' /dev/custom0)"
echo "hostfile=$(cat /etc/hostfile)"
echo changed > /etc/hostfile 2>/dev/null && echo "hostfile_write=yes" || echo "hostfile_write=no"
echo from-guest > /data/out && echo "datawrite=yes"
echo "env=$FOO"
"#;

#[test]
fn a_docker_like_spec_is_what_the_process_finds() {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", PROBE],
        &[PATH, "FOO=bar"],
        "/work/here",
    );
    // Host side of the bind mounts: a file (read-only in the spec), a directory (writable).
    std::fs::write(dir.path().join("hostfile"), "from-host\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::create_dir_all(bundle.join("rootfs/etc")).unwrap();
    std::fs::write(
        bundle.join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    // CAP_CHOWN (0) and CAP_NET_BIND_SERVICE (10).
    let caps = serde_json::json!(["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]);
    let hostfile = dir.path().join("hostfile");
    edit_config(&bundle, |c| {
        c["root"]["readonly"] = true.into();
        c["process"]["user"] = serde_json::json!({
            "uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63
        });
        c["process"]["noNewPrivileges"] = true.into();
        c["process"]["oomScoreAdj"] = 100.into();
        c["process"]["rlimits"] =
            serde_json::json!([{ "type": "RLIMIT_NOFILE", "soft": 123, "hard": 456 }]);
        c["process"]["capabilities"] = serde_json::json!({
            "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps,
            // A non-root process keeps capabilities across exec only through the ambient
            // set (the kernel's rule, the same under runc).
            "ambient": caps
        });
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(serde_json::json!({
            "destination": "/etc/hostfile", "type": "bind", "source": hostfile,
            "options": ["rbind", "ro", "rprivate"]
        }));
        mounts.push(serde_json::json!({
            "destination": "/data", "type": "bind", "source": data, "options": ["rbind"]
        }));
        c["linux"] = serde_json::json!({
            "sysctl": { "kernel.shmmax": "123456" },
            "maskedPaths": ["/proc/kmsg", "/sys/firmware", "/proc/nonexistent"],
            "readonlyPaths": ["/proc/sys"],
            "devices": [{ "path": "/dev/custom0", "type": "c", "major": 1, "minor": 3,
                          "fileMode": 384, "uid": 1000, "gid": 1000 }],
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                               "errnoRet": 38 }]
            }
        });
    });
    let (code, out, err) = run_bundle(dir.path());
    assert_eq!(code, Some(0), "{err}\n{out}");
    let v = values(&out);
    let expect = [
        ("uid", "1000"),
        ("gid", "1000"),
        ("groups", "1000 10 20"),
        ("pid", "1"),
        ("cwd", "/work/here"),
        ("home", "/home/app"),
        ("hostname", "runvm-test"),
        ("capeff", "0000000000000401"),
        ("capprm", "0000000000000401"),
        ("capbnd", "0000000000000401"),
        ("nnp", "1"),
        ("seccomp", "2"),
        ("umask", "0077"),
        ("nofile", "123 456"),
        ("shmmax", "123456"),
        ("oom", "100"),
        ("root", "ro"),
        ("kmsg", "masked"),
        ("firmware", "masked"),
        ("procsys", "ro"),
        ("mkdir", "denied:Function not implemented"),
        ("devices", "ok"),
        ("custom", "1:3 600 1000"),
        ("hostfile", "from-host"),
        ("hostfile_write", "no"),
        ("datawrite", "yes"),
        ("env", "bar"),
    ];
    for (k, want) in expect {
        assert_eq!(
            v.get(k).map(String::as_str),
            Some(want),
            "{k}; whole output:\n{out}\nstderr: {err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(data.join("out")).unwrap(),
        "from-guest\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hostfile")).unwrap(),
        "from-host\n"
    );
}

#[test]
fn ambient_capabilities_not_inheritable_are_a_warning_as_in_runc() {
    // `runc spec`'s own capabilities: ambient ones but no inheritable set. The kernel
    // refuses to raise them; runc warns and runs the process without them.
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", "grep -E '^Cap(Amb|Eff):' /proc/self/status"],
        &[PATH],
        "/",
    );
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    edit_config(&bundle, |c| {
        c["process"]["capabilities"] = serde_json::json!({
            "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
        });
    });
    let (code, out, err) = run_bundle(dir.path());
    assert_eq!(code, Some(0), "{err}\n{out}");
    assert!(
        err.contains("can't raise ambient capability 5: Operation not permitted"),
        "{err}"
    );
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    assert_eq!(
        values_of_status(&out),
        [
            ("CapEff", "0000000020000420"),
            ("CapAmb", "0000000000000000")
        ]
    );
}

fn values_of_status(out: &str) -> Vec<(&str, &str)> {
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect()
}

#[test]
fn the_root_is_the_hosts_and_links_do_not_leave_it() {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let script = "echo written > /from-guest; \
                  cat /escape 2>&1 | head -c 200; echo; \
                  cat /../../../etc/os-release 2>&1 | head -c 200; echo; \
                  ls /.. | tr '\\n' ' '";
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", script],
        &[PATH],
        "/",
    );
    // An absolute link to a host file: the guest resolves it inside the container.
    std::os::unix::fs::symlink("/etc/os-release", bundle.join("rootfs/escape")).unwrap();
    let (code, out, err) = run_bundle(dir.path());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/from-guest")).unwrap(),
        "written\n"
    );
    let host_os = std::fs::read_to_string("/etc/os-release").unwrap();
    let first_host_line = host_os.lines().next().unwrap();
    assert!(!out.contains(first_host_line), "a host file leaked:\n{out}");
    assert!(out.contains("No such file or directory"), "{out}");
    // `/..` is `/`: the rootfs's own entries.
    assert!(out.contains("bin") && out.contains("escape"), "{out}");
}

#[test]
fn a_spec_the_guest_cannot_apply_fails_in_one_line_and_leaves_nothing() {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &[PATH], "/");
    edit_config(&bundle, |c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({ "destination": "/x", "type": "nosuchfs", "source": "x" }));
    });
    let (code, _, err) = run_bundle(dir.path());
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("mount /x") && err.contains("nosuchfs"),
        "{err}"
    );
}

/// Runs a spec docker or podman really wrote (tests/fixtures), with our busybox root, `script`
/// as the process and every bind source replaced by a temporary file or directory.
fn run_captured_spec(
    fixture: &str,
    script: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (Option<i32>, String, String) {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &[PATH], "/");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(fixture);
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    spec["root"]["path"] = bundle.join("rootfs").to_str().unwrap().into();
    spec["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    spec["process"]["terminal"] = false.into();
    for (n, m) in spec["mounts"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        let options = m["options"].to_string();
        if m["type"] == "bind" || options.contains("\"bind\"") || options.contains("\"rbind\"") {
            let source = dir.path().join(format!("bind-{n}"));
            if m["destination"] == "/dev/shm" {
                std::fs::create_dir(&source).unwrap();
            } else {
                std::fs::write(&source, format!("bind {n}\n")).unwrap();
            }
            m["source"] = source.to_str().unwrap().into();
        }
    }
    // Docker's prestart hook is its daemon's libnetwork-setkey, which reads the state and
    // tells the daemon the sandbox's pid: here a stand-in that must read a state naming it.
    if let Some(hooks) = spec["hooks"]["prestart"].as_array_mut() {
        for hook in hooks {
            hook["path"] = "/bin/sh".into();
            hook["args"] = serde_json::json!([
                "libnetwork-setkey",
                "-c",
                "grep -q '\"status\":\"creating\"'"
            ]);
        }
    }
    // Podman makes the container's network namespace before it calls the runtime and names
    // it in the spec: so does this test, under a name of its own.
    let netns = format!("runvm-test-{}-{fixture}", std::process::id());
    let mut made_netns = false;
    for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" && ns.get("path").is_some() {
            let made = std::process::Command::new("ip")
                .args(["netns", "add", &netns])
                .status()
                .unwrap();
            assert!(made.success(), "ip netns add {netns}");
            made_netns = true;
            ns["path"] = format!("/run/netns/{netns}").into();
        }
    }
    edit(&mut spec);
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let result = run_bundle(dir.path());
    if made_netns {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &netns])
            .status();
    }
    result
}

/// Docker's default capabilities, as /proc/self/status shows them.
const DOCKER_CAPS: &str = "00000000a80425fb";

#[test]
fn dockers_own_spec_with_its_seccomp_profile_runs() {
    let script = r#"
st() { grep "^$1:" /proc/self/status | tr -s ' \t' ' ' | cut -d' ' -f2-; }
echo "seccomp=$(st Seccomp)"
echo "capeff=$(st CapEff)"
echo "forked=$(echo piped | cat)"
echo "hostname_file=$(cat /etc/hostname)"
grep -q ' /sys/fs/cgroup ro,' /proc/self/mountinfo && echo "cgroup=ro"
grep -q ' /sys/firmware ro,' /proc/self/mountinfo && echo "masked=yes"
mkdir /dev/shm/d && echo "shm=ok"
echo "timer_list_bytes=$(wc -c < /proc/timer_list)"
echo "rootwrite=$(touch /new-file 2>&1 | grep -o 'Read-only file system')"
"#;
    // As `docker run --read-only` asks.
    let (code, out, err) = run_captured_spec("docker-run-config.json", script, |spec| {
        spec["root"]["readonly"] = true.into();
    });
    assert_eq!(code, Some(0), "{err}\n{out}");
    let v = values(&out);
    for (k, want) in [
        ("seccomp", "2"),
        ("capeff", DOCKER_CAPS),
        ("forked", "piped"),
        ("cgroup", "ro"),
        ("masked", "yes"),
        ("shm", "ok"),
        // A masked file reads as empty (/dev/null over it).
        ("timer_list_bytes", "0"),
        // Root, with every capability docker gives, cannot write a read-only root.
        ("rootwrite", "Read-only file system"),
    ] {
        assert_eq!(
            v.get(k).map(String::as_str),
            Some(want),
            "{k}:\n{out}\n{err}"
        );
    }
    assert!(v["hostname_file"].starts_with("bind "), "{out}");
}

#[test]
fn podmans_own_spec_runs() {
    let script = r#"
echo "containerenv=$(cat /run/.containerenv)"
echo x > /dev/shm/f && echo "shm=ok"
echo "nofile=$(ulimit -n)"
"#;
    let (code, out, err) = run_captured_spec("podman-run-config.json", script, |_| {});
    assert_eq!(code, Some(0), "{err}\n{out}");
    let v = values(&out);
    assert!(v["containerenv"].starts_with("bind "), "{out}");
    assert_eq!(v.get("shm").map(String::as_str), Some("ok"), "{out}\n{err}");
    assert_eq!(v.get("nofile").map(String::as_str), Some("20000"), "{out}");
}

#[test]
fn a_file_that_is_not_executable_fails_with_runcs_permission_denied() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["/data.txt"], &[PATH], "/");
    std::fs::write(bundle.join("rootfs/data.txt"), "not a program\n").unwrap();
    let (code, _, err) = run_bundle(dir.path());
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("exec: \"/data.txt\": permission denied"),
        "{err}"
    );
}
