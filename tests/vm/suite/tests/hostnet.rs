//! A container that shares the host's network (no network namespace in its spec, as
//! `docker run --network host` asks): its NIC's backend is passt, so its connections leave
//! from the host's addresses, and the TCP ports it listens on become the host's.
//!
//! "The host" is a namespace of the test's own, so that nothing here touches the real
//! host's routes: `rvh-<pid>` with an uplink 198.51.100.1/24 and a default route via
//! 198.51.100.2, the far end of a veth pair in `rvp-<pid>` ("the network", with a server
//! at 198.51.100.3). runvm runs inside the first with `ip netns exec`; to runvm that
//! namespace is the host's. Checked: a connection out reaches the network from the host's
//! address; the gateway's address reaches the host's loopback (passt); a port the container
//! listens on answers on the host's 127.0.0.1 and on its uplink address; a sandbox killed
//! with SIGKILL takes passt along; after delete nothing is left and the port is free again.
//! And in a namespace with no default route, where passt has no way out, the container
//! runs with loopback only and nothing is said.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runvm_vm_tests::shim::{as_shim, assert_nothing_left, read_pid, wait_for};
use runvm_vm_tests::{busybox_bundle, runvm_bin};

/// The port the container listens on.
const PORT: u16 = 18080;
/// The port the network's server listens on.
const SERVER_PORT: u16 = 9000;
const HOST_ADDR: &str = "198.51.100.1";
/// The router: the host's default gateway.
const NET_ADDR: &str = "198.51.100.2";
/// A server beyond the uplink (not the router: passt maps the gateway's address to the
/// host itself).
const SERVER_ADDR: &str = "198.51.100.3";
/// The port of a service on the host's loopback, which the container reaches at the
/// gateway's address.
const HOST_LOCAL_PORT: u16 = 9001;
/// How long the guest has to boot, connect, and listen.
const PATIENCE: Duration = Duration::from_secs(90);

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The two namespaces, removed when dropped.
struct Hosts {
    host: String,
    net: String,
}

impl Hosts {
    /// The host namespace, with an uplink and a default route when `routed`.
    fn new(tag: &str, routed: bool) -> Hosts {
        let pid = std::process::id();
        let hosts = Hosts {
            host: format!("rvh-{tag}-{pid}"),
            net: format!("rvp-{tag}-{pid}"),
        };
        must(&["ip", "netns", "add", &hosts.host]);
        must(&["ip", "-n", &hosts.host, "link", "set", "lo", "up"]);
        if routed {
            must(&["ip", "netns", "add", &hosts.net]);
            must(&["ip", "-n", &hosts.net, "link", "set", "lo", "up"]);
            must(&[
                "ip",
                "-n",
                &hosts.host,
                "link",
                "add",
                "uplink",
                "type",
                "veth",
                "peer",
                "name",
                "wan",
                "netns",
                &hosts.net,
            ]);
            let cidr = |a: &str| format!("{a}/24");
            must(&[
                "ip",
                "-n",
                &hosts.host,
                "addr",
                "add",
                &cidr(HOST_ADDR),
                "dev",
                "uplink",
            ]);
            must(&["ip", "-n", &hosts.host, "link", "set", "uplink", "up"]);
            must(&[
                "ip",
                "-n",
                &hosts.net,
                "addr",
                "add",
                &cidr(NET_ADDR),
                "dev",
                "wan",
            ]);
            must(&["ip", "-n", &hosts.net, "link", "set", "wan", "up"]);
            let server = cidr(SERVER_ADDR);
            must(&["ip", "-n", &hosts.net, "addr", "add", &server, "dev", "wan"]);
            must(&[
                "ip",
                "-n",
                &hosts.host,
                "route",
                "add",
                "default",
                "via",
                NET_ADDR,
            ]);
        }
        hosts
    }

