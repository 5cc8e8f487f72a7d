//! The file server holds a bounded number of host descriptors whatever the container does:
//! a container writes, stats and reads back thousands of files (more than the server's
//! descriptor cache), while this test counts the sandbox's open descriptors
//! (`/proc/PID/fd`) as it runs. With one descriptor per inode the guest caches (what
//! fuse-backend-rs's PassthroughFs kept), the count would pass the number of files.
//! (100,000 files go through the device itself in the host tests: `fs/tests/scale.rs`.)
//!
//! `RUNVM_FS_SCALE_FILES` sets the number of files (at least the default, 3,000):
//! `make test` keeps the default, as each file costs a few FUSE round trips and each round
//! trip ~1.5 ms in the L1 test VM; the 100,000 runs by hand.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use runvm_vm_tests::busybox_bundle;
use runvm_vm_tests::shim::{as_shim, assert_nothing_left, create, runvm, wait_for};

/// Files the container makes by default: three times the server's descriptor cache (1,024).
const FILES: usize = 3_000;
/// The most descriptors the sandbox may hold: the cache, the open files of the moment, the
/// VMM's own (vCPU, KVM, eventfds, sockets), with room to spare, and still far below FILES.
const MOST_FDS: usize = 1_400;

#[test]
fn thousands_of_files_with_a_bounded_number_of_host_descriptors() {
    let files = std::env::var("RUNVM_FS_SCALE_FILES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(FILES, |n| n.max(FILES));
    let (dir, root) = as_shim();
    // Files in 3 directories, created, stat'ed (sizes: one per number of digits) and read.
    let script = format!(
        "set -e; for d in 0 1 2; do mkdir -p /many/$d; done
         i=0; while [ $i -lt {files} ]; do echo content-$i > /many/$((i % 3))/f$i; i=$((i+1)); done
         echo files=$(find /many -type f | wc -l)
         echo sizes=$(find /many -type f | xargs stat -c %s | sort -u | wc -l)
         echo lines=$(find /many -type f | xargs cat | grep -c '^content-')
         echo last=$(cat /many/$(( ({files} - 1) % 3 ))/f$(({files} - 1)))"
    );
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", &script],
        &["PATH=/bin"],
        "/",
    );
    for applet in ["find", "sort", "mkdir", "xargs"] {
        let _ = std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin").join(applet));
    }
    let out = dir.path().join("out");
    let pid = create(
        &root,
        &bundle,
        "scale1",
        Stdio::from(std::fs::File::create(&out).unwrap()),
    );
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let (most, done) = (most.clone(), done.clone());
        std::thread::spawn(move || {
            let fds = format!("/proc/{pid}/fd");
            while !done.load(Ordering::SeqCst) {
                if let Ok(entries) = std::fs::read_dir(&fds) {
                    most.fetch_max(entries.count(), Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    assert_eq!(runvm(&root, &["start", "scale1"], Stdio::null()).0, Some(0));
    let status = wait_for(pid);
    done.store(true, Ordering::SeqCst);
    counter.join().unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "wait status {status:#x}: {text}"
    );
    let values = runvm_vm_tests::key_values(&text);
    assert_eq!(values["files"], files.to_string(), "{text}");
    // "content-N\n": 10 + digits bytes, one size per number of digits of 0..files-1.
    let sizes = (files - 1).to_string().len();
    assert_eq!(values["sizes"], sizes.to_string(), "{text}");
    assert_eq!(values["lines"], files.to_string(), "{text}");
    assert_eq!(values["last"], format!("content-{}", files - 1), "{text}");
    let most = most.load(Ordering::SeqCst);
    assert!(
        most > 0 && most <= MOST_FDS,
        "the sandbox held up to {most} descriptors (at most {MOST_FDS} expected)"
    );
    eprintln!("sandbox descriptors at most: {most} for {files} files");
    assert_eq!(
        runvm(&root, &["delete", "scale1"], Stdio::null()).0,
        Some(0)
    );
    assert_nothing_left(dir.path(), &root, "scale1");
}

/// A mount of this test, detached when dropped.
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn new(kind: &str, target: &std::path::Path, data: &str) -> Mounted {
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (source, kind, data) = (c(kind), c(kind), c(data));
        let target_c = c(target.to_str().unwrap());
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let ret = unsafe {
            libc::mount(
                source.as_ptr(),
                target_c.as_ptr(),
                kind.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            ret,
            0,
            "mount {kind:?} on {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        );
        Mounted(target.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// `rm -rf` of directories holding more entries than one directory listing reply, on a
/// root file system that is an overlayfs mount whose layers are on tmpfs (as docker's are
/// with its data root on tmpfs): a directory of the image's layer (merged) and one the
/// container made (in the upper layer). On tmpfs before Linux 6.6 (L1's kernel) an offset
/// counts entries, so a listing that seeks back after deletions skips entries and busybox's
/// `rm` fails with "Directory not empty" (it did before `dir_stream.rs`).
#[test]
fn rm_rf_of_large_directories_on_an_overlay_root() {
    let dir = tempfile::tempdir().unwrap();
    let script = "i=0; mkdir /made; while [ $i -lt 300 ]; do touch /made/f$i; i=$((i+1)); done
        echo listed=$(ls /many | wc -l),$(ls /made | wc -l)
        rm -rf /many /made && echo removed
        ls -d /many /made 2>/dev/null; echo done";
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", script],
        &["PATH=/bin"],
        "/",
    );
    let _ = std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin/rm"));
    // The layers on a tmpfs of their own, outside the test's directory (whose mounts
    // run_bundle checks are gone).
    let layers = tempfile::tempdir().unwrap();
    let _tmpfs = Mounted::new("tmpfs", layers.path(), "mode=755");
    let lower = layers.path().join("lower");
    for sub in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(layers.path().join(sub)).unwrap();
    }
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(bundle.join("rootfs/."))
        .arg(&lower)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir(lower.join("many")).unwrap();
    for i in 0..300 {
        std::fs::write(lower.join(format!("many/f{i}")), b"x").unwrap();
    }
    let merged = layers.path().join("merged");
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        layers.path().join("upper").display(),
        layers.path().join("work").display()
    );
    let overlay = Mounted::new("overlay", &merged, &data);
    runvm_vm_tests::edit_config(&bundle, |config| {
        config["root"]["path"] = serde_json::json!(merged.to_str().unwrap());
    });
    let (code, out, err) = runvm_vm_tests::run_bundle(dir.path());
    drop(overlay);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("listed=300,300"), "{out}{err}");
    assert!(out.contains("removed\ndone"), "{out}{err}");
}
