//! `runvm run`: a busybox bundle's process runs in its microVM with our stdio, our signals
//! and our exit status, and leaves nothing behind.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runvm_vm_tests::{busybox_bundle, guest_image, require_real_kvm, runvm_bin};

const PATH: &str = "PATH=/bin";

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Starts `runvm --root STATE run --bundle BUNDLE [EXTRA...] ID` with `stdin`, stdout and
/// stderr piped.
fn spawn_run(state: &Path, bundle: &Path, id: &str, extra: &[&OsStr], stdin: Stdio) -> Child {
    Command::new(runvm_bin())
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .args(extra)
        .arg(id)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs a bundle with `args`, feeding `stdin`; checks the state root is empty afterwards.
fn run(args: &[&str], env: &[&str], cwd: &str, stdin: &[u8]) -> Run {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(&dir.path().join("bundle"), args, env, cwd);
    let state = dir.path().join("state");
    let mut child = spawn_run(&state, &bundle, "test-container", &[], Stdio::piped());
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let left: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
    assert!(left.is_empty(), "state left behind: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.path().to_str().unwrap()),
        "a mount leaked: {mounts}"
    );
    Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn echo_hello() {
    let r = run(&["echo", "hello"], &[PATH], "/", b"");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (Some(0), &b"hello\n"[..]),
        "{}",
        r.stderr
    );
}

#[test]
fn exit_codes_env_cwd_and_stderr() {
    let script = "echo FOO=$FOO; pwd; echo to-stderr >&2; exit 42";
    let r = run(
        &["sh", "-c", script],
        &[PATH, "FOO=bar"],
        "/made/for/us",
        b"",
    );
    assert_eq!(r.code, Some(42));
    assert_eq!(
        String::from_utf8(r.stdout).unwrap(),
        "FOO=bar\n/made/for/us\n"
    );
    assert_eq!(r.stderr, "to-stderr\n");
}

#[test]
fn stdin_reaches_the_process_and_its_end_too() {
    let r = run(&["cat"], &[PATH], "/", b"line one\nline two\n");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (Some(0), &b"line one\nline two\n"[..])
    );
}

#[test]
fn a_missing_binary_fails_in_runcs_words_and_leaves_nothing() {
    let r = run(&["nope"], &[PATH], "/", b"");
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("exec: \"nope\": executable file not found in $PATH"),
        "{}",
        r.stderr
    );
    let r = run(&["/bin/nope"], &[PATH], "/", b"");
    assert!(
        r.stderr.contains("no such file or directory"),
        "{}",
        r.stderr
    );
}

