//! A hostile guest tries to reach host files outside the share: `..`, names with `/` or NUL,
//! symlinks pointing out (absolute and relative), device nodes, and link/rename targets that
//! are not share directories.

use fuse_backend_rs::abi::fuse_abi::{LinkIn, MkdirIn, MknodIn, RenameIn};

use super::*;

/// A share with `hello.txt`, a directory `sub` holding `inner.txt`, and symlinks leading out
/// of the share: `evil -> /etc`, `up -> ../../..`, `pw -> /etc/passwd`.
fn share_with_escapes() -> tempfile::TempDir {
    let share = share_with_file();
    std::fs::create_dir(share.path().join("sub")).unwrap();
    std::fs::write(share.path().join("sub/inner.txt"), b"inner").unwrap();
    for (name, target) in [("evil", "/etc"), ("up", "../../.."), ("pw", "/etc/passwd")] {
        std::os::unix::fs::symlink(target, share.path().join(name)).unwrap();
    }
    share
}

#[test]
fn dot_and_dotdot_lookups_are_refused_everywhere() {
    let share = share_with_escapes();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    assert_eq!(
        guest.lookup(ROOT_ID, b"..").map(|e| e.nodeid),
        Err(libc::EINVAL)
    );
    assert_eq!(
        guest.lookup(ROOT_ID, b".").map(|e| e.nodeid),
        Err(libc::EINVAL)
    );
    let sub = guest.lookup(ROOT_ID, b"sub").unwrap().nodeid;
    assert_eq!(
        guest.lookup(sub, b"..").map(|e| e.nodeid),
        Err(libc::EINVAL)
    );
    // The root is still the share.
    assert!(guest.lookup(ROOT_ID, b"hello.txt").is_ok());
}

#[test]
fn names_with_slash_nul_or_dots_are_refused() {
    let share = share_with_escapes();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    for name in [
        &b"sub/inner.txt"[..],
        b"../etc",
        b"/etc",
        b"",
        b"evil/passwd",
    ] {
        assert_eq!(
            guest.lookup(ROOT_ID, name).map(|e| e.nodeid),
            Err(libc::EINVAL),
            "{name:?}"
        );
    }
    assert_eq!(
        guest.lookup(ROOT_ID, &[b'n'; 256]).map(|e| e.nodeid),
        Err(libc::ENAMETOOLONG)
    );
    // A NUL inside the name: the kernel never sends one, the device does not cut at it.
    let lookup = guest.fuse_request(Opcode::Lookup as u32, ROOT_ID, &[b"hello.txt\0junk\0"]);
    assert_eq!(guest.send_raw(&lookup).header.error, -libc::EINVAL);
    // No NUL at all.
    let lookup = guest.fuse_request(Opcode::Lookup as u32, ROOT_ID, &[b"hello.txt"]);
    assert_eq!(guest.send_raw(&lookup).header.error, -libc::EINVAL);

    for name in [&b"a/b"[..], b"..", b".", b"../outside"] {
        assert_eq!(
            guest.create(ROOT_ID, name, 0o600).map(|_| ()),
            Err(libc::EINVAL)
        );
        let mkdir = MkdirIn {
            mode: 0o755,
            umask: 0,
        };
        let result = guest.call(Opcode::Mkdir, ROOT_ID, &[mkdir.as_slice(), &cname(name)]);
        assert_eq!(result, Err(libc::EINVAL));
        let rename = RenameIn { newdir: ROOT_ID };
        let result = guest.call(
            Opcode::Rename,
            ROOT_ID,
            &[rename.as_slice(), b"hello.txt\0", &cname(name)],
        );
        assert_eq!(result, Err(libc::EINVAL));
    }
    assert_eq!(
        guest.call(Opcode::Unlink, ROOT_ID, &[b"..\0"]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        guest.call(Opcode::Rmdir, ROOT_ID, &[b"sub/..\0"]),
        Err(libc::EINVAL)
    );
    assert!(share.path().join("hello.txt").exists());
    assert!(share.path().join("sub/inner.txt").exists());
}

/// Checks that `name` (a symlink in the share) is seen as a symlink with target `target`, and
/// that the host never follows it.
fn assert_symlink_not_followed(guest: &mut TestGuest<'_>, name: &[u8], target: &[u8]) {
    let entry = guest.lookup(ROOT_ID, name).unwrap();
    assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFLNK, "{name:?}");
    assert_eq!(guest.readlink(entry.nodeid).unwrap(), target);
    for child in [&b"passwd"[..], b"etc", b"hello.txt"] {
        assert!(
            guest.lookup(entry.nodeid, child).is_err(),
            "{name:?}/{child:?}"
        );
    }
    assert!(
        guest
            .open(Opcode::Open, entry.nodeid, libc::O_RDONLY)
            .is_err()
    );
    assert!(
        guest
            .open(Opcode::Opendir, entry.nodeid, libc::O_RDONLY)
            .is_err()
    );
    assert!(
        guest
            .open(Opcode::Open, entry.nodeid, libc::O_RDWR)
            .is_err()
    );
}

