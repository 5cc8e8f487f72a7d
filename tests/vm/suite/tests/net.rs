//! The guest's NICs stand for the interfaces of the network namespace the container joins
//! (`linux.namespaces[network].path`), driven through the CLI as containerd-shim does. Each
//! test builds its own namespace with iproute2: a veth pair, `eth0` inside with
//! 10.X.0.2/24 and a default route via 10.X.0.1, the peer here with 10.X.0.1/24 (X differs
//! per test, so the tests can run side by side). Checked: the guest's eth0 as the namespace
//! has it and traffic both ways, whether the engine wires before create or between create and
//! start; the namespace as the engine made it after delete (no tap, no ingress qdisc), also
//! after a sandbox killed with SIGKILL; no descriptor leak over many cycles (10 by default,
//! `RUNVM_NET_CYCLES=200` by hand); a second container joining the namespace gets loopback
//! only and leaves the first one's wiring alone.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::RwLock;

use runvm_vm_tests::shim::{as_shim, assert_nothing_left, read_pid, runvm, state_of, wait_for};
use runvm_vm_tests::{busybox_bundle, edit_config};

/// Taken for writing by the test that counts this process's descriptors, for reading by the
/// others: nothing else opens descriptors while it counts.
static FDS: RwLock<()> = RwLock::new(());

