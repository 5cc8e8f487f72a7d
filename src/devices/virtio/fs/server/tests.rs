//! Tests of the server through the `FileSystem` trait, without the device: what each request
//! does on the host (the device-level tests in `../tests/` go through the FUSE encoding).

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use fuse_backend_rs::api::filesystem::{Context, FileSystem, FsOptions, SetattrValid};

use super::state::inodes::ROOT_ID;
use super::*;

fn share() -> (tempfile::TempDir, ShareFs) {
    share_with(DataCache::PerOpen)
}

fn share_with(data_cache: DataCache) -> (tempfile::TempDir, ShareFs) {
    share_with_config(ShareConfig {
        data_cache,
        ..ShareConfig::default()
    })
}

/// A share of a new directory holding `file` ("0123456789", 0644) and `dir` (0755), served
/// with `config` under small descriptor budgets; for the server's tests in other modules too.
pub(super) fn share_with_config(config: ShareConfig) -> (tempfile::TempDir, ShareFs) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"0123456789").unwrap();
    // Explicit modes: `ShareFs::new` sets the process's umask to 0, and other tests make
    // shares in parallel.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("file"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("dir")).unwrap();
    std::fs::set_permissions(
        dir.path().join("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let config = ShareConfig {
        limits: FsLimits {
            fd_cache: 4,
            open_handles: 8,
            pinned: 4,
        },
        ..config
    };
    let fs = ShareFs::new(&dir.path().canonicalize().unwrap(), config).unwrap();
    (dir, fs)
}

fn ctx() -> Context {
    Context::new()
}

