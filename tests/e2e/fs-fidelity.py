# tests/e2e/fs-fidelity.py DIR [ENTRIES]: what a local file system does, checked in DIR (the
# container's root file system or a volume) by a container of the Debian image, under runc
# and runvm alike (tests/e2e/real.sh, real_fs_fidelity). Prints one "name: ok" line per check,
# or "name: FAIL ..." with what differed; a check whose answer depends on the host's file
# system (O_DIRECT, user.* attributes on a tmpfs before Linux 6.6) accepts the host's refusal
# and says which on stderr.
import ctypes
import errno
import fcntl
import mmap
import os
import shutil
import struct
import subprocess
import sys

DIR = sys.argv[1]
ENTRIES = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
os.makedirs(DIR, exist_ok=True)
os.chdir(DIR)
libc = ctypes.CDLL(None, use_errno=True)


def check(name, fn):
    try:
        problem = fn()
    except Exception as e:  # a check that raises failed
        problem = f"{type(e).__name__}: {e}"
    print(f"{name}: ok" if not problem else f"{name}: FAIL {problem}", flush=True)


def write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.write(fd, data)
    os.close(fd)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def hard_links():
    write("h1", b"one")
    os.link("h1", "h2")
    a, b = os.stat("h1"), os.stat("h2")
    if (a.st_ino, a.st_nlink) != (b.st_ino, 2):
        return f"ino {a.st_ino}/{b.st_ino} nlink {b.st_nlink}"
    write("h2", b"two")
    if read("h1") != b"two":
        return "a write through one name is not seen through the other"
    os.unlink("h1")
    return None if os.stat("h2").st_nlink == 1 else "nlink after unlink"


def rename_over_open():
    write("r1", b"old")
    write("r2", b"new")
    with open("r1", "rb") as old:
        os.rename("r2", "r1")
        if old.read() != b"old":
            return "the open file changed"
    return None if read("r1") == b"new" else "the new name has the old contents"


def unlinked_open():
    fd = os.open("u", os.O_RDWR | os.O_CREAT, 0o600)
    os.unlink("u")
    os.write(fd, b"still here")
    os.lseek(fd, 0, os.SEEK_SET)
    data, links = os.read(fd, 100), os.fstat(fd).st_nlink
    os.close(fd)
    if os.path.exists("u"):
        return "the name is still there"
    return None if (data, links) == (b"still here", 0) else f"{data!r} nlink {links}"


def long_names():
    name = "n" * 255
    write(name, b"x")
    if name not in os.listdir(".") or os.stat(name).st_size != 1:
        return "a 255-byte name is not listed or stat'd"
    os.unlink(name)
    try:
        write("n" * 256, b"x")
    except OSError as e:
        return None if e.errno == errno.ENAMETOOLONG else f"256 bytes: {e}"
    return "a 256-byte name was accepted"


def sparse():
    fd = os.open("s", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.pwrite(fd, b"d" * 4096, 1 << 20)
    data, hole = os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE)
    st = os.fstat(fd)
    os.close(fd)
    if (data, hole, st.st_size) != (1 << 20, 0, (1 << 20) + 4096):
        return f"SEEK_DATA {data} SEEK_HOLE {hole} size {st.st_size}"
    return None if st.st_blocks * 512 < (1 << 20) else f"{st.st_blocks} blocks"