/// Runs `args` on the host; panics with its stderr unless it succeeds; returns its stdout.
fn host(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace and the host-side links of its fixture; both are removed when
/// dropped, also when the test failed.
struct Netns {
    name: String,
    /// 10.X.0.0/24 is this namespace's subnet.
    x: u8,
    /// The veth end in the test's own namespace.
    peer: String,
    /// The end that becomes the namespace's eth0, while it is still here.
    inner: String,
}

impl Netns {
    /// An empty namespace `rvt-<pid>-X` (loopback only).
    fn empty(x: u8) -> Netns {
        let pid = std::process::id();
        let ns = Netns {
            name: format!("rvt-{pid}-{x}"),
            x,
            peer: format!("rvh{x}-{pid}"),
            inner: format!("rvi{x}-{pid}"),
        };
        host(&["ip", "netns", "add", &ns.name]);
        ns
    }

    /// A namespace with its eth0 wired to a peer here, up and addressed.
    fn wired(x: u8) -> Netns {
        let ns = Netns::empty(x);
        host(&[
            "ip", "link", "add", &ns.peer, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.name,
        ]);
        ns.configure_peer();
        ns.configure_eth0();
        ns
    }

    /// The veth pair made with both ends here, as a CNI plugin starts it.
    fn add_pair(&self) {
        host(&[
            "ip",
            "link",
            "add",
            &self.peer,
            "type",
            "veth",
            "peer",
            "name",
            &self.inner,
        ]);
        self.configure_peer();
    }

    /// Moves the inner end into the namespace, renames it eth0 and configures it.
    fn move_in(&self) {
        host(&["ip", "link", "set", &self.inner, "netns", &self.name]);
        self.ip(&["link", "set", &self.inner, "name", "eth0"]);
        self.configure_eth0();
    }

    fn configure_peer(&self) {
        let address = format!("10.{}.0.1/24", self.x);
        host(&["ip", "addr", "add", &address, "dev", &self.peer]);
        host(&["ip", "link", "set", &self.peer, "up"]);
    }

    fn configure_eth0(&self) {
        self.ip(&["addr", "add", &self.guest_cidr(), "dev", "eth0"]);
        self.ip(&["link", "set", "eth0", "up"]);
        self.ip(&["route", "add", "default", "via", &self.gateway()]);
    }

    /// `/run/netns/<name>`.
    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// eth0's address with its prefix, 10.X.0.2/24.
    fn guest_cidr(&self) -> String {
        format!("10.{}.0.2/24", self.x)
    }

    /// The peer's address, 10.X.0.1.
    fn gateway(&self) -> String {
        format!("10.{}.0.1", self.x)
    }

    /// `ip -n <name> ARGS`.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        host(&all)
    }

    /// The MAC of the namespace's eth0.
    fn mac(&self) -> String {
        let show = self.ip(&["link", "show", "eth0"]);
        show.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {show:?}"))
            .to_owned()
    }

    /// The namespace's links whose name starts with rvtap.
    fn taps(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .filter(|name| name.starts_with("rvtap"))
            .collect()
    }

    /// `tc -n <name> qdisc show dev eth0`.
    fn eth0_qdiscs(&self) -> String {
        host(&["tc", "-n", &self.name, "qdisc", "show", "dev", "eth0"])
    }

    /// Asserts the namespace is as the engine made it: no tap, no ingress qdisc on eth0,
    /// eth0's address in place.
    fn assert_as_made(&self, when: &str) {
        assert_eq!(self.taps(), Vec::<String>::new(), "taps left {when}");
        let qdiscs = self.eth0_qdiscs();
        assert!(
            !qdiscs.contains("ingress"),
            "an ingress qdisc is left on eth0 {when}: {qdiscs}"
        );
        let addresses = self.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(
            addresses.contains(&format!("inet {} ", self.guest_cidr())),
            "eth0 lost its address {when}: {addresses}"
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its eth0 and so the pair; a pair never moved in
        // is deleted here.
        let quiet = |args: &[&str]| {
            let _ = Command::new(args[0])
                .args(&args[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["ip", "netns", "delete", &self.name]);
        quiet(&["ip", "link", "delete", &self.peer]);
        quiet(&["ip", "link", "delete", &self.inner]);
    }
}

/// A busybox bundle in `dir/name` running `args` in the network namespace `ns`, with the
/// `ip` and `ping` applets.
fn bundle_in(dir: &Path, name: &str, args: &[&str], ns: &Netns) -> PathBuf {
    let bundle = busybox_bundle(&dir.join(name), args, &["PATH=/bin"], "/");
    for applet in ["ip", "ping"] {
        std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin").join(applet)).unwrap();
    }
    let path = ns.path();
    edit_config(&bundle, |c| {
        let namespaces = &mut c["linux"]["namespaces"];
        if !namespaces.is_array() {
            *namespaces = serde_json::json!([]);
        }
        namespaces
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({ "type": "network", "path": path }));
    });
    bundle
}

/// `runvm ARGS`, which must succeed; returns its stderr.
fn ok(root: &Path, args: &[&str]) -> String {
    let (code, err) = runvm(root, args, Stdio::null());
    assert_eq!(code, Some(0), "runvm {args:?} failed: {err}");
    err
}

/// `runvm create` with a pid file, the container's stdout to `out` (or nowhere); returns the
/// sandbox's pid and create's stderr (the sandbox's, up to then).
fn create(root: &Path, bundle: &Path, id: &str, out: Option<&Path>) -> (i32, String) {
    let pid_file = root.with_file_name(format!("{id}.pid"));
    let stdout = out.map_or(Stdio::null(), |p| {
        Stdio::from(std::fs::File::create(p).unwrap())
    });
    let args = [
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        id,
    ];
    let (code, err) = runvm(root, &args, stdout);
    assert_eq!(code, Some(0), "runvm {args:?} failed: {err}");
    (read_pid(&pid_file), err)
}

/// Waits for the sandbox `pid` and asserts its process exited with 0.
fn exits_0(pid: i32, out: &Path) {
    let status = wait_for(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "wait status {status:#x}; output: {}",
        std::fs::read_to_string(out).unwrap_or_default()
    );
}

/// What the guest says of its eth0: address, MAC, and whether the peer answered a ping.
fn eth0_report(gateway: &str) -> String {
    format!(
        "ip -o -4 addr show dev eth0; cat /sys/class/net/eth0/address; \
         ping -c 1 -W 10 {gateway} >/dev/null && echo PING-OK"
    )
}

/// Asserts the guest's report shows the namespace's eth0 and a ping answered.
fn assert_report(out: &str, ns: &Netns, mac: &str) {
    assert!(
        out.contains(&format!("inet {} ", ns.guest_cidr())),
        "the guest's eth0 lacks {}: {out}",
        ns.guest_cidr()
    );
    assert!(
        out.lines().any(|l| l.trim() == mac),
        "the guest's eth0 lacks the MAC {mac}: {out}"
    );
    assert!(
        out.contains("PING-OK"),
        "{} did not answer: {out}",
        ns.gateway()
    );
}

#[test]
fn a_namespace_wired_before_create_is_the_guests_and_is_left_as_made() {
    let _shared = FDS.read().unwrap_or_else(|p| p.into_inner());
    let (dir, root) = as_shim();
    let ns = Netns::wired(201);
    let mac = ns.mac();
    let report = eth0_report(&ns.gateway());
    let bundle = bundle_in(dir.path(), "bundle", &["sh", "-c", &report], &ns);
    let out = dir.path().join("out");
    let (pid, _) = create(&root, &bundle, "net-create", Some(&out));
    // The NIC is wired at create: a tap in the namespace and eth0 redirected to it.
    assert_eq!(ns.taps(), ["rvtap0"], "after create");
    let qdiscs = ns.eth0_qdiscs();
    assert!(qdiscs.contains("ingress"), "after create: {qdiscs}");
    ok(&root, &["start", "net-create"]);
    exits_0(pid, &out);
    assert_report(&std::fs::read_to_string(&out).unwrap(), &ns, &mac);
    // The sandbox unwired its NIC as it ended.
    ns.assert_as_made("after the sandbox ended");
    ok(&root, &["delete", "net-create"]);
    ns.assert_as_made("after delete");
    assert_nothing_left(dir.path(), &root, "net-create");
}

#[test]
fn a_namespace_wired_between_create_and_start_is_the_guests() {
    let _shared = FDS.read().unwrap_or_else(|p| p.into_inner());
    let (dir, root) = as_shim();
    let ns = Netns::empty(202);
    ns.add_pair();
    let report = eth0_report(&ns.gateway());
    let bundle = bundle_in(dir.path(), "bundle", &["sh", "-c", &report], &ns);
    let out = dir.path().join("out");
    let (pid, _) = create(&root, &bundle, "net-start", Some(&out));
    assert_eq!(ns.taps(), Vec::<String>::new(), "nothing to wire at create");
    // As containerd's CNI does: the veth end moves in, is renamed and configured.
    ns.move_in();
    let mac = ns.mac();
    ok(&root, &["start", "net-start"]);
    exits_0(pid, &out);
    assert_report(&std::fs::read_to_string(&out).unwrap(), &ns, &mac);
    ok(&root, &["delete", "net-start"]);
    ns.assert_as_made("after delete");
    assert_nothing_left(dir.path(), &root, "net-start");
}

#[test]
fn delete_clears_the_redirect_a_killed_sandbox_left() {
    let _shared = FDS.read().unwrap_or_else(|p| p.into_inner());
    let (dir, root) = as_shim();
    let ns = Netns::wired(203);
    let bundle = bundle_in(dir.path(), "bundle", &["sleep", "1000"], &ns);
    let (pid, _) = create(&root, &bundle, "net-kill9", None);
    ok(&root, &["start", "net-kill9"]);
    assert_eq!(state_of(&root, "net-kill9")["status"], "running");
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = wait_for(pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{status:#x}"
    );
    // The sandbox could not undo its redirect: eth0's ingress qdisc still sends its frames
    // to a tap that died with the sandbox.
    let qdiscs = ns.eth0_qdiscs();
    assert!(
        qdiscs.contains("ingress"),
        "expected the dangling ingress qdisc after SIGKILL: {qdiscs}"
    );
    assert_eq!(state_of(&root, "net-kill9")["status"], "stopped");
    ok(&root, &["delete", "net-kill9"]);
    ns.assert_as_made("after delete");
    assert_nothing_left(dir.path(), &root, "net-kill9");
}

#[test]
fn cycles_on_one_namespace_leave_it_as_made_and_leak_no_descriptor() {
    let _alone = FDS.write().unwrap_or_else(|p| p.into_inner());
    // 10 by default; 200 by hand: RUNVM_NET_CYCLES=200.
    let cycles: usize = std::env::var("RUNVM_NET_CYCLES")
        .map(|v| v.parse().expect("RUNVM_NET_CYCLES is a number"))
        .unwrap_or(10);
    let (dir, root) = as_shim();
    let ns = Netns::wired(204);
    let bundle = bundle_in(dir.path(), "bundle", &["true"], &ns);
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    for n in 0..cycles {
        let (pid, _) = create(&root, &bundle, "net-cycle", None);
        ok(&root, &["start", "net-cycle"]);
        exits_0(pid, Path::new("/dev/null"));
        ok(&root, &["delete", "net-cycle"]);
        ns.assert_as_made(&format!("after cycle {n}"));
    }
    assert_eq!(
        fds(),
        before,
        "descriptors of this process after {cycles} cycles"
    );
    assert_nothing_left(dir.path(), &root, "net-cycle");
}

#[test]
fn a_second_container_in_the_namespace_gets_loopback_only() {
    let _shared = FDS.read().unwrap_or_else(|p| p.into_inner());
    let (dir, root) = as_shim();
    let ns = Netns::wired(205);
    let a = bundle_in(dir.path(), "a", &["sleep", "1000"], &ns);
    let (pid_a, _) = create(&root, &a, "net-first", None);
    ok(&root, &["start", "net-first"]);
    assert_eq!(ns.taps(), ["rvtap0"], "the first container's tap");

    // The second container has a state root of its own, so that what it leaves can be told
    // from the first one's sandbox.
    let root_b = dir.path().join("state-b");
    let b = bundle_in(
        dir.path(),
        "b",
        &["sh", "-c", "ip -o -4 addr; echo END"],
        &ns,
    );
    let out = dir.path().join("out-b");
    let (pid_b, err) = create(&root_b, &b, "net-second", Some(&out));
    assert!(
        err.contains("the container has loopback only"),
        "the second sandbox's stderr: {err}"
    );
    assert_eq!(ns.taps(), ["rvtap0"], "the second container made a tap");
    ok(&root_b, &["start", "net-second"]);
    exits_0(pid_b, &out);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("END"), "{text}");
    assert!(text.contains("inet 127.0.0.1/8"), "{text}");
    assert!(
        !text.contains(&format!("10.{}.", ns.x)),
        "the second container has the namespace's address: {text}"
    );
    ok(&root_b, &["delete", "net-second"]);
    assert_nothing_left(dir.path(), &root_b, "net-second");

    // The first one still answers for eth0's address, also after the second's delete.
    let target = format!("10.{}.0.2", ns.x);
    host(&["busybox", "ping", "-c", "1", "-W", "10", &target]);
    assert_eq!(ns.taps(), ["rvtap0"]);
    assert!(ns.eth0_qdiscs().contains("ingress"));

    ok(&root, &["kill", "net-first", "KILL"]);
    let status = wait_for(pid_a);
    assert!(libc::WIFSIGNALED(status), "{status:#x}");
    ok(&root, &["delete", "net-first"]);
    ns.assert_as_made("after both were deleted");
    assert_nothing_left(dir.path(), &root, "net-first");
}
