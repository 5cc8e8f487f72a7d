//! `runvm check` on a host with real KVM and the guest image of this checkout: the KVM line
//! says usable hardware KVM (inside the L1 test VM, AMD SVM through kvm_amd), and with the
//! kernel and initramfs installed runvm can run containers: exit 0.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use runvm_vm_tests::{guest_image, require_real_kvm, runvm_bin};

#[test]
fn check_reports_usable_hardware_kvm() {
    require_real_kvm();
    guest_image();
    let out = Command::new(runvm_bin())
        .args(["check", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "runvm check --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let kvm = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kvm")
        .unwrap();
    assert_eq!(kvm["verdict"], "ok", "{kvm}");
    let backend = report["kvm"]["backend"].as_str().unwrap();
    assert!(
        backend == "hardware_svm" || backend == "hardware_vmx",
        "backend {backend}"
    );
    assert_eq!(report["kvm"]["api_version"], 12);
    assert_eq!(report["ok"], true, "{report}");
    assert!(out.status.success());

    // The human form says the same in one line.
    let text = Command::new(runvm_bin()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let line = text.lines().find(|l| l.starts_with("kvm ")).unwrap();
    assert!(
        line.contains(" ok ") && line.contains("hardware KVM"),
        "{line}"
    );
}