fn name(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn init_asks_for_large_requests_and_readdirplus_always() {
    let (_dir, fs) = share();
    let offered = fs.init(FsOptions::all()).unwrap();
    assert_eq!(
        offered,
        FsOptions::DO_READDIRPLUS
            | FsOptions::BIG_WRITES
            | FsOptions::MAX_PAGES
            | FsOptions::ASYNC_READ
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::HANDLE_KILLPRIV_V2
            | FsOptions::ATOMIC_O_TRUNC
            | FsOptions::POSIX_LOCKS
            | FsOptions::FLOCK_LOCKS
    );
    assert!(!offered.contains(FsOptions::WRITEBACK_CACHE));
    assert!(!offered.contains(FsOptions::READDIRPLUS_AUTO));
    assert_eq!(
        fs.limits(),
        FsLimits {
            fd_cache: 4,
            open_handles: 8,
            pinned: 4
        }
    );
}

#[test]
fn readdirplus_counts_only_the_entries_returned() {
    let (dir, fs) = share();
    for i in 0..6 {
        std::fs::write(dir.path().join(format!("n{i}")), b"").unwrap();
    }
    let fh = fs.opendir(&ctx(), ROOT_ID, 0).unwrap().0.unwrap();
    let mut names = Vec::new();
    // Room for three entries besides the dots.
    fs.readdirplus(&ctx(), ROOT_ID, fh, 4096, 0, &mut |d, e| {
        assert_eq!(d.ino, e.attr.st_ino);
        if d.name == b"." || d.name == b".." {
            assert_eq!(e.inode, 0, "a dot is given without a node");
            return Ok(1);
        }
        if names.len() == 3 {
            return Ok(0);
        }
        names.push((String::from_utf8(d.name.to_vec()).unwrap(), e.inode));
        Ok(1)
    })
    .unwrap();
    assert_eq!(names.len(), 3);
    // Root + the three returned; the fourth looked up was taken back.
    assert_eq!(fs.inode_count(), 4);
    for (_, id) in &names {
        assert_eq!(fs.state().inodes.lookups(*id), Some(1));
    }
    // READDIR lists everything, the dots included, without lookups.
    let mut all = Vec::new();
    fs.readdir(&ctx(), ROOT_ID, fh, 4096, 0, &mut |d| {
        all.push(d.name.to_vec());
        Ok(1)
    })
    .unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(fs.inode_count(), 4);
    fs.releasedir(&ctx(), ROOT_ID, 0, fh).unwrap();
    assert_eq!(fs.open_handles(), 0);
}

/// The dots, listed by READDIR and READDIRPLUS alike, carry the numbers a `stat` of the
/// directory and of its parent gives; the root is its own parent.
#[test]
fn dots_are_listed_with_the_directory_and_parent_numbers() {
    let (_dir, fs) = share();
    let root_ino = fs.getattr(&ctx(), ROOT_ID, None).unwrap().0.st_ino;
    let sub = fs.lookup(&ctx(), ROOT_ID, &name("dir")).unwrap();
    for (id, dot, dotdot) in [
        (ROOT_ID, root_ino, root_ino),
        (sub.inode, sub.attr.st_ino, root_ino),
    ] {
        let fh = fs.opendir(&ctx(), id, 0).unwrap().0.unwrap();
        let mut plain = Vec::new();
        fs.readdir(&ctx(), id, fh, 4096, 0, &mut |d| {
            plain.push((d.name.to_vec(), d.ino, d.type_));
            Ok(1)
        })
        .unwrap();
        let mut plus = Vec::new();
        fs.readdirplus(&ctx(), id, fh, 4096, 0, &mut |d, e| {
            if e.inode == 0 {
                plus.push((d.name.to_vec(), d.ino, d.type_));
            }
            Ok(1)
        })
        .unwrap();
        fs.releasedir(&ctx(), id, 0, fh).unwrap();
        let dir_kind = u32::from(libc::DT_DIR);
        for listing in [&plain, &plus] {
            let find = |n: &[u8]| listing.iter().find(|(name, ..)| name == n).cloned();
            assert_eq!(find(b"."), Some((b".".to_vec(), dot, dir_kind)), "{id}");
            assert_eq!(
                find(b".."),
                Some((b"..".to_vec(), dotdot, dir_kind)),
                "{id}"
            );
        }
    }
}

#[test]
fn setattr_changes_mode_size_owner_and_times() {
    let (dir, fs) = share();
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    // SAFETY: a zeroed stat64 is a valid value.
    let mut attr: libc::stat64 = unsafe { std::mem::zeroed() };
    attr.st_mode = 0o600;
    attr.st_size = 4;
    attr.st_mtime = 1_000_000;
    let valid = SetattrValid::MODE | SetattrValid::SIZE | SetattrValid::MTIME;
    let (st, _) = fs.setattr(&ctx(), file, attr, None, valid).unwrap();
    assert_eq!(st.st_mode & 0o777, 0o600);
    assert_eq!(st.st_size, 4);
    assert_eq!(st.st_mtime, 1_000_000);
    let meta = std::fs::metadata(dir.path().join("file")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 4);
    // Through a handle, with the time set to now.
    let fh = fs
        .open(&ctx(), file, libc::O_RDWR as u32, 0)
        .unwrap()
        .0
        .unwrap();
    attr.st_size = 2;
    let valid = SetattrValid::SIZE | SetattrValid::MTIME | SetattrValid::MTIME_NOW;
    let (st, _) = fs.setattr(&ctx(), file, attr, Some(fh), valid).unwrap();
    assert_eq!(st.st_size, 2);
    assert!(st.st_mtime > 1_000_000);
    // A handle of another inode is refused.
    let other = fs.lookup(&ctx(), ROOT_ID, &name("dir")).unwrap().inode;
    assert!(fs.getattr(&ctx(), other, Some(fh)).is_err());
    // SAFETY: cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        attr.st_uid = 4321;
        let (st, _) = fs
            .setattr(&ctx(), file, attr, None, SetattrValid::UID)
            .unwrap();
        assert_eq!(st.st_uid, 4321);
    }
}

