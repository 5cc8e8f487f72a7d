//! guest-init: PID 1 of a runvm microVM, the only file of its initramfs.
//!
//! It mounts the guest's pseudo file systems, connects to the host over virtio-vsock, says
//! hello (protocol version, kernel release, boot time), answers the host's requests, and
//! powers the VM off when told to or when the host connection is lost. Run again with
//! `--container-stage`, it is the container's set-up (`container`).

mod cgroup;
mod console;
mod container;
mod fdpass;
mod files;
mod mounts;
mod net;
mod netconf;
mod oom;
mod power;
mod process;
mod procs;
mod publish;
mod vsock;

use std::io::{BufReader, BufWriter};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_init::dnsrelay::{DNS_RELAY_PORT, Relay};
use guest_init::portfwd::LISTENERS_PORT;
use guest_init::protocol::{
    CONTROL_PORT, GuestMessage, HostMessage, PROTOCOL_VERSION, read_frame, write_frame,
};

/// The host's vsock context id.
const HOST_CID: u32 = 2;
/// How long guest-init keeps trying to reach the host.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// How long guest-init waits for the host to close after acknowledging power-off.
const POWER_OFF_HANDSHAKE: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!(
            "guest-init {} (protocol {PROTOCOL_VERSION})",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some(container::STAGE_ARG) {
        container::stage();
    }
    if std::process::id() != 1 {
        eprintln!("guest-init: runs only as PID 1 of a runvm guest");
        return ExitCode::FAILURE;
    }
    let boottime = power::boottime_ns();
    if let Err(e) = mounts::mount_basics() {
        log(&format!("cannot mount the basics: {e}"));
    }
    if let Err(e) = cgroup::set_up() {
        log(&format!("cannot make the container's cgroup: {e}"));
    }
    if let Err(e) = net::loopback_up() {
        log(&format!("cannot bring the loopback interface up: {e}"));
    }
    if let Err(e) = oom::set_policy() {
        log(&format!("cannot set the memory policy: {e}"));
    }
    if let Err(e) = serve(boottime) {
        log(&e);
    }
    power::power_off()
}

/// Writes a line to the console (the kernel's /dev/console is our stderr).
fn log(msg: &str) {
    eprintln!("guest-init: {msg}");
}

/// Turns a handler's result into the message that answers the host.
fn reply(result: std::io::Result<GuestMessage>) -> GuestMessage {
    result.unwrap_or_else(|e| GuestMessage::Error {
        message: e.to_string(),
    })
}

/// Talks to the host until it says power off or goes away.
fn serve(boottime: u64) -> Result<(), String> {
    let stream = vsock::connect(HOST_CID, CONTROL_PORT, CONNECT_PATIENCE)
        .map_err(|e| format!("cannot reach the host on vsock port {CONTROL_PORT}: {e}"))?;
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(read_half);
    // Shared with the thread that reports the process's end.
    let writer = Arc::new(Mutex::new(BufWriter::new(stream)));
    let send = |msg: &GuestMessage| {
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *w, msg)
    };
    let processes = process::Processes::default();
    let dns_relay = Relay::default();
    let publisher = publish::Publisher::default();
    let hello = GuestMessage::Hello {
        protocol: PROTOCOL_VERSION,
        kernel_release: power::kernel_release(),
        boottime_at_init_ns: boottime,
        online_cpus: power::online_cpus(),
    };
    send(&hello).map_err(|e| format!("cannot send hello: {e}"))?;
    // After the hello, which must be the first frame.
    let oom = oom::Watch::new(writer.clone());
    let oom = match oom.spawn() {
        Ok(()) => Some(oom),
        Err(e) => {
            log(&format!("cannot watch the container's memory events: {e}"));
            None
        }
    };
    loop {
        let msg: Option<HostMessage> =
            read_frame(&mut reader).map_err(|e| format!("bad message from the host: {e}"))?;
        let reply = match msg {
            None => return Err("the host closed the connection".into()),
            Some(HostMessage::Ping) => GuestMessage::Pong,
            Some(HostMessage::MountShare { tag, target }) => {
                reply(mounts::mount_share(&tag, &target).map(|()| GuestMessage::Done))
            }
            Some(HostMessage::ReadFile { path }) => reply(files::read_text(&path)),
            Some(HostMessage::Touch { root, touch }) => {
                reply(files::touch(&root, &touch).map(|()| GuestMessage::Touched))
            }
            Some(HostMessage::WriteFile { path, text }) => {
                reply(files::write_text(&path, &text).map(|()| GuestMessage::Done))
            }
            Some(HostMessage::Exec(spec)) => {
                match process::start(*spec, &processes, writer.clone(), oom.clone()) {
                    Ok(pid) => GuestMessage::Started { pid },
                    Err(message) => GuestMessage::ExecFailed { message },
                }
            }
            Some(HostMessage::Signal {
                process,
                signal,
                all,
            }) => {
                // Not answered: the process may have just ended, which is no error.
                if all {
                    if let Some(init) = processes.pid(0) {
                        procs::signal_all(init, signal);
                    }
                } else if let Some(pid) = processes.pid(process) {
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(pid, signal) };
                }
                continue;
            }
            Some(HostMessage::Update(resources)) => match cgroup::apply(&resources) {
                Ok(()) => GuestMessage::Done,
                Err(message) => GuestMessage::Error { message },
            },
            Some(HostMessage::Stats) => GuestMessage::Stats(Box::new(cgroup::stats())),
            Some(HostMessage::Release { process }) => match processes.release(process) {
                Ok(()) => GuestMessage::Done,
                Err(message) => GuestMessage::Error { message },
            },
            Some(HostMessage::Resize {
                process,
                rows,
                cols,
            }) => {
                processes.resize(process, rows, cols);
                continue;
            }
            Some(HostMessage::ListProcesses) => match processes.pid(0) {
                Some(init) => GuestMessage::Processes {
                    processes: procs::list(init),
                },
                None => GuestMessage::Error {
                    message: "the container is not running".into(),
                },
            },
            Some(HostMessage::Network(spec)) => {
                let applied = netconf::apply(&spec).and_then(|()| {
                    dns_relay.ensure(&spec.dns_relay, || {
                        vsock::connect(HOST_CID, DNS_RELAY_PORT, CONNECT_PATIENCE)
                    })
                });
                let applied = applied.and_then(|()| {
                    if !spec.publish_listeners {
                        return Ok(());
                    }
                    publisher.ensure(|| vsock::connect(HOST_CID, LISTENERS_PORT, CONNECT_PATIENCE))
                });
                match applied {
                    Ok(()) => GuestMessage::Done,
                    Err(message) => GuestMessage::Error { message },
                }
            }
            Some(HostMessage::PowerOff) => {
                let _ = send(&GuestMessage::PoweringOff);
                // Our send is still in the kernel's vsock queue; restarting now could reset
                // the device before it leaves. The host closes the connection once it has
                // read the acknowledgement: wait for that, for a bounded time.
                vsock::wait_for_close(reader.get_ref(), POWER_OFF_HANDSHAKE);
                return Ok(());
            }
        };
        send(&reply).map_err(|e| format!("cannot answer the host: {e}"))?;
    }
}
