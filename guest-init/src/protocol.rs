//! The control protocol between runvm (host) and guest-init, over one virtio-vsock stream.
//!
//! Every message is a frame: a 4-byte little-endian length, then that many bytes of JSON.
//! Frames are bounded by [`MAX_FRAME`]; a reader refuses anything larger before allocating.
//! The first frame on a connection is the guest's [`GuestMessage::Hello`], which carries
//! [`PROTOCOL_VERSION`]; the host refuses a version it does not speak.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

pub use crate::netspec::NetSpec;
pub use crate::spec::{ExecSpec, Resources};

/// The protocol version both sides must agree on.
pub const PROTOCOL_VERSION: u32 = 8;
/// The vsock port on the host (CID 2) that guest-init connects to.
pub const CONTROL_PORT: u32 = 1024;
/// The guest's vsock context id.
pub const GUEST_CID: u64 = 3;
/// The largest frame either side accepts, in bytes.
pub const MAX_FRAME: usize = 4 << 20;

/// A host edit for guest-init to repeat ([`HostMessage::Touch`]); paths are relative to the
/// share's mount point, as bytes (file names need not be UTF-8), and are resolved beneath it
/// without following any symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Touch {
    /// A file's data changed: open it for writing, truncate it to its size, close it.
    Modify {
        /// The file.
        path: Vec<u8>,
    },
    /// An entry appeared: make one of the same kind.
    Create {
        /// The entry.
        path: Vec<u8>,
        /// Its kind.
        kind: TouchKind,
    },
    /// An entry went: remove it (`rmdir` for a directory).
    Delete {
        /// The entry.
        path: Vec<u8>,
        /// Whether it was a directory.
        dir: bool,
    },
    /// An entry was renamed.
    Move {
        /// The old name.
        from: Vec<u8>,
        /// The new name.
        to: Vec<u8>,
    },
}

/// The kind of entry a [`Touch::Create`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO.
    Fifo,
    /// A Unix socket.
    Socket,
}

/// What guest-init sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMessage {
    /// The first frame: who is talking.
    Hello {
        /// [`PROTOCOL_VERSION`] of the guest.
        protocol: u32,
        /// `uname -r` of the guest kernel.
        kernel_release: String,
        /// CLOCK_BOOTTIME when guest-init started, in nanoseconds: the kernel's boot time.
        boottime_at_init_ns: u64,
        /// CPUs online in the guest.
        online_cpus: u32,
    },
    /// Answer to [`HostMessage::Ping`].
    Pong,
    /// guest-init is about to power the VM off; it waits (briefly) for the host to close the
    /// connection first, so that this message is not lost in the restart.
    PoweringOff,
    /// A request succeeded and has nothing to return.
    Done,
    /// A [`HostMessage::Touch`] was repeated (its own answer: a late [`GuestMessage::Done`]
    /// of another request is never taken for it).
    Touched,
    /// The process of [`HostMessage::Exec`] is running (or, held, ready to exec).
    Started {
        /// Its pid in the guest.
        pid: i32,
    },
    /// The process of [`HostMessage::Exec`] could not be started; nothing is running.
    ExecFailed {
        /// Why, in runc's words (`exec: "x": executable file not found in $PATH`).
        message: String,
    },
    /// A process ended: `code` when it exited, `signal` when a signal killed it. Sent
    /// whenever it happens, between answers.
    Exited {
        /// The host's number for the process ([`ExecSpec::process`]).
        #[serde(default)]
        process: u32,
        /// Its exit code.
        code: Option<i32>,
        /// The signal that killed it.
        signal: Option<i32>,
    },
    /// The kernel killed a process of the container for its memory limit: `oom_kills` is
    /// the container cgroup's `oom_kill` count now. Sent whenever it rises, between answers
    /// and before the killed process's [`GuestMessage::Exited`].
    OomKilled {
        /// The count so far.
        oom_kills: u64,
    },
    /// The text of a file, answering [`HostMessage::ReadFile`].
    File {
        /// The contents (lossy UTF-8), at most [`MAX_FILE_TEXT`] bytes.
        text: String,
    },
    /// The container's resource use, answering [`HostMessage::Stats`].
    Stats(Box<Stats>),
    /// The container's processes, answering [`HostMessage::ListProcesses`].
    Processes {
        /// At most [`MAX_PROCESS_LIST`] of them, by pid.
        processes: Vec<ProcessInfo>,
    },
    /// A request could not be served.
    Error {
        /// Why, in one line.
        message: String,
    },
}

/// The container's resource use, from its cgroup in the guest (`runvm events`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU time used, nanoseconds: total, user, kernel.
    pub cpu_total_ns: u64,
    /// User CPU time, nanoseconds.
    pub cpu_user_ns: u64,
    /// Kernel CPU time, nanoseconds.
    pub cpu_kernel_ns: u64,
    /// CFS periods, throttled periods, and the time throttled in nanoseconds.
    pub cpu_periods: u64,
    /// Periods in which the quota ran out.
    pub cpu_throttled_periods: u64,
    /// Time throttled, nanoseconds.
    pub cpu_throttled_ns: u64,
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// The memory limit, bytes (the guest's memory when unlimited).
    pub memory_limit: u64,
    /// `memory.stat`, at most [`MAX_STAT_KEYS`] entries.
    pub memory_stat: Vec<(String, u64)>,
    /// Processes in the container.
    pub pids_current: u64,
    /// Their limit, 0 for none.
    pub pids_limit: u64,
    /// Processes the kernel killed for the container's memory limit so far.
    #[serde(default)]
    pub oom_kills: u64,
}

