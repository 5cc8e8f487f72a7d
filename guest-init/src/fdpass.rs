//! Passing one descriptor over a Unix socket with `SCM_RIGHTS`: the container stage hands
//! its terminal's master to guest-init this way.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Room for one `cmsghdr` carrying one descriptor (aligned as the kernel wants).
#[repr(C, align(8))]
struct OneFdControl([u8; 32]);

/// Sends `fd` over the socket `sock`, with one byte of data.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [b'T'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = OneFdControl([0; 32]);
    // SAFETY: CMSG_SPACE/CMSG_LEN compute sizes; `control` is larger than one fd's space.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize,
            libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize,
        )
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points at `control`, big enough for one header with one fd; the first
    // header is written within it before sendmsg reads it; `iov` and `byte` outlive the call.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`] without waiting: the sender sent it before
/// it reported success, so it is queued already or will never come.
pub fn recv_fd_now(sock: RawFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = OneFdControl([0; 32]);
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: `msg` points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `msg`; CMSG_FIRSTHDR checks msg_controllen before pointing.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n != 1
            || cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || (*cmsg).cmsg_len != libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected one descriptor",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_crosses_and_nothing_queued_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        assert!(recv_fd_now(b.as_raw_fd()).is_err());
        let (mut left, right) = UnixStream::pair().unwrap();
        send_fd(a.as_raw_fd(), right.as_raw_fd()).unwrap();
        drop(right);
        let passed = recv_fd_now(b.as_raw_fd()).unwrap();
        let mut passed = UnixStream::from(passed);
        passed.write_all(b"ok").unwrap();
        let mut got = [0u8; 2];
        left.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
    }
}
