//! The `runvm` binary as a user and containerd call it on this host, no VM needed:
//! `--version`, `check` (text, JSON, exit status), and errors reported through `--log`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn runvm(args: &[&str], config: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runvm"));
    cmd.args(args);
    match config {
        Some(c) => cmd.env("RUNVM_CONFIG", c),
        None => cmd.env_remove("RUNVM_CONFIG"),
    };
    cmd.output().unwrap()
}

/// A config file naming a fake kernel and initramfs of the right formats.
fn fake_assets(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("vmlinux"), b"\x7fELF\x02\x01\x01").unwrap();
    std::fs::write(dir.join("initramfs.img"), b"070701").unwrap();
    let conf = dir.join("config.toml");
    std::fs::write(
        &conf,
        "kernel = \"vmlinux\"\ninitramfs = \"initramfs.img\"\n",
    )
    .unwrap();
    conf
}

#[test]
fn version_in_runcs_shape() {
    for flag in ["--version", "-v"] {
        let out = runvm(&[flag], None);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!("runvm version {}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(lines.next().unwrap(), "spec: 1.2.0");
    }
}

#[test]
fn check_judges_this_hosts_kvm_honestly() {
    let dir = tempfile::tempdir().unwrap();
    let conf = fake_assets(dir.path());
    let out = runvm(&["check", "--json"], Some(&conf));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdict = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["verdict"]
            .clone()
    };
    assert_eq!(verdict("kernel"), "ok");
    assert_eq!(verdict("initramfs"), "ok");

    let pvm = Path::new("/sys/module/kvm_pvm").exists() && Path::new("/dev/kvm").exists();
    if pvm {
        // This project's own machines: kvm_pvm must be named and must fail the check.
        assert_eq!(report["kvm"]["backend"], "pvm");
        assert_eq!(verdict("kvm"), "fail");
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(report["ok"], false);
    } else {
        // Elsewhere the exit status follows the KVM verdict (the assets are fine).
        assert_ne!(report["kvm"]["backend"], "pvm");
        let kvm_ok = verdict("kvm") != "fail";
        assert_eq!(out.status.success(), kvm_ok);
    }
}

#[test]
fn check_text_has_one_line_per_check_and_a_conclusion() {
    let dir = tempfile::tempdir().unwrap();
    let out = runvm(&["check"], Some(&dir.path().join("missing.toml")));
    // A named config file that does not exist is an error, not a silent default.
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let conf = dir.path().join("empty.toml");
    std::fs::write(&conf, "data_dir = \"nowhere\"\n").unwrap();
    let out = runvm(&["check"], Some(&conf));
    assert_eq!(out.status.code(), Some(1), "assets are missing");
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "kvm",
            "vsock",
            "tun",
            "tc",
            "vhost-net",
            "passt",
            "cgroup",
            "kernel",
            "initramfs",
            "runvm"
        ]
    );
    let kernel = text.lines().find(|l| l.starts_with("kernel")).unwrap();
    assert!(
        kernel.contains("FAIL") && kernel.contains("not installed"),
        "{kernel}"
    );
    assert!(text.ends_with("failed)\n"), "{text}");
}

#[test]
fn errors_go_to_stderr_and_to_the_json_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.json");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "kernel = [").unwrap();
    let out = runvm(
        &[
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "check",
        ],
        Some(&bad),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("runvm: invalid config file"), "{stderr}");
    let line = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .starts_with("invalid config file")
    );
}

#[test]
fn debug_boot_fails_fast_and_clearly_where_guests_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let conf = fake_assets(dir.path());
    let start = std::time::Instant::now();
    let out = runvm(&["debug", "boot", "--timeout", "5"], Some(&conf));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let pvm = Path::new("/sys/module/kvm_pvm").exists() && Path::new("/dev/kvm").exists();
    if pvm {
        // This project's machines: refused before any guest code runs.
        assert!(stderr.contains("kvm_pvm"), "{stderr}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    } else {
        // Elsewhere the fake kernel is what stops it.
        assert!(stderr.contains("kernel"), "{stderr}");
    }
}

