//! Driving runvm's CLI as containerd-shim does: a child subreaper that runs `create`,
//! `start`, `state`, `exec`... and waits for the processes that stand for containers.

use std::path::Path;
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use crate::{HANG, guest_image, require_real_kvm, runvm_bin};

/// A shim's test: real KVM and the guest image checked, this process a subreaper; returns
/// a scratch directory (removed when dropped) and the state root inside it.
pub fn as_shim() -> (tempfile::TempDir, std::path::PathBuf) {
    require_real_kvm();
    guest_image();
    become_subreaper();
    let dir = tempfile::tempdir_in("/tmp").expect("a scratch directory in /tmp");
    let root = dir.path().join("state");
    (dir, root)
}

/// Runs runvm; returns its exit code and stderr. Its stdout goes to `stdout`, its stderr to
/// a file, not a pipe: a sandbox inherits both and lives on after `create` returns. A runvm
/// command still running after [`HANG`] is killed and fails the test.
pub fn runvm(root: &Path, args: &[&str], stdout: Stdio) -> (Option<i32>, String) {
    let err = tempfile::NamedTempFile::new().expect("runvm CLI");
    let mut child = Command::new(runvm_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(err.reopen().expect("runvm CLI")))
        .spawn()
        .expect("runvm CLI");
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("runvm CLI") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runvm {args:?} hung: killed after {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(err.path()).expect("runvm CLI"),
    )
}

/// Runs runvm with stdout and stderr on one pipe read to its end, as containerd's shim
/// runs `create` and `exec` for a terminal (go-runc's combined output): that end comes only
/// once no process holds the pipe, so a sandbox or relay that kept it would hang the shim.
/// Returns the exit code and the output; a pipe still open after [`HANG`] fails the test.
pub fn runvm_to_eof(root: &Path, args: &[&str]) -> (Option<i32>, String) {
    let (mut reader, writer) = std::io::pipe().expect("a pipe");
    let mut child = Command::new(runvm_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("a pipe"))
        .stderr(writer)
        .spawn()
        .expect("runvm CLI");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut out);
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("runvm {args:?}: its output never ended"));
    let status = child.wait().expect("runvm CLI");
    (status.code(), out)
}

/// `runvm state ID`, parsed.
pub fn state_of(root: &Path, id: &str) -> serde_json::Value {
    let out = Command::new(runvm_bin())
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .expect("runvm CLI");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    serde_json::from_slice(&out.stdout).expect("runvm CLI")
}

/// Makes this test process a child subreaper, as containerd-shim is.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
}

/// Waits for our (adopted) child `pid`; returns the raw wait status.
pub fn wait_for(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for a child of this (subreaper) process; `status` is a valid int.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

/// `runvm create` of `bundle` as `id` with a pid file; returns the sandbox's pid.
pub fn create(root: &Path, bundle: &Path, id: &str, stdout: Stdio) -> i32 {
    let pid_file = root.with_file_name(format!("{id}.pid"));
    let (code, err) = runvm(
        root,
        &[
            "create",
            "--bundle",
            bundle.to_str().expect("runvm CLI"),
            "--pid-file",
            pid_file.to_str().expect("runvm CLI"),
            id,
        ],
        stdout,
    );
    assert_eq!(code, Some(0), "{err}");
    read_pid(&pid_file)
}

/// The pid a `--pid-file` holds.
pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .expect("the pid file exists")
        .parse()
        .expect("the pid file holds a pid")
}

/// Checks that nothing of container `id` (state under `root`, scratch directory `dir`) is
/// left after `delete`: its state directory, a process started for it (a sandbox or exec
/// relay names `root` on its command line), a mount under `dir`, its default host cgroup.
pub fn assert_nothing_left(dir: &Path, root: &Path, id: &str) {
    assert!(
        !root.join(id).exists(),
        "the state directory of {id} is left"
    );
    let root_text = root.to_str().expect("a UTF-8 path");
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(root_text),
            "a process of {id} is left: {cmdline}"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir_text = dir.to_str().expect("a UTF-8 path");
    assert!(!mounts.contains(dir_text), "a mount is left: {mounts}");
    let cgroup = Path::new("/sys/fs/cgroup").join(id);
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
}
