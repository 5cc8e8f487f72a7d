//! guest-init: PID 1 of a runvm microVM.
//!
//! It will mount the guest's pseudo file systems, connect to the host over virtio-vsock,
//! receive the container's OCI spec, build the container and relay its process (see
//! DESIGN.md §3 and ARCHITECTURE.md). Today it is the workspace member only: it reports its
//! version and otherwise exits non-zero.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("guest-init {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!("guest-init: the guest side of runvm is not built yet");
    ExitCode::FAILURE
}
