//! Hooks run for real: /bin/sh scripts that record what they were given.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

fn hooks(json: serde_json::Value) -> Hooks {
    serde_json::from_value(json).unwrap()
}

fn sh(script: &str) -> serde_json::Value {
    serde_json::json!({ "path": "/bin/sh", "args": ["sh", "-c", script] })
}

fn state(dir: &Path, status: Status, pid: i32) -> ContainerState {
    let mut s = ContainerState::creating("c1", pid, dir, &dir.join("rootfs"));
    s.status = status;
    s.annotations.insert("k".into(), "v".into());
    s
}

fn here() -> HookPlace {
    HookPlace::here().unwrap()
}

/// Runs `stage` of `h` for a container in `d` with `status` and `pid`.
fn run(
    d: &tempfile::TempDir,
    h: &Hooks,
    stage: Stage,
    status: Status,
    pid: i32,
) -> Result<(), HookError> {
    run_stage(Some(h), stage, &state(d.path(), status, pid), &here())
}

#[test]
fn hooks_run_in_order_with_the_oci_state_on_stdin() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().display();
    let h = hooks(serde_json::json!({
        "createRuntime": [
            sh(&format!("cat > {out}/state.json; echo one >> {out}/order")),
            sh(&format!("echo two >> {out}/order")),
        ]
    }));
    let s = state(d.path(), Status::Creating, 4242);
    run_stage(Some(&h), Stage::CreateRuntime, &s, &here()).unwrap();
    assert_eq!(
        std::fs::read_to_string(d.path().join("order")).unwrap(),
        "one\ntwo\n"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(v["ociVersion"], OCI_VERSION);
    assert_eq!(v["id"], "c1");
    assert_eq!(v["status"], "creating");
    assert_eq!(v["pid"], 4242);
    assert_eq!(v["bundle"], d.path().to_str().unwrap());
    assert_eq!(v["annotations"]["k"], "v");
    // runvm's own fields are not part of the OCI state.
    assert!(v.get("rootfs").is_none() && v.get("created").is_none());
}

#[test]
fn a_stopped_containers_state_has_no_pid() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().display();
    let h = hooks(serde_json::json!({ "poststop": [sh(&format!("cat > {out}/s"))] }));
    run(&d, &h, Stage::Poststop, Status::Stopped, 0).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("s")).unwrap()).unwrap();
    assert_eq!(v["status"], "stopped");
    assert!(v.get("pid").is_none(), "{v}");
}

#[test]
fn args_zero_env_and_nothing_else_reach_the_hook() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().display();
    let h = hooks(serde_json::json!({ "prestart": [{
        "path": "/bin/sh",
        "args": ["my-hook", "-c", format!("tr '\\0' ' ' < /proc/$$/cmdline > {out}/argv; env > {out}/env")],
        "env": ["HOOK_A=1", "HOOK_B=x=y"],
    }]}));
    run(&d, &h, Stage::Prestart, Status::Creating, 1).unwrap();
    let argv = std::fs::read_to_string(d.path().join("argv")).unwrap();
    assert!(argv.starts_with("my-hook -c "), "{argv}");
    let env = std::fs::read_to_string(d.path().join("env")).unwrap();
    assert!(env.lines().any(|l| l == "HOOK_A=1"), "{env}");
    assert!(env.lines().any(|l| l == "HOOK_B=x=y"), "{env}");
    // Only what the spec gives (sh adds PWD, SHLVL and _ of its own).
    assert!(!env.contains("CARGO"), "{env}");
}

#[test]
fn a_failing_hook_stops_its_stage_and_says_why_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().display();
    let h = hooks(serde_json::json!({ "prestart": [
        sh("echo fine"),
        sh("echo to-out; printf 'it\\nbroke' >&2; exit 3"),
        sh(&format!("touch {out}/third")),
    ]}));
    let e = run(&d, &h, Stage::Prestart, Status::Creating, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("error running prestart hook #1 (/bin/sh): "),
        "{e}"
    );
    assert!(e.contains("exit status: 3"), "{e}");
    assert!(e.contains("stdout: to-out, stderr: it broke"), "{e}");
    assert!(!e.contains('\n'));
    assert!(!d.path().join("third").exists());
}

#[test]
fn a_hook_past_its_timeout_is_killed() {
    let d = tempfile::tempdir().unwrap();
    let mut h = sh("sleep 30");
    h["timeout"] = 1.into();
    let h = hooks(serde_json::json!({ "startContainer": [h] }));
    let t = Instant::now();
    let e = run(&d, &h, Stage::StartContainer, Status::Created, 1)
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(e.contains("timeout of 1 s"), "{e}");
}

#[test]
fn a_relative_or_missing_path_fails() {
    let d = tempfile::tempdir().unwrap();
    let s = state(d.path(), Status::Creating, 1);
    for path in ["sh", "/nonexistent/hook"] {
        let h = hooks(serde_json::json!({ "createContainer": [{ "path": path }] }));
        let e = run_stage(Some(&h), Stage::CreateContainer, &s, &here()).unwrap_err();
        assert_eq!(e.index, 0);
        assert_eq!(e.stage, "createContainer");
    }
}

#[test]
fn warning_stages_run_every_hook() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().display();
    let h = hooks(serde_json::json!({ "poststart": [
        sh("exit 1"),
        sh(&format!("touch {out}/second")),
    ]}));
    run_stage_warning(
        Some(&h),
        Stage::Poststart,
        &state(d.path(), Status::Running, 1),
        &here(),
    );
    assert!(d.path().join("second").exists());
    assert!(!Stage::Poststart.is_fatal() && Stage::Prestart.is_fatal());
}

#[test]
fn a_hook_that_ignores_stdin_and_floods_stdout_does_not_block() {
    let d = tempfile::tempdir().unwrap();
    let h = hooks(serde_json::json!({ "prestart": [sh("head -c 1000000 /dev/zero")] }));
    run(&d, &h, Stage::Prestart, Status::Creating, 1).unwrap();
}

#[test]
fn a_hook_that_leaves_a_process_holding_its_output_does_not_hang() {
    let d = tempfile::tempdir().unwrap();
    let h = hooks(serde_json::json!({ "prestart": [sh("sleep 30 & echo started")] }));
    let t = Instant::now();
    run(&d, &h, Stage::Prestart, Status::Creating, 1).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
