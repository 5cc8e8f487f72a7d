//! create / start / state / kill / delete driven through the CLI as containerd-shim does:
//! this test process is a child subreaper (as the shim is), so the sandbox that `create`
//! leaves behind becomes its child and its exit status is read with waitpid.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;

use runvm_vm_tests::busybox_bundle;
use runvm_vm_tests::shim::{as_shim, create, runvm, state_of, wait_for};

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
    assert!(!root.join("c1").exists());
}

#[test]
fn a_created_container_killed_is_stopped_and_deleted_cleanly() {
    let (dir, root) = as_shim();
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
