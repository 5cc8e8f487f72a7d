//! create / start / state / kill / delete driven through the CLI as containerd-shim does:
//! this test process is a child subreaper (as the shim is), so the sandbox that `create`
//! leaves behind becomes its child and its exit status is read with waitpid.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;

use runvm_vm_tests::shim::{as_shim, assert_nothing_left, create, runvm, state_of, wait_for};
use runvm_vm_tests::{busybox_bundle, edit_config};

#[test]
fn create_start_exit_code_state_and_delete() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", "echo started; exit 42"],
        &["PATH=/bin"],
        "/",
    );
    let out_path = dir.path().join("out");
    let out = Stdio::from(std::fs::File::create(&out_path).unwrap());
    let pid = create(&root, &bundle, "c1", out);
    let state = state_of(&root, "c1");
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["pid"], pid);
    assert_eq!(
        std::fs::read_to_string(&out_path).unwrap(),
        "",
        "ran before start"
    );

    let (code, err) = runvm(&root, &["start", "c1"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    let status = wait_for(pid);
    assert!(libc::WIFEXITED(status), "{status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 42);
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "started\n");
    let state = state_of(&root, "c1");
    assert_eq!(
        (state["status"].as_str(), state["pid"].as_i64()),
        (Some("stopped"), Some(0))
    );
    let (code, err) = runvm(&root, &["start", "c1"], Stdio::null());
    assert_eq!(code, Some(1), "starting a stopped container: {err}");
    assert_eq!(runvm(&root, &["delete", "c1"], Stdio::null()).0, Some(0));
    assert_nothing_left(dir.path(), &root, "c1");
}

#[test]
fn a_created_container_killed_is_stopped_and_deleted_cleanly() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &["PATH=/bin"], "/");
    edit_config(&bundle, |c| {
        c["linux"]["cgroupsPath"] = "/runvm-test/c2".into()
    });
    let pid = create(&root, &bundle, "c2", Stdio::null());
    // The sandbox is in the spec's host cgroup, which runvm made (parent included), with
    // nothing else but the kernel threads KVM makes for its VM.
    let procs = std::fs::read_to_string("/sys/fs/cgroup/runvm-test/c2/cgroup.procs").unwrap();
    assert!(procs.lines().any(|p| p == pid.to_string()), "{procs}");
    for p in procs.lines().filter(|p| *p != pid.to_string()) {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        assert!(cmdline.is_empty(), "{p} in the cgroup: {cmdline:?}");
    }
    assert_eq!(
        runvm(&root, &["kill", "c2", "KILL"], Stdio::null()).0,
        Some(0)
    );
    let status = wait_for(pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    assert_eq!(state_of(&root, "c2")["status"], "stopped");
    assert_eq!(runvm(&root, &["delete", "c2"], Stdio::null()).0, Some(0));
    assert!(!std::path::Path::new("/sys/fs/cgroup/runvm-test").exists());
    assert_nothing_left(dir.path(), &root, "c2");

    // A bundle that cannot be loaded fails create in one line, leaving nothing.
    let (code, err) = runvm(
        &root,
        &["create", "-b", "/nonexistent", "c3"],
        Stdio::null(),
    );
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!root.join("c3").exists());

    // The guest prepares the process at create: a program that is not there fails create
    // (runc's words), and the sandbox and its VM are gone with it.
    let bundle = busybox_bundle(&dir.path().join("b4"), &["nope"], &["PATH=/bin"], "/");
    let (code, err) = runvm(
        &root,
        &["create", "-b", bundle.to_str().unwrap(), "c4"],
        Stdio::null(),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("exec: \"nope\": executable file not found in $PATH"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!root.join("c4").exists());
    assert!(!std::path::Path::new("/sys/fs/cgroup/c4").exists());

    // A host cgroup that cannot be made fails create with that reason, in one line.
    edit_config(&bundle, |c| {
        c["linux"]["cgroupsPath"] = "/cgroup.procs/x".into()
    });
    let (code, err) = runvm(
        &root,
        &["create", "-b", bundle.to_str().unwrap(), "c6"],
        Stdio::null(),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cgroup /sys/fs/cgroup/cgroup.procs/x"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!root.join("c6").exists());
    let root_text = root.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !(cmdline.contains("sandbox") && cmdline.contains(root_text)),
            "a sandbox is left: {cmdline}"
        );
    }
}

