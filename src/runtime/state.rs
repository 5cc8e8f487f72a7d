//! Container state on disk: `<root>/<id>/state.json`, written atomically (a temporary file
//! renamed over it), under a per-container lock (`flock` on `<root>/<id>/lock`) that
//! serialises commands on one container. The recorded status is what runvm last wrote; the
//! status reported is checked against the process table: a recorded pid that is gone (or
//! whose start time differs, so a recycled pid is not mistaken for ours) means `stopped`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The OCI version runvm's state reports.
pub const OCI_VERSION: &str = "1.2.0";
/// The largest state.json runvm reads.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// Errors of the state store, each one line.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No such container.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// A file of the store.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// state.json is not what runvm writes.
    #[error("invalid state {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io { what, path, source }
}

/// A container's status, as OCI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its VM is paused.
    Paused,
    /// Its process has ended.
    Stopped,
}

impl Status {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What `runvm state` prints (runc's fields: the OCI state plus rootfs, created, owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// [`OCI_VERSION`].
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// The host pid standing for the container (0 once stopped).
    pub pid: i32,
    /// Its status.
    pub status: Status,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root file system.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// The owner (runc leaves it empty when not rootless).
    pub owner: String,
    /// The spec's annotations.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// The pid's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a
    /// recycled pid is recognised. runvm's own; not printed by `state`.
    #[serde(default, skip_serializing)]
    pub pid_start: u64,
}

impl ContainerState {
    /// A container being created now, standing for host process `pid`.
    pub fn creating(id: &str, pid: i32, bundle: &Path, rootfs: &Path) -> ContainerState {
        ContainerState {
            oci_version: OCI_VERSION.into(),
            id: id.into(),
            pid,
            status: Status::Creating,
            bundle: bundle.to_owned(),
            rootfs: rootfs.to_owned(),
            created: now_rfc3339(),
            owner: String::new(),
            annotations: HashMap::new(),
            pid_start: process_start(pid).unwrap_or(0),
        }
    }
}

/// The start time of `pid` in clock ticks since boot, if it exists.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The current UTC time in RFC 3339 with nanoseconds, as runc writes `created`.
pub fn now_rfc3339() -> String {
    crate::time::rfc3339(std::time::SystemTime::now())
}

/// The state root (`--root`).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held lock on one container; released when dropped.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] File);

impl Store {
    /// The store at `root`.
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_owned(),
        }
    }

    /// The directory of container `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Takes the exclusive lock of container `id` (waiting for another command holding it).
    pub fn lock(&self, id: &str) -> Result<Lock, StateError> {
        let path = self.dir(id).join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StateError::NotFound(id.to_owned()),
                _ => StateError::Io {
                    what: "open",
                    path: path.clone(),
                    source: e,
                },
            })?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("lock", &path)(io::Error::last_os_error()));
        }
        Ok(Lock(file))
    }

    /// Writes the state of its container atomically.
    pub fn save(&self, state: &ContainerState) -> Result<(), StateError> {
        let dir = self.dir(&state.id);
        let path = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        let body =
            serde_json::to_vec(&Recorded(state.clone())).map_err(|e| StateError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))
    }

    /// The recorded state of `id`, its status checked against the process table.
    pub fn load(&self, id: &str) -> Result<ContainerState, StateError> {
        let path = self.dir(id).join("state.json");
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StateError::NotFound(id.to_owned()),
            _ => StateError::Io {
                what: "stat",
                path: path.clone(),
                source: e,
            },
        })?;
        if meta.len() > MAX_STATE_BYTES {
            return Err(StateError::Invalid {
                path,
                message: "too large".into(),
            });
        }
        let text = std::fs::read(&path).map_err(io_err("read", &path))?;
        let Recorded(mut state) =
            serde_json::from_slice(&text).map_err(|e| StateError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if state.status != Status::Stopped
            && (state.pid <= 0 || process_start(state.pid) != Some(state.pid_start))
        {
            state.status = Status::Stopped;
        }
        if state.status == Status::Stopped {
            state.pid = 0;
        }
        Ok(state)
    }

    /// The pid recorded for `id` as written, not checked against the process table (to
    /// tell whose a state directory is).
    pub fn recorded_pid(&self, id: &str) -> Option<i32> {
        let path = self.dir(id).join("state.json");
        let text = std::fs::read(&path).ok()?;
        if text.len() as u64 > MAX_STATE_BYTES {
            return None;
        }
        let Recorded(state) = serde_json::from_slice(&text).ok()?;
        Some(state.pid)
    }

    /// The ids of every container with a state, sorted.
    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.root)(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("state.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// The on-disk form: the printed state plus runvm's own fields.
#[derive(Serialize, Deserialize)]
struct Recorded(#[serde(with = "recorded")] ContainerState);

mod recorded {
    //! state.json keeps `pid_start`, which `runvm state` does not print.
    use super::ContainerState;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct OnDisk {
        #[serde(flatten)]
        state: ContainerState,
        #[serde(rename = "runvmPidStart", default)]
        pid_start: u64,
    }

    pub fn serialize<S: Serializer>(s: &ContainerState, ser: S) -> Result<S::Ok, S::Error> {
        OnDisk {
            state: s.clone(),
            pid_start: s.pid_start,
        }
        .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<ContainerState, D::Error> {
        let d = OnDisk::deserialize(de)?;
        Ok(ContainerState {
            pid_start: d.pid_start,
            ..d.state
        })
    }
}

#[cfg(test)]
mod tests;
