//! A share assembled the way containers will get it (a root file system and a bind source,
//! bind-mounted in runvm's private mount namespace) and exported over virtio-fs: the guest
//! reads what the host put there, its writes appear on the host, symlinks pointing out of
//! the share resolve inside the guest, never to host files, and no mount is left behind; a
//! container may hold more files than the default soft limit on open descriptors.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use runvm_vm_tests::{guest_image, require_real_kvm, runvm_bin};

#[test]
fn the_share_is_read_and_written_and_does_not_leak_the_host() {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "from the host\n").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/deep.txt"), "deeper\n").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc", root.join("up")).unwrap();
    let bind = dir.path().join("bound.txt");
    std::fs::write(&bind, "a bound file\n").unwrap();
    let at = dir.path().join("assembled");
    let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let escapes = [
        "rootfs/abs/hostname",
        "rootfs/up/hostname",
        "../hostname",
        "rootfs/../../hostname",
    ];

    let mut cmd = Command::new(runvm_bin());
    cmd.args(["debug", "share", "--dir"])
        .arg(&root)
        .arg("--bind")
        .arg(&bind)
        .arg("--at")
        .arg(&at);
    for read in ["rootfs/hello.txt", "rootfs/sub/deep.txt", "binds/0"]
        .iter()
        .chain(&escapes)
    {
        cmd.args(["--read", read]);
    }
    cmd.args(["--write", "rootfs/from-guest.txt=written in the guest"]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "runvm debug share failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{report}");
    let reads = &report["reads"];
    assert_eq!(reads["rootfs/hello.txt"]["text"], "from the host\n");
    assert_eq!(reads["rootfs/sub/deep.txt"]["text"], "deeper\n");
    assert_eq!(reads["binds/0"]["text"], "a bound file\n");
    // Out-of-share links resolve in the guest, which has no /etc: an error, never host data.
    for escape in escapes {
        let r = &reads[escape];
        assert!(
            r.get("error").is_some(),
            "{escape} must fail in the guest: {r}"
        );
        if !host_hostname.is_empty() {
            assert!(
                !r.to_string().contains(host_hostname.trim()),
                "{escape} leaked: {r}"
            );
        }
    }
    assert_eq!(report["writes"]["rootfs/from-guest.txt"], "done");
    assert_eq!(
        std::fs::read_to_string(root.join("from-guest.txt")).unwrap(),
        "written in the guest"
    );
    // The share was assembled in runvm's own mount namespace: nothing is left behind here.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(at.to_str().unwrap()),
        "a share mount leaked to the host"
    );
    assert!(!at.exists(), "the assembly point was not removed");
}

#[test]
fn a_container_can_hold_more_files_than_the_default_soft_limit() {
    // The server holds a host descriptor per inode the guest knows: 2,000 fresh files go
    // past the usual soft limit of 1024 open files (the hard limit is 4096 in the L1 test
    // VM, far more under systemd).
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let script = "mkdir /many && cd /many && i=0; \
                  while [ $i -lt 2000 ]; do : > f$i || exit 1; i=$((i+1)); done; \
                  ls | wc -l; cat f1999 && echo read-back";
    runvm_vm_tests::busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", script],
        &["PATH=/bin"],
        "/",
    );
    let (code, out, err) = runvm_vm_tests::run_bundle(dir.path());
    assert_eq!(code, Some(0), "{err}\n{out}");
    assert_eq!(out, "2000\nread-back\n", "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("bundle/rootfs/many"))
            .unwrap()
            .count(),
        2000
    );
}
