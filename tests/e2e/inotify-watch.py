# tests/e2e/inotify-watch.py DIR: what a container's file watcher (a dev server's hot reload)
# sees while the host edits DIR, a bind mount (tests/e2e/real.sh, real_host_edits). Prints
# "ready" once watching, then one line per inotify event in DIR and in directories that
# appear in it ("CREATE a.txt", "CREATE,ISDIR d", "MODIFY d/x.txt"), until an entry named
# "stop" appears (or 120 s pass).
import ctypes
import os
import select
import struct
import sys
import time

DIR = sys.argv[1]
EVENTS = [(0x2, "MODIFY"), (0x8, "CLOSE_WRITE"), (0x40, "MOVED_FROM"), (0x80, "MOVED_TO"),
          (0x100, "CREATE"), (0x200, "DELETE")]
IN_ISDIR = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
dirs = {}


def watch(path, rel):
    wd = libc.inotify_add_watch(fd, path.encode(), sum(bit for bit, _ in EVENTS))
    if wd < 0:
        sys.exit(f"inotify_add_watch {path}: {os.strerror(ctypes.get_errno())}")
    dirs[wd] = rel


watch(DIR, "")
print("ready", flush=True)
deadline = time.time() + 120
while time.time() < deadline:
    if not select.select([fd], [], [], 1)[0]:
        continue
    buf = os.read(fd, 65536)
    at = 0
    while at < len(buf):
        wd, mask, _cookie, size = struct.unpack_from("iIII", buf, at)
        name = buf[at + 16:at + 16 + size].rstrip(b"\0").decode()
        at += 16 + size
        kinds = [kind for bit, kind in EVENTS if mask & bit]
        if wd not in dirs or not name or not kinds:
            continue
        rel = dirs[wd] + name
        print(",".join(kinds + (["ISDIR"] if mask & IN_ISDIR else [])), rel, flush=True)
        if name == "stop":
            sys.exit(0)
        if mask & IN_ISDIR and mask & 0x180:
            watch(os.path.join(DIR, rel), rel + "/")
