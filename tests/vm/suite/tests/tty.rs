//! Terminals, driven as containerd's shim drives runc: `create --console-socket` and
//! `exec --tty --console-socket --detach` send a pty master over the socket; the
//! container's process has a terminal (`tty`, `stty size`) whose window size follows a
//! resize of that master; the sandbox or exec relay ends as the process did. Also a
//! terminal in the foreground (`runvm run` with `terminal: true`) and runc's refusals.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use runvm_vm_tests::console::{ConsoleSocket, Screen};
use runvm_vm_tests::shim::{as_shim, read_pid, runvm, runvm_to_eof, state_of, wait_for};
use runvm_vm_tests::{busybox_bundle, edit_config, run_bundle};

/// How long a terminal may take to show what the test waits for.
const SHOWN: Duration = Duration::from_secs(60);

/// A shell loop on the terminal: each line read prints the window size; `q` ends it with 7.
const SIZE_LOOP: &str = "tty; stty size; while read x; do [ \"$x\" = q ] && exit 7; \
                         echo \"size $(stty size)\"; done";

/// Sets the master's window size, then asks the loop for the size until it shows, as the
/// resize and the line travel to the guest by different paths.
fn resize_and_see(master: &mut std::fs::File, screen: &Screen, rows: u16, cols: u16) {
    guest_init::pty::set_size(master, rows, cols).unwrap();
    let want = format!("size {rows} {cols}");
    for _ in 0..30 {
        master.write_all(b"s\n").unwrap();
        if screen.wait_for(&want, Duration::from_secs(2)) {
            return;
        }
    }
    panic!("the guest never saw {rows}x{cols}: {:?}", screen.text());
}

#[test]
fn create_with_a_console_socket_gives_a_terminal_that_follows_resizes() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", SIZE_LOOP],
        &["PATH=/bin"],
        "/",
    );
    edit_config(&bundle, |c| {
        c["process"]["terminal"] = true.into();
        c["process"]["consoleSize"] = serde_json::json!({ "height": 30, "width": 100 });
    });
    let socket = ConsoleSocket::listen(&dir.path().join("console.sock"));
    let pid_file = dir.path().join("c.pid");
    // The shim reads create's output to its end: the sandbox must not hold it.
    let (code, err) = runvm_to_eof(
        &root,
        &[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--console-socket",
            socket.path.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "t1",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    // The master came during create, as runc sends it.
    let (name, mut master) = socket.master();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    let pid = read_pid(&pid_file);
    assert_eq!(state_of(&root, "t1")["status"], "created");
    let screen = Screen::read(&master);

    let (code, err) = runvm(&root, &["start", "t1"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    assert!(
        screen.wait_for("30 100", SHOWN),
        "no first size: {:?}",
        screen.text()
    );
    let text = screen.text();
    assert!(
        text.contains("/dev/pts/0\r\n"),
        "tty, with the guest's line discipline: {text:?}"
    );
    resize_and_see(&mut master, &screen, 50, 132);
    resize_and_see(&mut master, &screen, 24, 80);
    master.write_all(b"q\n").unwrap();
    let status = wait_for(pid);
    assert!(libc::WIFEXITED(status), "{status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 7);
    assert_eq!(runvm(&root, &["delete", "t1"], Stdio::null()).0, Some(0));
    assert!(!root.join("t1").exists());
}

#[test]
fn exec_tty_with_a_console_socket_detached_as_the_shim_does() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sleep", "600"],
        &["PATH=/bin"],
        "/",
    );
    let pid = runvm_vm_tests::shim::create(&root, &bundle, "t2", Stdio::null());
    assert_eq!(runvm(&root, &["start", "t2"], Stdio::null()).0, Some(0));

    let socket = ConsoleSocket::listen(&dir.path().join("exec.sock"));
    let relay_pid_file = dir.path().join("exec.pid");
    // As for create: the detached relay must not hold the output the shim reads.
    let (code, err) = runvm_to_eof(
        &root,
        &[
            "exec",
            "--tty",
            "--console-socket",
            socket.path.to_str().unwrap(),
            "--detach",
            "--pid-file",
            relay_pid_file.to_str().unwrap(),
            "t2",
            "sh",
            "-c",
            SIZE_LOOP,
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (_, mut master) = socket.master();
    let relay = read_pid(&relay_pid_file);
    let screen = Screen::read(&master);
    assert!(
        screen.wait_for("/dev/pts/", SHOWN),
        "no terminal: {:?}",
        screen.text()
    );
    resize_and_see(&mut master, &screen, 41, 99);
    master.write_all(b"q\n").unwrap();
    let status = wait_for(relay);
    assert!(libc::WIFEXITED(status), "{status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 7);

    assert_eq!(
        runvm(&root, &["kill", "t2", "KILL"], Stdio::null()).0,
        Some(0)
    );
    wait_for(pid);
    assert_eq!(runvm(&root, &["delete", "t2"], Stdio::null()).0, Some(0));
}

#[test]
fn a_terminal_in_the_foreground_and_runcs_refusals() {
    let (dir, root) = as_shim();
    // `runvm run` with a terminal and no console socket: the terminal is runvm's own
    // stdin and stdout (here not a terminal, so nothing is made raw).
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", "tty; echo hello; exit 3"],
        &["PATH=/bin"],
        "/",
    );
    edit_config(&bundle, |c| c["process"]["terminal"] = true.into());
    let (code, out, err) = run_bundle(dir.path());
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(out, "/dev/pts/0\r\nhello\r\n", "{err}");

    // A detached container with a terminal needs a console socket, and a console socket
    // needs a terminal: one line each, nothing left behind.
    let (code, err) = runvm(
        &root,
        &["create", "--bundle", bundle.to_str().unwrap(), "t3"],
        Stdio::null(),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot allocate tty"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!root.join("t3").exists());
    edit_config(&bundle, |c| c["process"]["terminal"] = false.into());
    let (code, err) = runvm(
        &root,
        &[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--console-socket",
            "/nonexistent.sock",
            "t3",
        ],
        Stdio::null(),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot use console socket"), "{err}");
    assert!(!root.join("t3").exists());
}
