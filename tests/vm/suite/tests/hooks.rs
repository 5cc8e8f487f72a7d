//! OCI hooks and the sandbox's network namespace, driven through the CLI as containerd-shim
//! does: every stage in order with the right state, on the host, in the sandbox's network
//! namespace; a failing or hanging create-time hook fails `create` and leaves nothing.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runvm_vm_tests::shim::{as_shim, create, runvm, state_of, wait_for};
use runvm_vm_tests::{busybox_bundle, edit_config};

const STAGES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A hook recording its state, its order and its parent's network namespace in `out`.
fn recorder(out: &Path, stage: &str) -> serde_json::Value {
    let o = out.display();
    let script = format!(
        "cat > {o}/{stage}.json; echo {stage} >> {o}/order; readlink /proc/$PPID/ns/net > {o}/{stage}.netns"
    );
    serde_json::json!({ "path": "/bin/sh", "args": ["sh", "-c", script] })
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn netns_of(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .display()
        .to_string()
}

fn order(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("order"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn hooks_run_in_order_with_the_sandboxs_state_and_network_namespace() {
    let (dir, root) = as_shim();
    let out = dir.path().join("hooks");
    std::fs::create_dir(&out).unwrap();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &["PATH=/bin"], "/");
    edit_config(&bundle, |c| {
        c["annotations"] = serde_json::json!({ "org.example/k": "v" });
        c["linux"] =
            serde_json::json!({ "namespaces": [{ "type": "pid" }, { "type": "network" }] });
        for stage in STAGES {
            c["hooks"][stage] = serde_json::json!([recorder(&out, stage)]);
        }
    });

    let pid = create(&root, &bundle, "h1", Stdio::null());
    assert_eq!(order(&out), STAGES[..3]);
    for stage in &STAGES[..3] {
        let s = read_json(&out.join(format!("{stage}.json")));
        assert_eq!(s["status"], "creating", "{stage}: {s}");
        assert_eq!(s["pid"], pid, "{stage}: {s}");
        assert_eq!(s["id"], "h1");
        assert_eq!(s["bundle"], bundle.to_str().unwrap());
        assert_eq!(s["annotations"]["org.example/k"], "v");
    }
    // The hooks' parent is the sandbox, in a network namespace of its own.
    let sandbox_ns = netns_of(&pid.to_string());
    assert_ne!(sandbox_ns, netns_of("self"));
    let hook_ns = std::fs::read_to_string(out.join("prestart.netns")).unwrap();
    assert_eq!(hook_ns.trim(), sandbox_ns);

    let (code, err) = runvm(&root, &["start", "h1"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        order(&out),
        STAGES[..5],
        "poststart runs before start returns"
    );
    let s = read_json(&out.join("startContainer.json"));
    assert_eq!(
        (s["status"].as_str(), &s["pid"]),
        (Some("created"), &pid.into())
    );
    let s = read_json(&out.join("poststart.json"));
    assert_eq!(
        (s["status"].as_str(), &s["pid"]),
        (Some("running"), &pid.into())
    );

    let status = wait_for(pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(order(&out), STAGES[..5], "poststop waits for delete");
    let (code, err) = runvm(&root, &["delete", "h1"], Stdio::null());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(order(&out), STAGES);
    let s = read_json(&out.join("poststop.json"));
    assert_eq!(s["status"], "stopped");
    assert!(s.get("pid").is_none(), "{s}");
    assert!(!root.join("h1").exists());
}

/// Waits until this subreaper has no child left; fails after a minute.
fn no_children_left() {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut status = 0;
        // SAFETY: reaping any child of this process; `status` is a valid int.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc < 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a child of create is still alive"
        );
        if rc == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_failing_or_hanging_create_hook_fails_create_and_leaves_nothing() {
    let (dir, root) = as_shim();
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &["PATH=/bin"], "/");
    let failing = serde_json::json!({ "path": "/bin/sh",
        "args": ["sh", "-c", "echo no network for you >&2; exit 7"] });
    let hanging =
        serde_json::json!({ "path": "/bin/sleep", "args": ["sleep", "600"], "timeout": 1 });
    for (n, (stage, hook, words)) in [
        ("prestart", failing, "no network for you"),
        ("createRuntime", hanging, "timeout of 1 s"),
    ]
    .into_iter()
    .enumerate()
    {
        edit_config(&bundle, |c| {
            c["hooks"] = serde_json::json!({ stage: [hook] });
        });
        let id = format!("bad{n}");
        let pid_file = dir.path().join(format!("{id}.pid"));
        let (code, err) = runvm(
            &root,
            &[
                "create",
                "--bundle",
                bundle.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                &id,
            ],
            Stdio::null(),
        );
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("error running {stage} hook #0")) && err.contains(words),
            "{err}"
        );
        assert!(!pid_file.exists());
        assert!(!root.join(&id).exists());
        no_children_left();
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.path().to_str().unwrap()), "{mounts}");
}

#[test]
fn the_sandbox_joins_a_given_network_namespace_or_keeps_the_hosts() {
    let (dir, root) = as_shim();
    let name = format!("runvm-test-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(made.success(), "ip netns add {name}");
    let path = format!("/run/netns/{name}");
    let bundle = busybox_bundle(&dir.path().join("bundle"), &["true"], &["PATH=/bin"], "/");
    let cases = [
        (
            serde_json::json!([{ "type": "network", "path": path }]),
            "joined",
        ),
        (serde_json::json!([{ "type": "pid" }]), "host"),
    ];
    for (n, (namespaces, case)) in cases.into_iter().enumerate() {
        edit_config(&bundle, |c| {
            c["linux"] = serde_json::json!({ "namespaces": namespaces })
        });
        let id = format!("n{n}");
        let pid = create(&root, &bundle, &id, Stdio::null());
        let got = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .ino();
        let want = match case {
            "joined" => std::fs::metadata(&path).unwrap().ino(),
            _ => std::fs::metadata("/proc/self/ns/net").unwrap().ino(),
        };
        assert_eq!(got, want, "{case}");
        assert_eq!(state_of(&root, &id)["status"], "created");
        assert_eq!(
            runvm(&root, &["kill", &id, "KILL"], Stdio::null()).0,
            Some(0)
        );
        wait_for(pid);
        assert_eq!(runvm(&root, &["delete", &id], Stdio::null()).0, Some(0));
    }
    let _ = Command::new("ip").args(["netns", "delete", &name]).status();
}
