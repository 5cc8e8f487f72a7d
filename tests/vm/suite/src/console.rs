//! The receiving end of `--console-socket`, as containerd's shim and conmon have it: a Unix
//! socket that gets a terminal's master with `SCM_RIGHTS`, and a reader that collects what
//! the container writes to its terminal.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A console socket whose master arrives on a thread (runvm sends it before `create` or a
/// detached `exec` returns).
pub struct ConsoleSocket {
    /// The socket's path.
    pub path: PathBuf,
    receiver: JoinHandle<(String, File)>,
}

impl ConsoleSocket {
    /// Listens at `path`.
    pub fn listen(path: &Path) -> ConsoleSocket {
        let listener = UnixListener::bind(path).expect("bind the console socket");
        let receiver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept on the console socket");
            receive(&conn)
        });
        ConsoleSocket {
            path: path.to_owned(),
            receiver,
        }
    }

    /// The name runvm sent with it and the master.
    pub fn master(self) -> (String, File) {
        self.receiver.join().expect("the console socket's receiver")
    }
}

/// One message with one descriptor.
fn receive(conn: &impl AsRawFd) -> (String, File) {
    let mut name = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: name.as_mut_ptr().cast(),
        iov_len: name.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel filled `msg`; CMSG_FIRSTHDR checks the length before pointing.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null(), "no descriptor came with the message");
        assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>())
    };
    let name = String::from_utf8_lossy(&name[..n as usize]).into_owned();
    // SAFETY: recvmsg just gave us this descriptor.
    (name, unsafe { File::from_raw_fd(fd) })
}

/// Everything read from a terminal's master so far, collected by a thread.
pub struct Screen(Arc<Mutex<String>>);

impl Screen {
    /// Starts reading `master`.
    pub fn read(master: &File) -> Screen {
        let text = Arc::new(Mutex::new(String::new()));
        let mut master = master.try_clone().expect("clone the master");
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let mut t = sink.lock().unwrap_or_else(|p| p.into_inner());
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Screen(text)
    }

    /// What was read so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits up to `limit` for `what` to appear; returns whether it did.
    pub fn wait_for(&self, what: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.text().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.text().contains(what)
    }
}