/// The most `memory.stat` entries [`Stats`] carries.
pub const MAX_STAT_KEYS: usize = 128;

/// One process of the container, as `runvm ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its pid in the container's pid namespace.
    pub pid: i32,
    /// Its parent's pid there (0 for the container's init).
    pub ppid: i32,
    /// Its real uid.
    pub uid: u32,
    /// Its command line, at most [`MAX_COMMAND`] bytes (`[name]` when it has none).
    pub command: String,
}

/// The most processes [`GuestMessage::Processes`] lists.
pub const MAX_PROCESS_LIST: usize = 4096;
/// The most bytes of a command line in a [`ProcessInfo`].
pub const MAX_COMMAND: usize = 256;

/// The most bytes of a file [`HostMessage::ReadFile`] returns.
pub const MAX_FILE_TEXT: usize = 64 << 10;

/// What the host sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// Asks for a [`GuestMessage::Pong`].
    Ping,
    /// Power the VM off now.
    PowerOff,
    /// Mount the virtio-fs share `tag` at `target` (created if missing).
    MountShare {
        /// The virtio-fs tag.
        tag: String,
        /// Where, in the guest.
        target: String,
    },
    /// Read a guest file (for diagnostics and tests).
    ReadFile {
        /// The guest path.
        path: String,
    },
    /// Run a process: the container's first (which creates its namespaces) or, with
    /// [`ExecSpec::join`], one more in them.
    Exec(Box<ExecSpec>),
    /// Send `signal` to a process started by [`HostMessage::Exec`]. Not answered: a signal
    /// to a process that is gone is not an error.
    Signal {
        /// The host's number for the process ([`ExecSpec::process`]).
        #[serde(default)]
        process: u32,
        /// The signal number.
        signal: i32,
        /// Send it to every process of the container instead (`runvm kill --all`).
        #[serde(default)]
        all: bool,
    },
    /// List the container's processes (`runvm ps`).
    ListProcesses,
    /// Let a process started with [`ExecSpec::hold`] exec its program (`runvm start`).
    Release {
        /// The host's number for the process.
        process: u32,
    },
    /// Change the container's cgroup limits (`runvm update`). Answered [`GuestMessage::Done`].
    Update(Resources),
    /// Report the container's resource use (`runvm events`).
    Stats,
    /// Set the window size of a process's terminal ([`ExecSpec::terminal`]). Not answered:
    /// the process may have just ended.
    Resize {
        /// The host's number for the process.
        process: u32,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Repeat an edit a host process made in a bind source through the guest's own file
    /// system calls, so that the container's inotify watchers see it (the host's virtio-fs
    /// server answers these calls as done). Answered [`GuestMessage::Touched`].
    Touch {
        /// The share's mount point: the edit's paths are beneath it.
        root: String,
        /// The edit.
        touch: Touch,
    },
    /// Write a guest file (for diagnostics and tests).
    WriteFile {
        /// The guest path.
        path: String,
        /// What to write.
        text: String,
    },
    /// Make the guest's network match this (validated by the guest before it applies any
    /// of it). Answered [`GuestMessage::Done`].
    Network(Box<NetSpec>),
}

/// Writes one frame holding `msg`.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame and decodes it. `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<R: Read, T: for<'de> Deserialize<'de>>(r: &mut R) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let hello = GuestMessage::Hello {
            protocol: PROTOCOL_VERSION,
            kernel_release: "6.12.0-runvm".into(),
            boottime_at_init_ns: 123,
            online_cpus: 2,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &hello).unwrap();
        write_frame(&mut buf, &GuestMessage::Pong).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<_, GuestMessage>(&mut r).unwrap(), Some(hello));
        assert_eq!(
            read_frame::<_, GuestMessage>(&mut r).unwrap(),
            Some(GuestMessage::Pong)
        );
        assert_eq!(read_frame::<_, GuestMessage>(&mut r).unwrap(), None);
    }

    #[test]
    fn oversized_and_truncated_frames_are_refused() {
        let mut big = (MAX_FRAME as u32 + 1).to_le_bytes().to_vec();
        big.extend_from_slice(b"{}");
        let err = read_frame::<_, HostMessage>(&mut &big[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let truncated = [10u8, 0, 0, 0, b'{'];
        let err = read_frame::<_, HostMessage>(&mut &truncated[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let half_len = [1u8, 0];
        let err = read_frame::<_, HostMessage>(&mut &half_len[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn exec_round_trips_and_hostname_may_be_absent() {
        let exec = HostMessage::Exec(Box::new(ExecSpec {
            args: vec!["sh".into(), "-c".into(), "exit 3".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            root: "/run/share/rootfs".into(),
            hostname: Some("box".into()),
            stdio_ports: [1025, 1026, 1027],
            ..ExecSpec::default()
        }));
        let mut buf = Vec::new();
        write_frame(&mut buf, &exec).unwrap();
        assert_eq!(
            read_frame::<_, HostMessage>(&mut &buf[..]).unwrap(),
            Some(exec)
        );

        let body = br#"{"type":"exec","args":["true"],"env":[],"cwd":"/","root":"/r","stdio_ports":[1,2,3]}"#;
        let mut buf = (body.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(body);
        match read_frame::<_, HostMessage>(&mut &buf[..]).unwrap() {
            Some(HostMessage::Exec(spec)) => assert_eq!(spec.hostname, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_messages_are_invalid_data() {
        let body = br#"{"type":"format_disk"}"#;
        let mut buf = (body.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(body);
        let err = read_frame::<_, HostMessage>(&mut &buf[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
