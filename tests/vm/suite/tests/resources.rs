//! The container's cgroup in its guest: the spec's memory, CPU and pids limits land there,
//! `runvm update --resources -` (as containerd's shim calls it) changes them, and
//! `runvm events` reports the container's use as runc's stats events, once or every
//! interval until the container stops, and an `oom` event when the limit kills.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runvm_vm_tests::shim::{as_shim, create, runvm, wait_for};
use runvm_vm_tests::{busybox_bundle, edit_config, runvm_bin};

/// `runvm exec ID ARGS...`'s stdout, the exec required to succeed.
fn exec_out(root: &Path, dir: &Path, args: &[&str]) -> String {
    let path = dir.join("exec.out");
    let out = Stdio::from(std::fs::File::create(&path).unwrap());
    let mut all = vec!["exec", "r1"];
    all.extend_from_slice(args);
    let (code, err) = runvm(root, &all, out);
    assert_eq!(code, Some(0), "{err}");
    std::fs::read_to_string(&path).unwrap()
}

/// The limits as the container's processes see them: in their cgroup namespace, their own
/// cgroup is the root of the cgroup2 mount, as with runc.
const SHOW_LIMITS: &[&str] = &[
    "cat",
    "/proc/self/cgroup",
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/pids.max",
    "/sys/fs/cgroup/cpu.max",
];

#[test]
fn limits_from_the_spec_update_and_events() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sleep", "600"],
        &["PATH=/bin"],
        "/",
    );
    edit_config(&bundle, |c| {
        c["linux"]["resources"] = serde_json::json!({
            "memory": { "limit": 64 << 20 },
            "pids": { "limit": 20 },
            "cpu": { "quota": 50000, "period": 100000 }
        });
        c["linux"]["namespaces"] = serde_json::json!([
            { "type": "pid" }, { "type": "mount" }, { "type": "cgroup" }
        ]);
        c["mounts"].as_array_mut().unwrap().push(
            serde_json::json!({ "destination": "/sys/fs/cgroup", "type": "cgroup",
                                      "source": "cgroup", "options": ["ro"] }),
        );
    });
    let pid = create(&root, &bundle, "r1", Stdio::null());
    assert_eq!(runvm(&root, &["start", "r1"], Stdio::null()).0, Some(0));
    assert_eq!(
        exec_out(&root, dir.path(), SHOW_LIMITS),
        "0::/\n67108864\n20\n50000 100000\n"
    );

    // containerd's shim writes the new resources to update's stdin.
    let mut update = Command::new(runvm_bin())
        .arg("--root")
        .arg(&root)
        .args(["update", "--resources", "-", "r1"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let json = r#"{"memory":{"limit":134217728},"pids":{"limit":30},"cpu":{"quota":-1}}"#;
    update
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = update.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        exec_out(&root, dir.path(), SHOW_LIMITS),
        "0::/\n134217728\n30\nmax 100000\n"
    );
    let (code, err) = runvm(
        &root,
        &["update", "--pids-limit", "25", "r1"],
        Stdio::null(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        exec_out(&root, dir.path(), &["cat", "/sys/fs/cgroup/pids.max"]),
        "25\n"
    );

    // One stats event, runc's shape.
    let line = exec_events(&root, &["events", "--stats", "r1"]);
    let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(event["type"], "stats", "{event}");
    assert_eq!(event["id"], "r1");
    let data = &event["data"];
    assert_eq!(data["memory"]["usage"]["limit"], 134_217_728u64, "{event}");
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{event}"
    );
    assert!(data["memory"]["raw"]["anon"].is_u64(), "{event}");
    assert!(
        data["cpu"]["usage"]["total"].as_u64().unwrap() > 0,
        "{event}"
    );
    assert_eq!(data["pids"]["limit"], 25, "{event}");
    assert!(data["pids"]["current"].as_u64().unwrap() >= 1, "{event}");

    // A stream every interval, with an `oom` event when the memory limit kills a process,
    // ending when the container stops.
    let (code, err) = runvm(&root, &["update", "--memory", "32m", "r1"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    let mut events = Command::new(runvm_bin())
        .arg("--root")
        .arg(&root)
        .args(["events", "--interval", "200ms", "r1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read as it comes: a full pipe would stop the stream.
    let mut stdout = events.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        text
    });
    std::thread::sleep(Duration::from_secs(1));
    let hog = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}";
    let (code, err) = runvm(&root, &["exec", "r1", "sh", "-c", hog], Stdio::null());
    assert_eq!(code, Some(137), "the hog was not killed: {err}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        runvm(&root, &["kill", "r1", "KILL"], Stdio::null()).0,
        Some(0)
    );
    wait_for(pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "events went on after the stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(events.wait().unwrap().success());
    let lines = reader
        .join()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].clone())
        .collect::<Vec<_>>();
    assert!(lines.len() >= 3, "{lines:?}");
    assert_eq!(lines.iter().filter(|t| *t == "oom").count(), 1, "{lines:?}");
    assert!(
        lines.iter().all(|t| t == "stats" || t == "oom"),
        "{lines:?}"
    );
    assert_eq!(runvm(&root, &["delete", "r1"], Stdio::null()).0, Some(0));

    // A stopped container has no stats.
    let (code, err) = runvm(&root, &["update", "--memory", "1g", "r1"], Stdio::null());
    assert_eq!(code, Some(1), "{err}");
}

/// `runvm ARGS` run to its end; its stdout.
fn exec_events(root: &Path, args: &[&str]) -> String {
    let out = Command::new(runvm_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