    /// `ip netns exec <ns> ARGS` as a command.
    fn cmd(ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    /// runvm in the host namespace; returns its exit code and stderr (a file: a sandbox
    /// keeps it).
    fn runvm(&self, root: &Path, args: &[&str]) -> (Option<i32>, String) {
        self.runvm_to(root, args, Stdio::null())
    }

    /// The same, with runvm's stdout (a sandbox's: the container's) to `stdout`.
    fn runvm_to(&self, root: &Path, args: &[&str], stdout: Stdio) -> (Option<i32>, String) {
        let err = tempfile::NamedTempFile::new().unwrap();
        let status = Self::cmd(&self.host, &[runvm_bin().to_str().unwrap()])
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(err.reopen().unwrap()))
            .status()
            .unwrap();
        (status.code(), std::fs::read_to_string(err.path()).unwrap())
    }

    fn ok(&self, root: &Path, args: &[&str]) -> String {
        let (code, err) = self.runvm(root, args);
        assert_eq!(code, Some(0), "runvm {args:?} failed: {err}");
        err
    }

    /// `runvm create` with a pid file, the container's stdout to `out`; returns the
    /// sandbox's pid and create's stderr.
    fn create(&self, root: &Path, bundle: &Path, id: &str, out: &Path) -> (i32, String) {
        let pid_file = root.with_file_name(format!("{id}.pid"));
        let args = [
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ];
        let stdout = Stdio::from(std::fs::File::create(out).unwrap());
        let (code, err) = self.runvm_to(root, &args, stdout);
        assert_eq!(code, Some(0), "runvm {args:?} failed: {err}");
        (read_pid(&pid_file), err)
    }

