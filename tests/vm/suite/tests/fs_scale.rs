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
