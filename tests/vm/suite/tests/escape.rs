//! Escapes through virtio-fs by file handle: forged handles (open_by_handle_at, as root with
//! every capability) reach only what the guest already has from the share, never a host file
//! outside it.

#![allow(clippy::unwrap_used)]

use runvm_vm_tests::{busybox_bundle, key_values, run_bundle};

#[test]
fn forged_file_handles_reach_nothing_outside_the_share() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let marker = format!("runvm-marker-{}", std::process::id());
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["/bin/handles", "/inside", &marker],
        &["PATH=/bin"],
        "/",
    );
    // The probe, built static for the guest from its C source.
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/handles.c");
    let built = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(bundle.join("rootfs/bin/handles"))
        .arg(&source)
        .status()
        .expect("gcc (package gcc, installed by packaging/host-deps)");
    assert!(built.success());
    // The marker is in one file inside the share and in host files outside it: the probe
    // must find the inside one only.
    std::fs::write(bundle.join("rootfs/inside"), &marker).unwrap();
    std::fs::write(dir.path().join("outside"), &marker).unwrap();
    std::fs::write(dir.path().join("bundle/outside-too"), &marker).unwrap();
    let (code, out, err) = run_bundle(dir.path());
    assert_eq!(code, Some(0), "{err}\n{out}");
    let v = key_values(&out);
    assert_eq!(v.get("probe").map(String::as_str), Some("done"), "{out}");
    // Handles of files the guest holds do open (so the probe works)...
    let opened: u32 = v["opened"].parse().unwrap();
    assert!(opened >= 1, "{out}");
    // ...and only the inside file carries the marker.
    assert_eq!(v.get("leaks").map(String::as_str), Some("1"), "{out}");
}