    /// An HTTP GET of `url` from namespace `ns` (python3 on the host), or `None`.
    fn get(ns: &str, url: &str) -> Option<String> {
        let script = "import sys, urllib.request; \
                      print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())";
        let out = Self::cmd(ns, &["python3", "-c", script, url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.host, &self.net] {
            let _ = run(&["ip", "netns", "delete", ns]);
        }
    }
}

/// A server on `addr:port` in namespace `ns`: accepts one connection, writes
/// "PEER <address>" and what it read to `out`.
fn serve_once(ns: &str, addr: &str, port: u16, out: &Path) -> Child {
    let script = format!(
        "import socket, sys\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{addr}', {port})); s.listen(1)\n\
         open(sys.argv[1] + '.ready', 'w').close()\n\
         c, peer = s.accept(); data = c.makefile().readline().strip()\n\
         open(sys.argv[1], 'w').write('PEER %s %s\\n' % (peer[0], data))\n"
    );
    let child = Hosts::cmd(ns, &["python3", "-c", &script, out.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let ready = out.with_extension("ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "the network's server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// passt processes alive (not zombies) now.
fn passts() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let comm_and_state = stat.split_once(" (").map(|(_, rest)| rest).unwrap_or("");
            // Debian's passt runs its AVX2 build where it can: `passt.avx2`.
            let Some((comm, state)) = comm_and_state.split_once(") ") else {
                return false;
            };
            (comm == "passt" || comm == "passt.avx2") && !state.starts_with('Z')
        })
        .collect()
}

/// Reaps whatever ended among our adopted children (passt, once its sandbox is gone).
fn reap() {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on any child; `status` is a valid int.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn host_network_connects_from_the_host_and_publishes_its_listeners() {
    let (dir, root) = as_shim();
    let hosts = Hosts::new("a", true);
    let received = dir.path().join("received");
    let mut server = serve_once(&hosts.net, SERVER_ADDR, SERVER_PORT, &received);
    let host_received = dir.path().join("host-received");
    let mut host_server = serve_once(&hosts.host, "127.0.0.1", HOST_LOCAL_PORT, &host_received);
    let before = passts();
    let script = format!(
        "echo from-the-vm | nc {SERVER_ADDR} {SERVER_PORT}; \
         echo to-the-host | nc {NET_ADDR} {HOST_LOCAL_PORT}; mkdir -p /w; \
         echo hello-from-the-vm > /w/index.html; exec httpd -f -p {PORT} -h /w"
    );
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", &script],
        &["PATH=/bin"],
        "/",
    );
    for applet in ["nc", "httpd", "ip"] {
        std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin").join(applet)).unwrap();
    }
    let (pid, create_err) = hosts.create(&root, &bundle, "hostnet", &dir.path().join("out"));
    assert_eq!(create_err, "", "create said something");
    let ours: Vec<i32> = passts()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(ours.len(), 1, "one passt for the container: {ours:?}");
    hosts.ok(&root, &["start", "hostnet"]);

    // Out: the network sees the host's address.
    let status = server.wait().unwrap();
    assert!(status.success(), "the network's server failed");
    let got = std::fs::read_to_string(&received).unwrap();
    assert_eq!(got.trim(), format!("PEER {HOST_ADDR} from-the-vm"));
    // The gateway's address is the host itself (passt's mapping): a service on the host's
    // loopback answers there.
    assert!(
        host_server.wait().unwrap().success(),
        "the host's server failed"
    );
    let got = std::fs::read_to_string(&host_received).unwrap();
    assert_eq!(got.trim(), "PEER 127.0.0.1 to-the-host");

    // In: the container's listener is the host's port, on loopback and on the uplink.
    let local = format!("http://127.0.0.1:{PORT}/");
    wait_until("the container's port on the host's 127.0.0.1", || {
        Hosts::get(&hosts.host, &local).is_some()
    });
    assert_eq!(
        Hosts::get(&hosts.host, &local).as_deref(),
        Some("hello-from-the-vm")
    );
    let remote = format!("http://{HOST_ADDR}:{PORT}/");
    assert_eq!(
        Hosts::get(&hosts.net, &remote).as_deref(),
        Some("hello-from-the-vm")
    );

    // A sandbox killed with SIGKILL takes passt along.
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_for(pid);
    wait_until("passt gone after its sandbox was killed", || {
        reap();
        passts().iter().all(|p| !ours.contains(p))
    });
    hosts.ok(&root, &["delete", "hostnet"]);
    assert_nothing_left(dir.path(), &root, "hostnet");
    // The port is the host's again.
    let free = Hosts::cmd(
        &hosts.host,
        &[
            "python3",
            "-c",
            // SO_REUSEADDR, as servers bind: closed connections may wait in TIME_WAIT.
            &format!(
                "import socket; s = socket.socket(); \
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
                 s.bind(('0.0.0.0', {PORT}))"
            ),
        ],
    )
    .status()
    .unwrap();
    assert!(free.success(), "port {PORT} is still taken after delete");
}

#[test]
fn host_network_without_a_default_route_is_loopback_only_and_quiet() {
    let (dir, root) = as_shim();
    let hosts = Hosts::new("b", false);
    let before = passts();
    let bundle = busybox_bundle(
        &dir.path().join("bundle"),
        &["sh", "-c", "ip -o -4 addr show; echo done"],
        &["PATH=/bin"],
        "/",
    );
    std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin/ip")).unwrap();
    let out = dir.path().join("out");
    let (pid, create_err) = hosts.create(&root, &bundle, "hostnet-lo", &out);
    assert_eq!(create_err, "", "create said something");
    assert_eq!(
        passts().iter().filter(|p| !before.contains(p)).count(),
        0,
        "a passt started"
    );
    hosts.ok(&root, &["start", "hostnet-lo"]);
    let status = wait_for(pid);
    let out = std::fs::read_to_string(&out).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}: {out}"
    );
    // Loopback's address only; the NIC is there, down and without one.
    let inet: Vec<&str> = out.lines().filter(|l| l.contains(" inet ")).collect();
    assert!(
        inet.len() == 1 && inet[0].contains("inet 127.0.0.1/8"),
        "addresses: {out}"
    );
    assert_eq!(out.lines().last(), Some("done"), "{out}");
    hosts.ok(&root, &["delete", "hostnet-lo"]);
    assert_nothing_left(dir.path(), &root, "hostnet-lo");
}