def fallocate():
    fd = os.open("f", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.posix_fallocate(fd, 0, 1 << 20)
    st = os.fstat(fd)
    os.close(fd)
    if st.st_size != 1 << 20 or st.st_blocks * 512 < (1 << 20):
        return f"size {st.st_size} blocks {st.st_blocks}"
    return None


def o_direct():
    try:
        fd = os.open("d", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError as e:
        if e.errno == errno.EINVAL:
            print("o_direct: the host file system refuses O_DIRECT", file=sys.stderr)
            return None
        raise
    buf = mmap.mmap(-1, 4096)
    buf.write(b"a" * 4096)
    n = os.pwritev(fd, [buf], 0)
    os.close(fd)
    return None if n == 4096 and read("d") == b"a" * 4096 else f"wrote {n}"


def mmap_shared():
    write("m", b"\0" * 8192)
    pid = os.fork()
    if pid == 0:
        with open("m", "r+b") as f:
            m = mmap.mmap(f.fileno(), 8192)
            m[4096:4101] = b"hello"
            m.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    return None if read("m")[4096:4101] == b"hello" else "the child's mapped write is not in the file"


def locks():
    write("l", b"")
    a = os.open("l", os.O_RDWR)
    fcntl.flock(a, fcntl.LOCK_EX)
    fcntl.lockf(a, fcntl.LOCK_EX)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        b = os.open("l", os.O_RDWR)
        out = b""
        for how, fn in (("flock", fcntl.flock), ("fcntl", fcntl.lockf)):
            try:
                fn(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
                out += how.encode() + b" taken "
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    out += how.encode() + f" {e} ".encode()
        os.write(w, out or b"-")
        os._exit(0)
    os.waitpid(pid, 0)
    out = os.read(r, 200)
    os.close(a)
    return None if out == b"-" else f"another process: {out.decode()}"


def delete_while_listing():
    # As busybox's rm and Python's own loops do: each entry deleted as the listing reaches
    # it, the directory read in several requests meanwhile.
    os.makedirs("del", exist_ok=True)
    for i in range(300):
        write(f"del/f{i}", b"")
    deleted = 0
    for entry in os.scandir("del"):
        os.unlink(entry.path)
        deleted += 1
    left = os.listdir("del")
    os.rmdir("del") if not left else None
    return None if deleted == 300 and not left else f"deleted {deleted}, left {len(left)}"


def dots():
    # `ls -a` (readdir) lists `.` and `..`; an empty directory has exactly those two, which C
    # code takes as "empty".
    os.makedirs("dots/sub", exist_ok=True)
    got = [subprocess.run(["ls", "-a1", d], capture_output=True, text=True, check=True)
           .stdout.split() for d in ("dots", "dots/sub")]
    os.rmdir("dots/sub")
    os.rmdir("dots")
    return None if got == [[".", "..", "sub"], [".", ".."]] else f"ls -a listed {got}"


def sockets_fifos():
    import socket
    for p in ("s.sock", "p.fifo"):
        if os.path.lexists(p):
            os.unlink(p)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("s.sock")
    server.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect("s.sock")
    conn, _ = server.accept()
    client.sendall(b"ping")
    got = conn.recv(4)
    os.mkfifo("p.fifo")
    pid = os.fork()
    if pid == 0:
        with open("p.fifo", "wb") as f:
            f.write(b"through the fifo")
        os._exit(0)
    with open("p.fifo", "rb") as f:
        piped = f.read()
    os.waitpid(pid, 0)
    kinds = (os.stat("s.sock").st_mode & 0o170000, os.stat("p.fifo").st_mode & 0o170000)
    for c in (conn, client, server):
        c.close()
    if got != b"ping" or piped != b"through the fifo":
        return f"socket {got!r}, fifo {piped!r}"
    return None if kinds == (0o140000, 0o010000) else f"kinds {kinds}"


def symlink_attrs():
    # What tar and dpkg do to the symlinks they extract: owner and times of the link itself.
    if os.path.lexists("sl"):
        os.unlink("sl")
    os.symlink("no-such-target", "sl")
    os.lchown("sl", 1234, 5678)
    os.utime("sl", ns=(1_000_000_000, 2_000_000_000), follow_symlinks=False)
    st = os.lstat("sl")
    got = (st.st_uid, st.st_gid, st.st_mtime_ns, os.readlink("sl"))
    want = (1234, 5678, 2_000_000_000, "no-such-target")
    return None if got == want else f"lstat {got}"


def tmpfile():
    # O_TMPFILE: a file without a name, given one by linkat; where the file system cannot,
    # EOPNOTSUPP (Python's tempfile then falls back), never another error.
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR):
            return f"O_TMPFILE: {e}"
        print(f"tmpfile: O_TMPFILE refused here ({e.strerror})", file=sys.stderr)
    else:
        os.write(fd, b"unnamed")
        if os.path.lexists("named"):
            os.unlink("named")
        # linkat(AT_SYMLINK_FOLLOW) through /proc (Python's os.link calls link(2) here).
        at_fdcwd, at_symlink_follow = -100, 0x400
        if libc.linkat(at_fdcwd, f"/proc/self/fd/{fd}".encode(), at_fdcwd, b"named",
                       at_symlink_follow) != 0:
            return f"linkat: {os.strerror(ctypes.get_errno())}"
        os.close(fd)
        if read("named") != b"unnamed":
            return "linked O_TMPFILE lost its data"
    import tempfile
    with tempfile.TemporaryFile(dir=".") as f:
        f.write(b"temporary")
        f.seek(0)
        return None if f.read() == b"temporary" else "TemporaryFile lost its data"


def inotify():
    class Event(ctypes.Structure):
        _fields_ = [("wd", ctypes.c_int), ("mask", ctypes.c_uint32),
                    ("cookie", ctypes.c_uint32), ("len", ctypes.c_uint32)]
    os.makedirs("watched", exist_ok=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    IN_CREATE, IN_MODIFY = 0x100, 0x2
    if fd < 0 or libc.inotify_add_watch(fd, b"watched", IN_CREATE | IN_MODIFY) < 0:
        return f"inotify: errno {ctypes.get_errno()}"
    write("watched/new", b"x")
    data = os.read(fd, 4096)
    os.close(fd)
    names, off = [], 0
    while off < len(data):
        ev = Event.from_buffer_copy(data, off)
        name = data[off + 16:off + 16 + ev.len].rstrip(b"\0")
        names.append((ev.mask & (IN_CREATE | IN_MODIFY), name))
        off += 16 + ev.len
    return None if (IN_CREATE, b"new") in names else f"events {names}"


def many_entries():
    os.makedirs("many", exist_ok=True)
    for i in range(ENTRIES):
        os.close(os.open(f"many/{i:06}", os.O_WRONLY | os.O_CREAT, 0o644))
    listed = os.listdir("many")
    seen = sum(1 for _ in os.scandir("many"))
    for name in listed:
        os.unlink(f"many/{name}")
    os.rmdir("many")
    return None if len(listed) == seen == ENTRIES else f"listed {len(listed)} scanned {seen}"


def user_xattrs():
    write("x", b"")
    try:
        os.setxattr("x", "user.colour", b"blue")
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            print("user_xattrs: the host file system has no user.* attributes", file=sys.stderr)
            return None
        raise
    if os.getxattr("x", "user.colour") != b"blue" or "user.colour" not in os.listxattr("x"):
        return "not read back"
    os.removexattr("x", "user.colour")
    return None if "user.colour" not in os.listxattr("x") else "not removed"


def acl():
    # system.posix_acl_access: user::rw-, user:1000:r--, group::r--, mask::r--, other::---
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF),
               (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    write("a", b"", 0o600)
    os.setxattr("a", "system.posix_acl_access", blob)
    if os.getxattr("a", "system.posix_acl_access") != blob:
        return "the ACL read back differs"
    # The host applies the mask to the group bits (the guest may show the old mode for 1 s).
    return None


def capability():
    # security.capability v2: cap_net_raw (13) permitted and effective.
    blob = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    write("c", b"", 0o755)
    os.setxattr("c", "security.capability", blob)
    return None if os.getxattr("c", "security.capability") == blob else "not read back"


def setuid():
    # A set-user-ID root copy of id(1), run as nobody: its effective uid is root's.
    shutil.copy(shutil.which("id"), "suid-id")
    os.chown("suid-id", 0, 0)
    os.chmod("suid-id", 0o4755)
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          "./suid-id", "-u"], capture_output=True, text=True)
    return None if out.stdout.strip() == "0" else f"euid {out.stdout.strip()!r} {out.stderr.strip()}"


def ownership():
    old = os.umask(0o027)
    write("o", b"")
    os.mkdir("od", 0o777)
    os.umask(old)
    os.chown("o", 1234, 5678)
    st, sd = os.stat("o"), os.stat("od")
    got = (st.st_uid, st.st_gid, st.st_mode & 0o7777, sd.st_mode & 0o7777)
    return None if got == (1234, 5678, 0o640, 0o750) else f"uid gid modes {got}"


for name, fn in [("hard_links", hard_links), ("rename_over_open", rename_over_open),
                 ("unlinked_open", unlinked_open), ("long_names", long_names),
                 ("sparse", sparse), ("fallocate", fallocate), ("o_direct", o_direct),
                 ("mmap_shared", mmap_shared), ("locks", locks), ("inotify", inotify),
                 ("many_entries", many_entries), ("delete_while_listing", delete_while_listing),
                 ("dots", dots),
                 ("sockets_fifos", sockets_fifos), ("symlink_attrs", symlink_attrs),
                 ("tmpfile", tmpfile), ("user_xattrs", user_xattrs),
                 ("acl", acl), ("capability", capability), ("setuid", setuid),
                 ("ownership", ownership)]:
    check(name, fn)