#[test]
fn absolute_symlinks_are_returned_not_followed() {
    let share = share_with_escapes();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    assert_symlink_not_followed(&mut guest, b"evil", b"/etc");
    assert_symlink_not_followed(&mut guest, b"pw", b"/etc/passwd");
}

#[test]
fn relative_symlinks_climbing_out_are_returned_not_followed() {
    let share = share_with_escapes();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    assert_symlink_not_followed(&mut guest, b"up", b"../../..");
}

#[test]
fn symlinks_the_guest_creates_stay_literal() {
    let share = share_with_escapes();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let entry: EntryOut = guest
        .call(Opcode::Symlink, ROOT_ID, &[b"shadow\0/etc/shadow\0"])
        .map(|body| parse(&body))
        .unwrap();
    let on_host = std::fs::read_link(share.path().join("shadow")).unwrap();
    assert_eq!(on_host, Path::new("/etc/shadow"));
    assert!(
        guest
            .open(Opcode::Open, entry.nodeid, libc::O_RDONLY)
            .is_err()
    );
    // The link's own name is checked; its target is not a name.
    assert_eq!(
        guest.call(Opcode::Symlink, ROOT_ID, &[b"../x\0/etc\0"]),
        Err(libc::EINVAL)
    );
}

#[test]
fn device_nodes_are_refused_other_nodes_not_opened() {
    let share = share_with_escapes();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let mknod = |mode: u32, rdev: u64| MknodIn {
        mode: mode | 0o666,
        rdev: u32::try_from(rdev).unwrap(),
        umask: 0,
        padding: 0,
    };
    // /dev/mem's and /dev/sda's numbers.
    for (kind, rdev) in [
        (libc::S_IFCHR, libc::makedev(1, 1)),
        (libc::S_IFBLK, libc::makedev(8, 0)),
    ] {
        let args = mknod(kind, rdev);
        let result = guest.call(Opcode::Mknod, ROOT_ID, &[args.as_slice(), b"dev\0"]);
        assert_eq!(result, Err(libc::EPERM));
        assert!(std::fs::symlink_metadata(share.path().join("dev")).is_err());
    }
    // A FIFO is made, but the host never opens it (it would block the event loop).
    let args = mknod(libc::S_IFIFO, 0);
    let body = guest
        .call(Opcode::Mknod, ROOT_ID, &[args.as_slice(), b"fifo\0"])
        .unwrap();
    let on_host = std::fs::symlink_metadata(share.path().join("fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &on_host.file_type()
    ));
    let entry: EntryOut = parse(&body);
    assert!(
        guest
            .open(Opcode::Open, entry.nodeid, libc::O_RDONLY)
            .is_err()
    );
}

#[test]
fn link_and_rename_targets_must_be_share_directories() {
    let share = share_with_escapes();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let hello = guest.lookup(ROOT_ID, b"hello.txt").unwrap().nodeid;
    let evil = guest.lookup(ROOT_ID, b"evil").unwrap().nodeid;
    let link = LinkIn { oldnodeid: hello };
    // A parent the guest never looked up, and a symlink to /etc as the parent.
    for parent in [0xdead_beef, evil] {
        assert!(
            guest
                .call(Opcode::Link, parent, &[link.as_slice(), b"stolen\0"])
                .is_err()
        );
        let rename = RenameIn { newdir: parent };
        let result = guest.call(
            Opcode::Rename,
            ROOT_ID,
            &[rename.as_slice(), b"hello.txt\0", b"stolen\0"],
        );
        assert!(result.is_err());
    }
    assert!(!Path::new("/etc/stolen").exists());
    assert!(share.path().join("hello.txt").exists());
    // Within the share both work.
    let sub = guest.lookup(ROOT_ID, b"sub").unwrap().nodeid;
    assert!(
        guest
            .call(Opcode::Link, sub, &[link.as_slice(), b"linked\0"])
            .is_ok()
    );
    assert_eq!(
        std::fs::read(share.path().join("sub/linked")).unwrap(),
        b"hello from the host\n"
    );
}