#[test]
fn nodes_are_made_as_the_request_s_user() {
    let (dir, fs) = share();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o777)).unwrap();
    // SAFETY: cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut as_user = ctx();
    if root {
        as_user.uid = 1000;
        as_user.gid = 1001;
    }
    let fifo = fs
        .mknod(
            &as_user,
            ROOT_ID,
            &name("fifo"),
            libc::S_IFIFO | 0o640,
            0,
            0o022,
        )
        .unwrap();
    let meta = std::fs::symlink_metadata(dir.path().join("fifo")).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    if root {
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    }
    // Never opened: neither by OPEN nor by a CREATE without O_EXCL.
    assert!(
        fs.open(&ctx(), fifo.inode, libc::O_RDONLY as u32, 0)
            .is_err()
    );
    let args = fuse_backend_rs::abi::fuse_abi::CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o644,
        umask: 0,
        fuse_flags: 0,
    };
    assert!(fs.create(&ctx(), ROOT_ID, &name("fifo"), args).is_err());
    // ... which opens an existing regular file.
    let (entry, fh, ..) = fs.create(&ctx(), ROOT_ID, &name("file"), args).unwrap();
    assert_eq!(entry.attr.st_size, 10);
    fs.release(&ctx(), entry.inode, 0, fh.unwrap(), false, false, None)
        .unwrap();
    // Device nodes and directories through MKNOD are refused.
    for mode in [libc::S_IFCHR, libc::S_IFBLK, libc::S_IFDIR] {
        let result = fs.mknod(&ctx(), ROOT_ID, &name("dev"), mode | 0o666, 0x0101, 0);
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
    let d = fs.mkdir(&as_user, ROOT_ID, &name("sub"), 0o750, 0).unwrap();
    assert_eq!(d.attr.st_mode & libc::S_IFMT, libc::S_IFDIR);
    let link = fs
        .symlink(&as_user, &name("../../etc"), ROOT_ID, &name("l"))
        .unwrap();
    assert_eq!(fs.readlink(&ctx(), link.inode).unwrap(), b"../../etc");
    if root {
        let meta = std::fs::symlink_metadata(dir.path().join("l")).unwrap();
        assert_eq!(meta.uid(), 1000);
    }
}

#[test]
fn names_are_checked_by_the_server_too() {
    let (_dir, fs) = share();
    for bad in ["", ".", "..", "a/b"] {
        let err = fs.lookup(&ctx(), ROOT_ID, &name(bad)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        assert!(fs.unlink(&ctx(), ROOT_ID, &name(bad)).is_err());
        assert!(
            fs.rename(&ctx(), ROOT_ID, &name("file"), ROOT_ID, &name(bad), 0)
                .is_err()
        );
    }
    assert_eq!(
        fs.lookup(&ctx(), 0xdead, &name("x"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EBADF)
    );
}

#[test]
fn access_statfs_lseek_fallocate_and_sync() {
    let (_dir, fs) = share();
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    assert!(fs.access(&ctx(), file, libc::R_OK as u32).is_ok());
    // Not executable by anyone: not even root.
    assert_eq!(
        fs.access(&ctx(), file, libc::X_OK as u32)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EACCES)
    );
    let mut user = ctx();
    user.uid = 5000;
    user.gid = 5000;
    assert!(fs.access(&user, file, libc::W_OK as u32).is_err());
    assert!(fs.statfs(&ctx(), file).unwrap().f_namemax > 0);
    let fh = fs
        .open(&ctx(), file, libc::O_RDWR as u32, 0)
        .unwrap()
        .0
        .unwrap();
    fs.fallocate(&ctx(), file, fh, 0, 0, 1 << 20).unwrap();
    assert_eq!(
        fs.lseek(&ctx(), file, fh, 0, libc::SEEK_DATA as u32)
            .unwrap(),
        0
    );
    assert!(
        fs.lseek(&ctx(), file, fh, 0, libc::SEEK_HOLE as u32)
            .is_ok()
    );
    // FLUSH is answered (it releases the closing owner's locks), on a valid handle only.
    fs.flush(&ctx(), file, fh, 0).unwrap();
    let err = fs.flush(&ctx(), file, fh + 1, 0).err().unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    fs.fsync(&ctx(), file, true, fh).unwrap();
    fs.release(&ctx(), file, 0, fh, false, false, None).unwrap();
    assert!(fs.fsync(&ctx(), file, false, fh).is_err());
}

#[test]
fn destroy_forgets_everything_but_the_root() {
    let (_dir, fs) = share();
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    let fh = fs
        .open(&ctx(), file, libc::O_RDONLY as u32, 0)
        .unwrap()
        .0
        .unwrap();
    fs.destroy();
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(fs.open_handles(), 0);
    assert_eq!(fs.inode_fds(), 0);
    assert!(fs.getattr(&ctx(), file, Some(fh)).is_err());
    assert!(fs.getattr(&ctx(), ROOT_ID, None).is_ok());
}

/// A WRITE's data source that has no bytes (what happens before the copy is under test).
struct NoBytes;

impl std::io::Read for NoBytes {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(0)
    }
}

