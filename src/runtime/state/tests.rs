//! The store round-trips, and the reported status follows the process table.

use super::*;

fn state(id: &str, pid: i32, pid_start: u64) -> ContainerState {
    let mut s = ContainerState::creating(id, pid, Path::new("/b"), Path::new("/b/rootfs"));
    s.status = Status::Running;
    s.annotations = HashMap::from([("k".to_string(), "v".to_string())]);
    s.pid_start = pid_start;
    s
}

fn store_with(ids: &[&str]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    for id in ids {
        std::fs::create_dir(dir.path().join(id)).unwrap();
    }
    let store = Store::new(dir.path());
    (dir, store)
}

#[test]
fn a_live_process_is_running_and_the_record_round_trips() {
    let (_d, store) = store_with(&["a"]);
    let me = std::process::id() as i32;
    let s = state("a", me, process_start(me).unwrap());
    store.save(&s).unwrap();
    assert_eq!(store.load("a").unwrap(), s);
    // What `state` prints has runc's fields and not runvm's own.
    let printed = serde_json::to_value(&s).unwrap();
    for key in [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "owner",
    ] {
        assert!(printed.get(key).is_some(), "{key} missing: {printed}");
    }
    assert!(printed.get("pidStart").is_none() && printed.get("runvmPidStart").is_none());
    assert_eq!(printed["status"], "running");
}

#[test]
fn a_gone_or_recycled_pid_is_stopped_with_pid_zero() {
    let (_d, store) = store_with(&["gone", "recycled"]);
    // A pid beyond pid_max exists nowhere.
    store.save(&state("gone", 1 << 30, 1)).unwrap();
    let me = std::process::id() as i32;
    store
        .save(&state("recycled", me, process_start(me).unwrap() + 1))
        .unwrap();
    for id in ["gone", "recycled"] {
        let s = store.load(id).unwrap();
        assert_eq!((s.status, s.pid), (Status::Stopped, 0), "{id}");
    }
}

#[test]
fn ids_are_the_directories_with_a_state_and_missing_ones_are_named() {
    let (d, store) = store_with(&["b", "a", "no-state"]);
    for id in ["b", "a"] {
        store.save(&state(id, 1 << 30, 0)).unwrap();
    }
    assert_eq!(store.ids().unwrap(), ["a", "b"]);
    assert!(matches!(store.load("zz"), Err(StateError::NotFound(id)) if id == "zz"));
    assert!(matches!(store.lock("zz"), Err(StateError::NotFound(_))));
    assert!(
        Store::new(&d.path().join("absent"))
            .ids()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_lock_is_exclusive() {
    let (d, store) = store_with(&["a"]);
    let held = store.lock("a").unwrap();
    let path = d.path().join("a/lock");
    let other = File::open(&path).unwrap();
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, -1, "a second lock was granted while the first is held");
    drop(held);
    // SAFETY: as above.
    let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0);
}

#[test]
fn created_is_rfc3339_utc() {
    let now = now_rfc3339();
    assert_eq!(now.len(), "2026-11-22T17:00:00.123456789Z".len(), "{now}");
    assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T');
}
