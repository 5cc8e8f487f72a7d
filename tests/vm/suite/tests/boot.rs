//! runvm's own VMM boots the project's kernel and guest-init; guest-init says hello over
//! virtio-vsock, answers a ping, and powers the VM off when told.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use runvm_vm_tests::{guest_image, require_real_kvm, runvm_bin};

fn debug_boot(vcpus: u8, kernel: Option<&str>) -> serde_json::Value {
    require_real_kvm();
    let image = guest_image();
    let console = image.join(format!(
        "console-{vcpus}-{}.log",
        kernel.unwrap_or("default")
    ));
    let mut cmd = Command::new(runvm_bin());
    cmd.args([
        "debug",
        "boot",
        "--vcpus",
        &vcpus.to_string(),
        "--timeout",
        "120",
    ])
    .arg("--console-log")
    .arg(&console);
    if let Some(k) = kernel {
        cmd.arg("--kernel").arg(image.join(k));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "runvm debug boot --vcpus {vcpus} failed: {}\nconsole:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&console).unwrap_or_default()
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    eprintln!("debug boot --vcpus {vcpus}: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

fn assert_hello(report: &serde_json::Value, vcpus: u8) {
    let expected_release = std::fs::read_to_string(guest_image().join("kernel.release")).unwrap();
    assert_eq!(
        report["kernel_release"],
        expected_release.trim(),
        "the kernel we built"
    );
    assert_eq!(report["protocol"], guest_init::protocol::PROTOCOL_VERSION);
    assert_eq!(report["vcpus"], vcpus);
    assert_eq!(
        report["guest_online_cpus"], vcpus,
        "the guest brought every vCPU online"
    );
    assert_eq!(report["stop"], "power_off");
    let phases = &report["phases_ms"];
    for phase in [
        "vmm_setup_to_first_entry",
        "kernel_start_to_init",
        "init_to_hello",
        "power_off",
    ] {
        let v = phases[phase].as_f64().unwrap_or(-1.0);
        assert!(v >= 0.0, "phase {phase} = {v}");
    }
    assert!(report["peak_rss_kib"].as_i64().unwrap() > 0);
    assert!(
        report["exits"]
            .as_object()
            .unwrap()
            .contains_key("mmio_virtio"),
        "virtio was used"
    );
}

#[test]
fn boots_with_one_vcpu_says_hello_and_powers_off() {
    let report = debug_boot(1, None);
    assert_hello(&report, 1);
}

#[test]
fn boots_with_two_vcpus_says_hello_and_powers_off() {
    let report = debug_boot(2, None);
    assert_hello(&report, 2);
}

#[test]
fn boots_the_bzimage_through_the_64_bit_boot_protocol() {
    let report = debug_boot(2, Some("bzImage"));
    assert_hello(&report, 2);
}

/// Boots with an extra kernel command line that makes the kernel panic before init
/// (`rdinit=` names no file); returns runvm's exit status and stderr.
fn boot_failing(extra_cmdline: &str) -> (Option<i32>, String) {
    require_real_kvm();
    let start = std::time::Instant::now();
    let out = Command::new(runvm_bin())
        .args([
            "debug",
            "boot",
            "--timeout",
            "120",
            "--cmdline",
            extra_cmdline,
        ])
        .output()
        .unwrap();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(100),
        "a dead guest must not wait out the timeout"
    );
    assert!(out.stdout.is_empty(), "no report for a failed boot");
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_guest_that_panics_before_hello_is_reported_with_its_console() {
    let (code, stderr) = boot_failing("rdinit=/no-such-init init=/no-such-init");
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("the VM stopped (reset) before the guest connected"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Kernel panic"),
        "the console's last lines: {stderr}"
    );
}

#[test]
fn a_triple_fault_is_named() {
    // reboot=t restarts through a triple fault instead of the i8042.
    let (code, stderr) = boot_failing("reboot=t rdinit=/no-such-init init=/no-such-init");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("the VM stopped (triple fault"), "{stderr}");
}