impl fuse_backend_rs::api::filesystem::ZeroCopyReader for NoBytes {
    fn read_to(
        &mut self,
        _f: &mut dyn fuse_backend_rs::common::file_traits::FileReadWriteVolatile,
        _count: usize,
        _off: u64,
    ) -> std::io::Result<usize> {
        Ok(0)
    }
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn setuid_and_setgid_are_cleared_where_the_guest_flags_it() {
    use fuse_backend_rs::abi::fuse_abi::{FOPEN_IN_KILL_SUIDGID, WRITE_KILL_PRIV};
    let (dir, fs) = share();
    let path = dir.path().join("file");
    let setuid = || {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o6755)).unwrap();
    };
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    let rw = libc::O_RDWR as u32;
    let fh = fs.open(&ctx(), file, rw, 0).unwrap().0.unwrap();
    let write = |fuse_flags| {
        fs.write(
            &ctx(),
            file,
            fh,
            &mut NoBytes,
            0,
            0,
            None,
            false,
            0,
            fuse_flags,
        )
        .unwrap()
    };
    setuid();
    write(0);
    // SAFETY: cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // The server has CAP_FSETID: an unflagged write keeps the bits, as the guest's
        // own root would.
        assert_eq!(mode_of(&path), 0o6755);
    }
    write(WRITE_KILL_PRIV);
    assert_eq!(mode_of(&path), 0o755);
    // A truncating open, flagged.
    setuid();
    let trunc = rw | libc::O_TRUNC as u32;
    let fh2 = fs
        .open(&ctx(), file, trunc, FOPEN_IN_KILL_SUIDGID)
        .unwrap()
        .0
        .unwrap();
    assert_eq!(mode_of(&path), 0o755);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    // A SETATTR of the size, flagged.
    setuid();
    // SAFETY: a zeroed stat64 is a valid value.
    let mut attr: libc::stat64 = unsafe { std::mem::zeroed() };
    attr.st_size = 3;
    let valid = SetattrValid::SIZE | SetattrValid::KILL_SUIDGID;
    let (st, _) = fs.setattr(&ctx(), file, attr, None, valid).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o755);
    assert_eq!(st.st_size, 3);
    // Set-group-ID without group execute stays.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o2745)).unwrap();
    write(WRITE_KILL_PRIV);
    assert_eq!(mode_of(&path), 0o2745);
    for fh in [fh, fh2] {
        fs.release(&ctx(), file, 0, fh, false, false, None).unwrap();
    }
}

