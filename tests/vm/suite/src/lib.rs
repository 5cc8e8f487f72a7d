//! Shared helpers of runvm's VM test suite: tests that need real KVM.
//!
//! These tests run where `/dev/kvm` is real: natively on a host with hardware KVM, or inside
//! the L1 test VM (`tests/vm/run` decides). Anywhere else they fail loudly at their first
//! line; they never skip.

pub mod console;
pub mod shim;

use std::path::PathBuf;

use runvm::host::HostRoot;
use runvm::host::kvm::{self, KvmBackend};

/// Panics with a clear message unless this machine has a `/dev/kvm` that runs ordinary
/// guests. Every VM test calls it first.
pub fn require_real_kvm() {
    let report = kvm::probe(&HostRoot::system());
    let why = report
        .error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    assert!(
        report.usable(),
        "VM tests need real KVM, found {}{why}. Run them with `make test` or \
         `tests/vm/run -- <test binary>`, which boots the L1 test VM when needed.",
        report.backend.describe(),
    );
    assert_ne!(report.backend, KvmBackend::Pvm);
}

/// The `runvm` binary built by this workspace (`target/<profile>/runvm`), found next to the
/// test executable; `RUNVM_BIN` overrides it.
pub fn runvm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNVM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/runvm
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    profile_dir.join("runvm")
}

/// The guest image built by `rootfs/build-guest`, named by `RUNVM_CONFIG`; panics with a
/// clear message if it is not there. Returns the configuration file's directory.
pub fn guest_image() -> PathBuf {
    let config = std::env::var_os("RUNVM_CONFIG").map(PathBuf::from).expect(
        "RUNVM_CONFIG must name the guest image's config.toml: run `make test`, or \
         `export RUNVM_CONFIG=$(rootfs/build-guest | tail -n1)` first",
    );
    assert!(config.is_file(), "{} does not exist", config.display());
    config
        .parent()
        .expect("a config file has a directory")
        .to_owned()
}

/// Writes a bundle in `dir`: a root file system with Debian's static busybox and relative
/// links for its applets, and a config.json running `args` with `env` in `cwd`.
pub fn busybox_bundle(dir: &std::path::Path, args: &[&str], env: &[&str], cwd: &str) -> PathBuf {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("create rootfs/bin");
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("/bin/busybox (package busybox-static, installed by packaging/host-deps)");
    for applet in [
        "sh", "echo", "cat", "head", "sleep", "pwd", "env", "yes", "kill", "true", "id", "dd",
        "hostname", "ls", "grep", "mkdir", "touch", "stat", "readlink", "tr", "cut", "wc", "mv",
        "stty", "tty",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    // The mounts `runc spec` writes.
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "rootfs" },
        "hostname": "runvm-test",
        "process": { "cwd": cwd, "args": args, "env": env, "user": { "uid": 0, "gid": 0 } },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config.json");
    dir.to_owned()
}

/// Changes the bundle's config.json with `edit`.
pub fn edit_config(bundle: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).expect("read config.json");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("parse config.json");
    edit(&mut config);
    std::fs::write(&path, config.to_string()).expect("write config.json");
}

/// How long a container of these tests may take before it counts as hung.
pub const HANG: std::time::Duration = std::time::Duration::from_secs(240);

/// Runs `dir/bundle` with state in `dir/state` and no stdin; checks the state root is empty
/// afterwards. Returns (exit code, stdout, stderr). A runvm still running after [`HANG`] is
/// killed and the test fails, instead of stalling the whole suite.
pub fn run_bundle(dir: &std::path::Path) -> (Option<i32>, String, String) {
    use std::io::Read;
    require_real_kvm();
    guest_image();
    let mut child = std::process::Command::new(runvm_bin())
        .arg("--root")
        .arg(dir.join("state"))
        .args(["run", "--bundle"])
        .arg(dir.join("bundle"))
        .arg("ctr")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start runvm");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = std::time::Instant::now() + HANG;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for runvm") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "runvm still running after {} s (killed); stdout so far: {:?}",
                HANG.as_secs(),
                out.join().unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let left = std::fs::read_dir(dir.join("state")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "state left behind");
    // The share's mounts lived in runvm's private namespace: none is visible here.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    assert!(
        !mounts.contains(dir.to_str().expect("UTF-8 temp path")),
        "a mount of the container leaked: {mounts}"
    );
    (status.code(), out, err)
}

/// The `key=value` lines of `out`, values trimmed.
pub fn key_values(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}
