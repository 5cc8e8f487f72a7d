//! `runvm exec` into a running container, driven as containerd-shim drives runc: in the
//! foreground (exit codes, stdout, stderr, stdin), with `--process` as the shim writes it,
//! detached with a pid file (the relay is adopted by this subreaper and ends as the process
//! did), signals through the relay, and a container killed under its exec'd processes.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runvm_vm_tests::shim::{
    as_shim, assert_nothing_left, create, read_pid, runvm, state_of, wait_for,
};
use runvm_vm_tests::{busybox_bundle, runvm_bin};

/// How long one `runvm exec` may take.
const HANG: Duration = Duration::from_secs(120);

/// `runvm exec` in the foreground with `stdin`; returns (code, stdout, stderr).
fn exec(root: &Path, args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    let mut child = Command::new(runvm_bin())
        .arg("--root")
        .arg(root)
        .arg("exec")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    // A hang fails this test, not the suite.
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + HANG;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                return false;
            }
        }
        // SAFETY: kill takes no pointers.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        true
    });
    let out = child.wait_with_output().unwrap();
    assert!(
        !watchdog.join().unwrap(),
        "runvm exec {args:?} hung: killed after {HANG:?}"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exec_runs_in_the_container_and_ends_as_its_process_did() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &[
            "sh",
            "-c",
            "echo here > /init-was-here; while true; do sleep 1; done",
        ],
        &["PATH=/bin"],
        "/",
    );
    let pid = create(&root, &bundle, "e1", Stdio::null());
    let (code, err) = runvm(&root, &["start", "e1"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(state_of(&root, "e1")["status"], "running");

    // The container's namespaces: its pid 1, hostname and root; exit code and both streams.
    let (code, out, err) = exec(
        &root,
        &[
            "e1",
            "sh",
            "-c",
            "until cat /init-was-here 2>/dev/null; do sleep 1; done; \
             cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; echo oops >&2; exit 7",
        ],
        b"",
    );
    assert_eq!(code, Some(7), "{err}");
    assert_eq!(
        out,
        "here\nsh -c echo here > /init-was-here; while true; do sleep 1; done \nrunvm-test\n"
    );
    assert_eq!(err, "oops\n");

    // stdin reaches the process, end of file too.
    let (code, out, err) = exec(&root, &["e1", "cat"], b"through stdin\n");
    assert_eq!((code, out.as_str()), (Some(0), "through stdin\n"), "{err}");

    // --user, --cwd and -e on the command line.
    let (code, out, err) = exec(
        &root,
        &[
            "--user",
            "1000:1000",
            "--cwd",
            "/dev",
            "-e",
            "X=y",
            "e1",
            "sh",
            "-c",
            "id -u; pwd; echo $X",
        ],
        b"",
    );
    assert_eq!((code, out.as_str()), (Some(0), "1000\n/dev\ny\n"), "{err}");

    // A missing binary: runc's words, one line, a failing status.
    let (code, _, err) = exec(&root, &["e1", "nope"], b"");
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("executable file not found in $PATH"), "{err}");

    // Detached with --process (as the shim does): the pid file names the relay, which ends
    // as the process did; a signal to the relay reaches the process.
    let process = dir.path().join("process.json");
    std::fs::write(
        &process,
        serde_json::json!({
            "args": ["sh", "-c", "trap 'exit 9' USR1; echo waiting; while true; do sleep 1; done"],
            "env": ["PATH=/bin"], "cwd": "/", "user": { "uid": 0, "gid": 0 }
        })
        .to_string(),
    )
    .unwrap();
    let out_path = dir.path().join("exec.out");
    let pid_file = dir.path().join("exec.pid");
    let (code, err) = runvm(
        &root,
        &[
            "exec",
            "--detach",
            "--process",
            process.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "e1",
        ],
        Stdio::from(std::fs::File::create(&out_path).unwrap()),
    );
    assert_eq!(code, Some(0), "{err}");
    let relay = read_pid(&pid_file);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&out_path).unwrap() != "waiting\n" {
        assert!(
            Instant::now() < deadline,
            "the detached process never wrote"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill takes no pointers; `relay` is our adopted child.
    assert_eq!(unsafe { libc::kill(relay, libc::SIGUSR1) }, 0);
    let status = wait_for(relay);
    assert!(libc::WIFEXITED(status), "{status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 9);

    // A detached process outlived by nothing: killing the container ends its relay too.
    let (code, err) = runvm(
        &root,
        &[
            "exec",
            "-d",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "e1",
            "sleep",
            "1000",
        ],
        Stdio::null(),
    );
    assert_eq!(code, Some(0), "{err}");
    let relay = read_pid(&pid_file);
    assert_eq!(
        runvm(&root, &["kill", "e1", "KILL"], Stdio::null()).0,
        Some(0)
    );
    let status = wait_for(pid);
    assert!(libc::WIFSIGNALED(status), "{status:#x}");
    let status = wait_for(relay);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0,
        "{status:#x}"
    );

    let (code, _, err) = exec(&root, &["e1", "true"], b"");
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot exec in a stopped container"), "{err}");
    assert_eq!(runvm(&root, &["delete", "e1"], Stdio::null()).0, Some(0));
    assert_nothing_left(dir.path(), &root, "e1");
}