#[test]
fn state_and_list_read_the_state_root() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let out = runvm(&["--root", r, "state", "nope"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "runvm: container nope does not exist"
    );
    let out = runvm(&["--root", r, "list"], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("ID          PID         STATUS"), "{text}");
    assert_eq!(text.lines().count(), 1);
    let out = runvm(&["--root", r, "list", "--format", "json"], None);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "[]");
    let out = runvm(&["--root", r, "state", "../x"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid container id"));
}

/// Writes the state of a container `id` whose process is `pid`.
fn fake_container(root: &Path, id: &str, pid: i32) {
    use runvm::runtime::state::{ContainerState, Status, Store};
    std::fs::create_dir_all(root.join(id)).unwrap();
    let mut state = ContainerState::creating(id, pid, Path::new("/b"), Path::new("/b/rootfs"));
    state.status = Status::Running;
    Store::new(root).save(&state).unwrap();
}

#[test]
fn kill_and_delete_follow_runc() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).trim().to_owned();

    // A container whose process is gone: kill refuses, delete cleans up.
    fake_container(root.path(), "gone", 1 << 30);
    let out = runvm(&["--root", r, "kill", "gone", "KILL"], None);
    assert_eq!(
        (out.status.code(), stderr(&out).as_str()),
        (Some(1), "runvm: container not running")
    );
    assert!(
        runvm(&["--root", r, "delete", "gone"], None)
            .status
            .success()
    );
    assert!(!root.path().join("gone").exists());

    // A live one (a sleep standing for its process).
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    fake_container(root.path(), "live", sleeper.id() as i32);
    let out = runvm(&["--root", r, "delete", "live"], None);
    assert_eq!(
        stderr(&out),
        "runvm: cannot delete container live that is not stopped: running"
    );
    let out = runvm(&["--root", r, "kill", "live", "NOPE"], None);
    assert_eq!(stderr(&out), "runvm: unknown signal \"NOPE\"");
    let out = runvm(&["--root", r, "kill", "live", "USR1"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = sleeper.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGUSR1)
    );

    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    fake_container(root.path(), "forced", sleeper.id() as i32);
    // The zombie would keep the pid: reap it while delete waits for it to go.
    let reaper = std::thread::spawn(move || sleeper.wait().unwrap());
    let out = runvm(&["--root", r, "delete", "--force", "forced"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&reaper.join().unwrap()),
        Some(libc::SIGKILL)
    );
    assert!(!root.path().join("forced").exists());

    // Nothing to delete: an error, unless forced.
    assert_eq!(
        runvm(&["--root", r, "delete", "nope"], None).status.code(),
        Some(1)
    );
    assert!(
        runvm(&["--root", r, "delete", "-f", "nope"], None)
            .status
            .success()
    );
}

#[test]
fn a_reader_that_goes_away_ends_a_printing_verb_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe just returned these descriptors; nothing else owns them.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The reader is gone before runvm writes a byte: `runvm features | true`, every time.
    drop(read_end);
    let out = Command::new(env!("CARGO_BIN_EXE_runvm"))
        .args(["features"])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}

#[test]
fn spec_writes_config_json_and_refuses_rootless() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().to_str().unwrap();
    let out = runvm(&["spec", "--bundle", bundle], None);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");
    let other = tempfile::tempdir().unwrap();
    for args in [
        &["spec", "--rootless", "-b"][..],
        &["--rootless", "true", "spec", "-b"][..],
    ] {
        let mut args = args.to_vec();
        args.push(other.path().to_str().unwrap());
        let out = runvm(&args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim(),
            "runvm: rootless containers are not supported",
            "{args:?}"
        );
        assert!(!other.path().join("config.json").exists());
    }
}