#[test]
fn the_rootfs_keeps_its_cache_until_the_file_changes_behind_the_guest() {
    use fuse_backend_rs::api::filesystem::OpenOptions;
    let (dir, fs) = share_with(DataCache::KeptUnder(c"dir"));
    let kept = dir.path().join("dir/kept");
    std::fs::write(&kept, b"one").unwrap();
    let sub = fs.lookup(&ctx(), ROOT_ID, &name("dir")).unwrap().inode;
    let file = fs.lookup(&ctx(), sub, &name("kept")).unwrap().inode;
    let outside = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    let open = |id: u64, flags: i32| {
        let (fh, options, _) = fs.open(&ctx(), id, flags as u32, 0).unwrap();
        let fh = fh.unwrap();
        (fh, options.contains(OpenOptions::KEEP_CACHE))
    };
    let release = |id: u64, fh: u64| fs.release(&ctx(), id, 0, fh, false, false, None).unwrap();
    // The first open: nothing cached to keep. The next ones, file unchanged: kept.
    for expected in [false, true, true] {
        let (fh, keep) = open(file, libc::O_RDONLY);
        assert_eq!(keep, expected);
        release(file, fh);
    }
    // Changed on the host (same size, new contents): the next open drops the cache.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&kept, b"two").unwrap();
    let (fh, keep) = open(file, libc::O_RDONLY);
    assert!(!keep);
    release(file, fh);
    assert!(open(file, libc::O_RDONLY).1);
    // Changed by the guest through a handle: its cache holds the change, kept.
    let (fh, _) = open(file, libc::O_RDWR);
    fs.fallocate(&ctx(), file, fh, 0, 0, 4096).unwrap();
    release(file, fh);
    assert!(open(file, libc::O_RDONLY).1);
    // Outside the kept entry, and directories: never kept.
    for id in [outside, outside, sub, sub] {
        let dir_flags = if id == sub {
            libc::O_DIRECTORY
        } else {
            libc::O_RDONLY
        };
        let (fh, keep) = if id == sub {
            let (fh, options) = fs.opendir(&ctx(), id, dir_flags as u32).unwrap();
            (fh.unwrap(), options.contains(OpenOptions::KEEP_CACHE))
        } else {
            open(id, dir_flags)
        };
        assert!(!keep);
        if id == sub {
            fs.releasedir(&ctx(), id, 0, fh).unwrap();
        } else {
            release(id, fh);
        }
    }
}

#[test]
fn close_to_open_by_default() {
    use fuse_backend_rs::api::filesystem::OpenOptions;
    let (_dir, fs) = share();
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    for _ in 0..3 {
        let (fh, options, _) = fs.open(&ctx(), file, libc::O_RDONLY as u32, 0).unwrap();
        assert!(!options.contains(OpenOptions::KEEP_CACHE));
        fs.release(&ctx(), file, 0, fh.unwrap(), false, false, None)
            .unwrap();
    }
}

/// The value of the host attribute `name` of `path`, if any.
fn host_xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings; at most `buf.len()` bytes written into `buf`.
    let ret = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = usize::try_from(ret).ok()?;
    buf.truncate(len);
    Some(buf)
}

#[test]
fn user_attributes_pass_and_the_hosts_own_stay_hidden() {
    use fuse_backend_rs::api::filesystem::{GetxattrReply, ListxattrReply};
    let (dir, fs) = share();
    let path = dir.path().join("file");
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    fs.setxattr(&ctx(), file, &name("user.colour"), b"blue", 0)
        .unwrap();
    assert_eq!(
        host_xattr(&path, "user.colour").as_deref(),
        Some(&b"blue"[..])
    );
    match fs.getxattr(&ctx(), file, &name("user.colour"), 0).unwrap() {
        GetxattrReply::Count(n) => assert_eq!(n, 4),
        _ => panic!("not the expected reply"),
    }
    match fs.getxattr(&ctx(), file, &name("user.colour"), 64).unwrap() {
        GetxattrReply::Value(v) => assert_eq!(v, b"blue"),
        _ => panic!("not the expected reply"),
    }
    let err = fs
        .getxattr(&ctx(), file, &name("user.colour"), 2)
        .err()
        .unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::ERANGE));
    // XATTR_CREATE on an existing name fails as on the host.
    let err = fs
        .setxattr(
            &ctx(),
            file,
            &name("user.colour"),
            b"red",
            libc::XATTR_CREATE as u32,
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    // Names outside what a container may use: refused, and invisible when the host has them.
    let err = fs
        .setxattr(&ctx(), file, &name("trusted.overlay.opaque"), b"y", 0)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP));
    // SAFETY: cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a 1-byte value.
        let ret = unsafe {
            libc::setxattr(
                p.as_ptr(),
                c"trusted.hidden".as_ptr(),
                b"x".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(ret, 0);
        let err = fs
            .getxattr(&ctx(), file, &name("trusted.hidden"), 64)
            .err()
            .unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
    }
    match fs.listxattr(&ctx(), file, 256).unwrap() {
        ListxattrReply::Names(names) => assert_eq!(names, b"user.colour\0"),
        _ => panic!("not the expected reply"),
    }
    match fs.listxattr(&ctx(), file, 0).unwrap() {
        ListxattrReply::Count(n) => assert_eq!(n, 12),
        _ => panic!("not the expected reply"),
    }
    let err = fs.listxattr(&ctx(), file, 4).err().unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::ERANGE));
    fs.removexattr(&ctx(), file, &name("user.colour")).unwrap();
    assert_eq!(host_xattr(&path, "user.colour"), None);
    let err = fs
        .getxattr(&ctx(), file, &name("user.colour"), 64)
        .err()
        .unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
    // A symlink has none, and gets none.
    let link = fs
        .symlink(&ctx(), &name("file"), ROOT_ID, &name("l"))
        .unwrap()
        .inode;
    let err = fs
        .setxattr(&ctx(), link, &name("user.x"), b"1", 0)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = fs
        .getxattr(&ctx(), link, &name("user.x"), 64)
        .err()
        .unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
    assert_eq!(host_xattr(&path, "user.x"), None);
}

