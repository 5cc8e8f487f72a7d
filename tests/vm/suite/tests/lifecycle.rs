//! create / start / state / kill / delete driven through the CLI as containerd-shim does:
//! this test process is a child subreaper (as the shim is), so the sandbox that `create`
//! leaves behind becomes its child and its exit status is read with waitpid.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use runvm_vm_tests::{busybox_bundle, guest_image, require_real_kvm, runvm_bin};

/// Runs runvm; returns its exit code and stderr. Its stdout goes to `stdout`, its stderr to
/// a file, not a pipe: a sandbox inherits both and lives on after `create` returns.
fn runvm(root: &Path, args: &[&str], stdout: Stdio) -> (Option<i32>, String) {
    let err = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(runvm_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(err.reopen().unwrap()))
        .status()
        .unwrap();
    (status.code(), std::fs::read_to_string(err.path()).unwrap())
}

fn state_of(root: &Path, id: &str) -> serde_json::Value {
    let out = Command::new(runvm_bin())
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Makes this test process a child subreaper, as containerd-shim is.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
}

/// Waits for our (adopted) child `pid`; returns the raw wait status.
fn wait_for(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for a child of this (subreaper) process; `status` is a valid int.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

/// `runvm create` of `bundle` as `id` with a pid file; returns the sandbox's pid.
fn create(root: &Path, bundle: &Path, id: &str, stdout: Stdio) -> i32 {
    let pid_file = root.with_file_name(format!("{id}.pid"));
    let (code, err) = runvm(
        root,
        &[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ],
        stdout,
    );
    assert_eq!(code, Some(0), "{err}");
    std::fs::read_to_string(&pid_file).unwrap().parse().unwrap()
}

#[test]
fn create_start_exit_code_state_and_delete() {
    require_real_kvm();
    guest_image();
    become_subreaper();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let root = dir.path().join("state");
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
    assert!(!root.join("c1").exists());
}

#[test]
fn a_created_container_killed_is_stopped_and_deleted_cleanly() {
    require_real_kvm();
    guest_image();
    become_subreaper();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let root = dir.path().join("state");
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &["PATH=/bin"], "/");
    let pid = create(&root, &bundle, "c2", Stdio::null());
    assert_eq!(
        runvm(&root, &["kill", "c2", "KILL"], Stdio::null()).0,
        Some(0)
    );
    let status = wait_for(pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    assert_eq!(state_of(&root, "c2")["status"], "stopped");
    assert_eq!(runvm(&root, &["delete", "c2"], Stdio::null()).0, Some(0));
    assert!(!root.join("c2").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.path().to_str().unwrap()), "{mounts}");

    // A bundle that cannot be loaded fails create in one line, leaving nothing.
    let (code, err) = runvm(
        &root,
        &["create", "-b", "/nonexistent", "c3"],
        Stdio::null(),
    );
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!root.join("c3").exists());
}