#[test]
fn a_sandbox_killed_while_creating_leaves_nothing() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &["PATH=/bin"], "/");
    // A createRuntime hook that waits as long as the sandbox lives holds create there.
    let wait = "while kill -0 $PPID 2>/dev/null; do sleep 0.2; done";
    edit_config(&bundle, |c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": [{ "path": "/bin/sh", "args": ["sh", "-c", wait] }]
        });
    });
    let create = std::process::Command::new(runvm_vm_tests::runvm_bin())
        .arg("--root")
        .arg(&root)
        .args(["create", "--bundle", bundle.to_str().unwrap(), "c5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let pid = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "create never got to its hook"
        );
        let out = std::process::Command::new(runvm_vm_tests::runvm_bin())
            .arg("--root")
            .arg(&root)
            .args(["state", "c5"])
            .output()
            .unwrap();
        if let Ok(state) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            assert_eq!(state["status"], "creating", "{state}");
            // The hook runs once the VM is up: its cgroup, share and VM all exist.
            if std::path::Path::new("/sys/fs/cgroup/c5").exists() && root.join("c5/share").exists()
            {
                std::thread::sleep(std::time::Duration::from_secs(2));
                break state["pid"].as_i64().unwrap() as i32;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = create.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the sandbox ended before"), "{err}");
    // create reaped its sandbox and removed what it left, cgroup included.
    assert_nothing_left(dir.path(), &root, "c5");
}

/// The counter the container's process keeps in its root file system (shared with the host).
fn counter(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the counter passes `above`; fails after a minute.
fn counter_passes(path: &std::path::Path, above: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = counter(path);
        if n > above {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the counter stayed at {n}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn pause_stops_a_counter_and_resume_continues_it() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /count.tmp; mv /count.tmp /count; sleep 0.1; done",
        ],
        &["PATH=/bin"],
        "/",
    );
    let count = bundle.join("rootfs/count");
    let pid = create(&root, &bundle, "p1", Stdio::null());
    assert_eq!(
        runvm(&root, &["pause", "p1"], Stdio::null()),
        (Some(1), "runvm: container not running\n".into()),
        "a created container is not paused"
    );
    assert_eq!(runvm(&root, &["start", "p1"], Stdio::null()).0, Some(0));
    let running = counter_passes(&count, 2);

    let (code, err) = runvm(&root, &["pause", "p1"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(state_of(&root, "p1")["status"], "paused");
    let paused_at = counter(&count);
    assert!(paused_at >= running);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(counter(&count), paused_at, "the counter moved while paused");
    let (code, err) = runvm(&root, &["exec", "p1", "true"], Stdio::null());
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot exec in a paused container"), "{err}");
    assert_eq!(
        runvm(&root, &["pause", "p1"], Stdio::null()).1,
        "runvm: container not running\n"
    );

    let (code, err) = runvm(&root, &["resume", "p1"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(state_of(&root, "p1")["status"], "running");
    counter_passes(&count, paused_at);
    assert_eq!(
        runvm(&root, &["resume", "p1"], Stdio::null()).1,
        "runvm: container not paused\n"
    );

    // A paused container still dies by SIGKILL and is deleted.
    assert_eq!(runvm(&root, &["pause", "p1"], Stdio::null()).0, Some(0));
    assert_eq!(
        runvm(&root, &["kill", "p1", "KILL"], Stdio::null()).0,
        Some(0)
    );
    let status = wait_for(pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    assert_eq!(state_of(&root, "p1")["status"], "stopped");
    assert_eq!(runvm(&root, &["delete", "p1"], Stdio::null()).0, Some(0));
}

/// Waits (up to a minute) for `path` to exist.
fn appears(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `runvm ps` with `args`; returns its stdout.
fn ps(root: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> String {
    let out = dir.join("ps.out");
    let file = std::fs::File::create(&out).unwrap();
    let mut all = vec!["ps"];
    all.extend_from_slice(args);
    let (code, err) = runvm(root, &all, Stdio::from(file));
    assert_eq!(code, Some(0), "{err}");
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn ps_lists_the_containers_processes_and_kill_all_reaches_each() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &[
            "sh",
            "-c",
            "sleep 1000 & sleep 1001 & touch /ready; wait; echo done > /ended",
        ],
        &["PATH=/bin"],
        "/",
    );
    let pid = create(&root, &bundle, "k1", Stdio::null());
    assert_eq!(
        runvm(&root, &["ps", "k1"], Stdio::null()).1,
        "runvm: container not running\n"
    );
    assert_eq!(runvm(&root, &["start", "k1"], Stdio::null()).0, Some(0));
    appears(&bundle.join("rootfs/ready"));

    // JSON, as docker top reads it: host pids, the container's one host process.
    let pids: Vec<i32> =
        serde_json::from_str(&ps(&root, dir.path(), &["--format", "json", "k1"])).unwrap();
    assert_eq!(pids, [pid]);
    let table = ps(&root, dir.path(), &["k1", "-ef"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("UID") && lines[0].ends_with("CMD"),
        "{table}"
    );
    for sleeper in ["sleep 1000", "sleep 1001"] {
        let row = lines.iter().find(|l| l.ends_with(sleeper)).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!((cols[0], cols[2]), ("0", "1"), "{row}");
    }

    // TERM to the init alone: PID 1 without a handler ignores it.
    assert_eq!(
        runvm(&root, &["kill", "k1", "TERM"], Stdio::null()).0,
        Some(0)
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(state_of(&root, "k1")["status"], "running");
    // TERM to every process: the sleepers die, `wait` returns, the init ends by itself.
    let (code, err) = runvm(&root, &["kill", "--all", "k1", "TERM"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    let status = wait_for(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/ended")).unwrap(),
        "done\n"
    );
    assert_eq!(runvm(&root, &["delete", "k1"], Stdio::null()).0, Some(0));
}
