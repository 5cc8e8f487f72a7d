//! What ordinary software expects of the system around it, in the guest as under runc:
//! loopback up with 127.0.0.1 and ::1, IPv6 sockets, the netfilter tables iptables uses, and
//! a process that allocates past the container's memory limit killed by the OOM killer at
//! that limit (exit 137, the kill counted in the host cgroup where engines look), not
//! refused memory because the VM is small.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;

use runvm_vm_tests::shim::{as_shim, assert_nothing_left, create, runvm, wait_for};
use runvm_vm_tests::{busybox_bundle, edit_config, run_bundle};

/// Busybox applets the scripts below use beyond the bundle's own.
const MORE_APPLETS: &[&str] = &["httpd", "wget", "test", "rm", "sed"];

fn add_applets(bundle: &std::path::Path) {
    for applet in MORE_APPLETS {
        std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin").join(applet)).unwrap();
    }
}

#[test]
fn loopback_ipv6_and_netfilter_are_there() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    // A web server on [::]:8080 (IPv6, dual stack, as nginx's stock site), fetched over
    // 127.0.0.1 and ::1; then which netfilter tables the kernel offers.
    let script = "set -e
        echo lo_flags=$(cat /sys/class/net/lo/flags)
        echo lo6=$(grep ' lo$' /proc/net/if_inet6 | cut -d' ' -f1)
        mkdir -p /www && echo served > /www/index.html
        httpd -p 8080 -h /www
        echo v4=$(wget -q -O - http://127.0.0.1:8080/index.html)
        echo v6=$(wget -q -O - 'http://[::1]:8080/index.html')
        for t in ip_tables_names ip6_tables_names; do
            test -e /proc/net/$t && echo $t=yes
        done
        test -e /proc/sys/net/netfilter/nf_conntrack_max && echo conntrack=yes
        echo done";
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", script],
        &["PATH=/bin"],
        "/",
    );
    add_applets(&bundle);
    // A new network namespace, as docker asks for: still the guest's, with its loopback.
    edit_config(&bundle, |c| {
        c["linux"]["namespaces"] = serde_json::json!([
            { "type": "pid" }, { "type": "mount" }, { "type": "network" }
        ]);
    });
    let (code, out, err) = run_bundle(dir.path());
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let values = runvm_vm_tests::key_values(&out);
    // IFF_UP | IFF_LOOPBACK (| IFF_RUNNING, 0x40, once the kernel marks it).
    let flags = u32::from_str_radix(values["lo_flags"].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x9, 0x9, "{out}");
    assert_eq!(values["lo6"], "00000000000000000000000000000001", "{out}");
    assert_eq!(values["v4"], "served", "{out}");
    assert_eq!(values["v6"], "served", "{out}");
    assert_eq!(
        values.get("ip_tables_names").map(String::as_str),
        Some("yes"),
        "{out}"
    );
    assert_eq!(
        values.get("ip6_tables_names").map(String::as_str),
        Some("yes"),
        "{out}"
    );
    assert_eq!(
        values.get("conntrack").map(String::as_str),
        Some("yes"),
        "{out}"
    );
}

/// The `oom_kill` count of a `memory.events` file (0 if unreadable).
fn oom_kills(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn allocating_past_the_memory_limit_is_an_oom_kill_seen_on_the_host() {
    let (dir, root) = as_shim();
    // 256 MiB asked at once by a container limited to 64 MiB, in a VM of 128 MiB: more
    // than the VM has, so a guest that refused the allocation would make sh fail with "out
    // of memory" (exit 1 or 2), where runc's kernel grants it and the OOM killer ends it
    // at the limit.
    let hog = "x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived ${#x}";
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", hog],
        &["PATH=/bin"],
        "/",
    );
    edit_config(&bundle, |c| {
        c["linux"]["resources"] = serde_json::json!({ "memory": { "limit": 64 << 20 } });
    });
    let out = dir.path().join("out");
    let pid = create(
        &root,
        &bundle,
        "oom1",
        Stdio::from(std::fs::File::create(&out).unwrap()),
    );
    // The host cgroup the engine watches (runc's default path, /<id>).
    let events = std::path::Path::new("/sys/fs/cgroup/oom1/memory.events");
    assert!(
        events.exists(),
        "the sandbox's host cgroup has no memory controller"
    );
    assert_eq!(oom_kills(events), 0);
    assert_eq!(runvm(&root, &["start", "oom1"], Stdio::null()).0, Some(0));
    let status = wait_for(pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "not killed by SIGKILL: wait status {status:#x}, stdout {:?}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    assert!(
        oom_kills(events) >= 1,
        "no OOM kill counted in {}: {}",
        events.display(),
        std::fs::read_to_string(events).unwrap_or_default()
    );
    let state = runvm_vm_tests::shim::state_of(&root, "oom1");
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(runvm(&root, &["delete", "oom1"], Stdio::null()).0, Some(0));
    assert_nothing_left(dir.path(), &root, "oom1");
}
