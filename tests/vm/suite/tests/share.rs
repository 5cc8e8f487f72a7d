//! A host directory exported over virtio-fs: the guest reads what the host put there, its
//! writes appear on the host, and symlinks pointing out of the share resolve inside the
//! guest, never to host files.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use runvm_vm_tests::{guest_image, require_real_kvm, runvm_bin};

#[test]
fn the_share_is_read_and_written_and_does_not_leak_the_host() {
    require_real_kvm();
    guest_image();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let share = dir.path();
    std::fs::write(share.join("hello.txt"), "from the host\n").unwrap();
    std::fs::create_dir(share.join("sub")).unwrap();
    std::fs::write(share.join("sub/deep.txt"), "deeper\n").unwrap();
    std::os::unix::fs::symlink("/etc", share.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc", share.join("up")).unwrap();
    let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();

    let out = Command::new(runvm_bin())
        .args(["debug", "share", "--dir"])
        .arg(share)
        .args(["--read", "hello.txt", "--read", "sub/deep.txt"])
        .args([
            "--read",
            "abs/hostname",
            "--read",
            "up/hostname",
            "--read",
            "../hostname",
        ])
        .args(["--write", "from-guest.txt=written in the guest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runvm debug share failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{report}");
    let reads = &report["reads"];
    assert_eq!(reads["hello.txt"]["text"], "from the host\n");
    assert_eq!(reads["sub/deep.txt"]["text"], "deeper\n");
    // Out-of-share links resolve in the guest, which has no /etc: an error, never host data.
    for escape in ["abs/hostname", "up/hostname", "../hostname"] {
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
    assert_eq!(report["writes"]["from-guest.txt"], "done");
    assert_eq!(
        std::fs::read_to_string(share.join("from-guest.txt")).unwrap(),
        "written in the guest"
    );
}