#[test]
fn sixty_four_mib_out_and_through_byte_exact() {
    const SIZE: usize = 64 << 20;
    let r = run(
        &["sh", "-c", "yes abcdefghijklmno | head -c 67108864"],
        &[PATH],
        "/",
        b"",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let expected: Vec<u8> = b"abcdefghijklmno\n"
        .iter()
        .copied()
        .cycle()
        .take(SIZE)
        .collect();
    assert!(
        r.stdout == expected,
        "64 MiB to stdout differs ({} bytes)",
        r.stdout.len()
    );

    let input: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let r = run(&["cat"], &[PATH], "/", &input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout == input,
        "64 MiB through stdin differs ({} bytes)",
        r.stdout.len()
    );
}

#[test]
fn signals_reach_the_process_and_pid_1_ignores_unhandled_ones() {
    require_real_kvm();
    guest_image();
    for (script, signal, expected) in [
        (
            "trap 'exit 3' USR1; echo ready; while true; do sleep 0.1; done",
            libc::SIGUSR1,
            3,
        ),
        // The process is PID 1 of its pid namespace: a signal it has no handler for is
        // ignored, exactly as with runc (docker stop then waits and kills).
        ("echo ready; sleep 2; echo done", libc::SIGTERM, 0),
    ] {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let bundle = busybox_bundle(
            &dir.path().join("bundle"),
            &["sh", "-c", script],
            &[PATH],
            "/",
        );
        let state = dir.path().join("state");
        let mut child = spawn_run(&state, &bundle, "sig", &[], Stdio::null());
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        lines.read_line(&mut first).unwrap();
        if first != "ready\n" {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{script}: first line {first:?}, exit {:?}, stderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(expected), "{script}: {err}");
    }
}

#[test]
fn the_pid_file_names_runvm_and_is_not_world_writable() {
    use std::os::unix::fs::PermissionsExt;
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &[PATH], "/");
    let pid_file = dir.path().join("init.pid");
    let state = dir.path().join("state");
    let extra = [OsStr::new("--pid-file"), pid_file.as_os_str()];
    let child = spawn_run(&state, &bundle, "pid", &extra, Stdio::null());
    let runvm_pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, runvm_pid, "the pid file names the runvm process");
    let mode = std::fs::metadata(&pid_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn the_process_is_pid_1_with_its_own_hostname_and_proc() {
    let script = "echo pid=$$; hostname; kill -9 $$; echo still-here; ls /proc | grep -c '^[0-9]'";
    let r = run(&["sh", "-c", script], &[PATH], "/", b"");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let out = String::from_utf8(r.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["pid=1", "runvm-test", "still-here"], "{out}");
    // Only the container's own processes (sh, ls, grep) are in its /proc.
    let procs: u32 = lines[3].parse().unwrap();
    assert!((1..=4).contains(&procs), "{procs} processes visible: {out}");
}

#[test]
fn the_guest_kernel_sees_the_tsc_deadline_timer() {
    // With it the guest skips calibrating its local APIC timer at every boot.
    let r = run(
        &["grep", "-cw", "tsc_deadline_timer", "/proc/cpuinfo"],
        &[PATH],
        "/",
        b"",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "1");
}

#[test]
fn state_list_kill_and_delete_act_through_runvms_pid() {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &[
            "sh",
            "-c",
            "trap 'exit 3' USR1; echo ready; while true; do sleep 0.1; done",
        ],
        &[PATH],
        "/",
    );
    let state_root = dir.path().join("state");
    let runvm = |args: &[&str]| {
        Command::new(runvm_bin())
            .arg("--root")
            .arg(&state_root)
            .args(args)
            .output()
            .unwrap()
    };
    let mut child = spawn_run(&state_root, &bundle, "listed", &[], Stdio::piped());
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n");
    let out = runvm(&["state", "listed"]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(state["pid"], child.id(), "{state}");
    assert_eq!(state["id"], "listed");
    assert_eq!(state["bundle"].as_str().unwrap(), bundle.to_str().unwrap());
    // runvm (the VMM) is in the container's host cgroup, runc's default `/<id>`.
    let procs = std::fs::read_to_string("/sys/fs/cgroup/listed/cgroup.procs").unwrap();
    assert!(
        procs.lines().any(|p| p == child.id().to_string()),
        "{procs}"
    );
    let out = runvm(&["list", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "listed\n");
    // `runvm kill` reaches the process through runvm's pid.
    let out = runvm(&["kill", "listed", "USR1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(child.wait().unwrap().code(), Some(3));
    // runc run removes its container when the process ends: so does runvm, cgroup too.
    let out = runvm(&["state", "listed"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!std::path::Path::new("/sys/fs/cgroup/listed").exists());

    // SIGKILL ends runvm and the VM with it; the state left says stopped and delete
    // removes it, with no mount left anywhere.
    let mut child = spawn_run(&state_root, &bundle, "killed", &[], Stdio::null());
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "ready\n");
    assert!(std::path::Path::new("/sys/fs/cgroup/killed/cgroup.procs").exists());
    assert!(runvm(&["kill", "killed", "KILL"]).status.success());
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let out = runvm(&["state", "killed"]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (state["status"].as_str(), state["pid"].as_i64()),
        (Some("stopped"), Some(0))
    );
    assert!(runvm(&["delete", "killed"]).status.success());
    assert!(!state_root.join("killed").exists());
    assert!(!std::path::Path::new("/sys/fs/cgroup/killed").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.path().to_str().unwrap()), "{mounts}");
}

/// Runs `args` in a busybox container with `--debug` and returns the virtio-fs line of its
/// log (after checking that it went to the log at level debug, not to the container's
/// stderr). `prepare` adds files to the bundle's root first.
fn debug_fs_line(args: &[&str], prepare: impl FnOnce(&Path)) -> String {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let bundle = busybox_bundle(&dir.path().join("bundle"), args, &[PATH], "/");
    prepare(&bundle.join("rootfs"));
    let state = dir.path().join("state");
    let log = dir.path().join("log.json");
    let out = Command::new(runvm_bin())
        .arg("--root")
        .arg(&state)
        .arg("--debug")
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "run", "--bundle"])
        .arg(&bundle)
        .arg("debug-fs")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(out.stdout, b"hi\n");
    // The report goes to the log, not to the container's stderr.
    assert!(!stderr.contains("virtio-fs:"), "{stderr}");
    let text = std::fs::read_to_string(&log).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "debug")
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .find(|m| m.starts_with("virtio-fs:"))
        .unwrap_or_else(|| panic!("no virtio-fs line at level debug in {text}"))
}

/// From a virtio-fs line, `op`'s requests and bytes sent to the guest.
fn requests_and_bytes_out(line: &str, op: &str) -> (u64, u64) {
    // "...; READ 12/0 err, 960/9437184 B in/out, ..."
    let part = line
        .split("; ")
        .find_map(|p| p.strip_prefix(&format!("{op} ")))
        .unwrap_or_else(|| panic!("no {op} in {line}"));
    let number = |s: &str| s.trim().parse::<u64>().unwrap_or_else(|_| panic!("{line}"));
    let (requests, rest) = part.split_once('/').unwrap();
    let bytes = rest.split(", ").nth(1).unwrap();
    let out = bytes.split_once('/').unwrap().1.split_once(' ').unwrap().0;
    (number(requests), number(out))
}

#[test]
fn with_debug_the_log_counts_the_root_shares_requests_by_opcode() {
    let line = debug_fs_line(&["sh", "-c", "echo hi > /written && cat /written"], |_| {});
    for op in ["INIT 1/0 err", "LOOKUP ", "CREATE ", "WRITE "] {
        assert!(line.contains(op), "{op:?} missing from {line}");
    }
}

#[test]
fn a_file_of_the_root_is_read_once_in_large_requests() {
    const BIG: u64 = 8 << 20;
    let line = debug_fs_line(
        &[
            "sh",
            "-c",
            "cat /big >/dev/null; cat /big >/dev/null; echo hi",
        ],
        |rootfs| {
            let data: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
            std::fs::write(rootfs.join("big"), data).unwrap();
        },
    );
    let (reads, bytes) = requests_and_bytes_out(&line, "READ");
    // The second `cat` reads the guest's cache (the file did not change on the host): the
    // host sent the file once, with busybox and the rest of the start (about 1.5 MiB).
    assert!((BIG..BIG + (4 << 20)).contains(&bytes), "{line}");
    // In requests of up to 1 MiB (the share's readahead), not 128 KiB: at most ~30 with
    // the start's small reads, where 128 KiB requests would take 64 for the file alone.
    assert!(reads < 40, "{line}");
}