#[test]
fn with_locks_in_the_guest_no_lock_is_offered_and_flush_is_enosys() {
    let (_dir, fs) = share_with_config(ShareConfig {
        host_locks: false,
        ..ShareConfig::default()
    });
    let offered = fs.init(FsOptions::all()).unwrap();
    assert!(!offered.intersects(FsOptions::POSIX_LOCKS | FsOptions::FLOCK_LOCKS));
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    let fh = fs
        .open(&ctx(), file, libc::O_RDWR as u32, 0)
        .unwrap()
        .0
        .unwrap();
    // FLUSH is refused (the guest then stops sending it), on a valid handle only.
    let err = fs.flush(&ctx(), file, fh, 0).err().unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSYS));
    let err = fs.flush(&ctx(), file, fh + 1, 0).err().unwrap();
    assert_ne!(err.raw_os_error(), Some(libc::ENOSYS));
}

#[test]
fn without_xattrs_every_attribute_request_is_enosys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let config = ShareConfig {
        xattrs: false,
        ..ShareConfig::default()
    };
    let fs = ShareFs::new(&dir.path().canonicalize().unwrap(), config).unwrap();
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap().inode;
    let enosys =
        |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSYS));
    enosys(fs.setxattr(&ctx(), file, &name("user.a"), b"1", 0));
    enosys(fs.getxattr(&ctx(), file, &name("user.a"), 8).map(drop));
    enosys(fs.listxattr(&ctx(), file, 64).map(drop));
    enosys(fs.removexattr(&ctx(), file, &name("user.a")));
}

#[test]
fn a_rename_on_one_thread_never_fails_a_walk_on_another() {
    // Requests are served on several threads: a walk down to an evicted inode (the cache
    // holds 4 descriptors here) must never see the host's names changed and the table's not.
    let (dir, fs) = share();
    fs.init(FsOptions::all()).unwrap();
    std::fs::write(dir.path().join("dir/inner"), b"x").unwrap();
    for i in 0..8 {
        std::fs::write(dir.path().join(format!("other{i}")), b"y").unwrap();
    }
    let moving = fs.lookup(&ctx(), ROOT_ID, &name("dir")).unwrap().inode;
    let inner = fs.lookup(&ctx(), moving, &name("inner")).unwrap().inode;
    let done = std::sync::atomic::AtomicBool::new(false);
    let failures = std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..300 {
                fs.rename(&ctx(), ROOT_ID, &name("dir"), ROOT_ID, &name("moved"), 0)
                    .unwrap();
                fs.rename(&ctx(), ROOT_ID, &name("moved"), ROOT_ID, &name("dir"), 0)
                    .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let walker = scope.spawn(|| {
            let mut failures = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                // Other lookups push the directory's and the file's descriptors out.
                for i in 0..8 {
                    fs.lookup(&ctx(), ROOT_ID, &name(&format!("other{i}")))
                        .unwrap();
                }
                if let Err(err) = fs.getattr(&ctx(), inner, None) {
                    failures.push(err.raw_os_error());
                }
            }
            failures
        });
        walker.join().unwrap()
    });
    assert!(failures.is_empty(), "walks failed: {failures:?}");
}
