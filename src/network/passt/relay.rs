//! Frames between passt's stream and the virtio-net device's datagram socket, one thread
//! each way, blocking (back-pressure is the sockets'):
//! - to passt: a datagram is a 12-byte vnet header and a frame; the header must be empty
//!   (the NIC offers no offloads, so the device has already refused any other), the frame
//!   goes out behind its 4-byte big-endian length;
//! - from passt: a length, at most [`MAX_FRAME_LEN`] (a longer one means the stream lost
//!   its framing, and the relay stops), then that many bytes, sent as one datagram behind
//!   an empty header, without waiting: when the device's queue is full (the guest is not
//!   taking frames) the frame is dropped, as a full tap would, and TCP sends it again.
//!   Waiting there would stop the relay reading passt, and passt, which writes without
//!   waiting, would then cut a frame short and lose the stream's framing.
//!
//! When passt's end closes (it exited) or fails, both directions stop and one line says so,
//! with passt's last words.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::devices::virtio::net::{MAX_FRAME_LEN, VNET_HDR_LEN};

/// The length prefix of passt's protocol.
const LEN_PREFIX: usize = 4;

/// Starts the two relay threads between `stream` (passt's) and `datagrams` (the device's
/// peer). `tail` holds passt's last stderr lines; `stopping`, once set, means the relay is
/// being stopped on purpose (the container ended) and its end is not worth a line.
pub(super) fn spawn(
    stream: UnixStream,
    datagrams: UnixDatagram,
    tail: Arc<Mutex<VecDeque<String>>>,
    stopping: Arc<AtomicBool>,
) -> io::Result<()> {
    let (stream_in, datagrams_in) = (stream.try_clone()?, datagrams.try_clone()?);
    let stop = Stop {
        stream: stream.try_clone()?,
        datagrams: datagrams.try_clone()?,
        stopping: Arc::clone(&stopping),
        tail,
    };
    let stop_in = stop.clone_with()?;
    std::thread::Builder::new()
        .name("passt-tx".into())
        .spawn(move || {
            let result = to_passt(&datagrams, &mut &stream);
            stop.stop("sending to passt", result);
        })?;
    std::thread::Builder::new()
        .name("passt-rx".into())
        .spawn(move || {
            let result = from_passt(&mut &stream_in, &datagrams_in);
            stop_in.stop("reading from passt", result);
        })?;
    Ok(())
}

/// What ends both directions, once.
struct Stop {
    stream: UnixStream,
    datagrams: UnixDatagram,
    stopping: Arc<AtomicBool>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Stop {
    fn clone_with(&self) -> io::Result<Stop> {
        Ok(Stop {
            stream: self.stream.try_clone()?,
            datagrams: self.datagrams.try_clone()?,
            stopping: Arc::clone(&self.stopping),
            tail: Arc::clone(&self.tail),
        })
    }

    /// Shuts both sockets down (which ends the other thread); the first to stop says why,
    /// unless we shut passt's stream down ourselves (the container ended).
    fn stop(&self, doing: &str, result: io::Result<()>) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        let _ = self.datagrams.shutdown(Shutdown::Both);
        let why = match result {
            Ok(()) => "passt closed its end".to_string(),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => format!("{doing}: {e}"),
        };
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let said: Vec<&str> = tail.iter().map(String::as_str).collect();
        if said.is_empty() {
            eprintln!("runvm: the container's network stopped: {why}");
        } else {
            eprintln!(
                "runvm: the container's network stopped: {why} (passt: {})",
                said.join("; ")
            );
        }
    }
}

/// The device's datagrams to passt's stream, until either side ends: `Ok` when the device's
/// side closed.
pub(super) fn to_passt(datagrams: &UnixDatagram, stream: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; LEN_PREFIX + VNET_HDR_LEN + MAX_FRAME_LEN];
    loop {
        // The frame lands right behind room for the length, which then overwrites the end of
        // the (checked, dropped) header: one write per frame.
        let n = datagrams.recv(&mut buf[LEN_PREFIX..])?;
        if n == 0 {
            return Ok(());
        }
        let Some(frame_len) = n.checked_sub(VNET_HDR_LEN).filter(|&l| l > 0) else {
            continue;
        };
        let header = &buf[LEN_PREFIX..LEN_PREFIX + VNET_HDR_LEN];
        if header.iter().any(|&b| b != 0) {
            // Only an empty header can be sent on: passt takes whole frames.
            continue;
        }
        let start = VNET_HDR_LEN;
        let len = u32::try_from(frame_len).map_err(io::Error::other)?;
        buf[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
        stream.write_all(&buf[start..LEN_PREFIX + n])?;
    }
}

/// passt's stream to the device's datagrams, until either side ends: `Ok` at the end of
/// the stream between frames.
pub(super) fn from_passt(stream: &mut impl Read, datagrams: &UnixDatagram) -> io::Result<()> {
    let mut buf = vec![0u8; VNET_HDR_LEN + MAX_FRAME_LEN];
    loop {
        let mut prefix = [0u8; LEN_PREFIX];
        if !read_exact_or_end(stream, &mut prefix)? {
            return Ok(());
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len == 0 || len > MAX_FRAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes (at most {MAX_FRAME_LEN})"),
            ));
        }
        let frame = &mut buf[..VNET_HDR_LEN + len];
        frame[..VNET_HDR_LEN].fill(0);
        stream.read_exact(&mut frame[VNET_HDR_LEN..])?;
        match send_now(datagrams, frame) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sends `frame` as one datagram if the socket has room now (`WouldBlock` otherwise).
fn send_now(datagrams: &UnixDatagram, frame: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: send reads `frame.len()` bytes from `frame`, a live slice; the descriptor
        // is open for the duration of the call (borrowed from `datagrams`).
        let sent = unsafe {
            libc::send(
                datagrams.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Fills `buf`; `false` at the end of the stream before its first byte.
fn read_exact_or_end(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(frame: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; VNET_HDR_LEN];
        d.extend_from_slice(frame);
        d
    }

    #[test]
    fn frames_to_passt_get_their_length_and_lose_the_header() {
        let (device, relay) = UnixDatagram::pair().unwrap();
        device.send(&with_header(b"abcdef")).unwrap();
        // A header asking for an offload, and a datagram with no frame: not sent on.
        let mut offload = with_header(b"xyz");
        offload[0] = 1;
        device.send(&offload).unwrap();
        device.send(&[0u8; VNET_HDR_LEN]).unwrap();
        let big: Vec<u8> = (0..MAX_FRAME_LEN).map(|i| i as u8).collect();
        device.send(&with_header(&big)).unwrap();
        // A datagram socket sees no end when its peer closes: the relay's end is shut down,
        // as `Stop` does, and what was queued is still read first.
        relay.shutdown(Shutdown::Read).unwrap();
        let mut out = Vec::new();
        to_passt(&relay, &mut out).unwrap();
        let mut want = 6u32.to_be_bytes().to_vec();
        want.extend_from_slice(b"abcdef");
        want.extend_from_slice(&(MAX_FRAME_LEN as u32).to_be_bytes());
        want.extend_from_slice(&big);
        assert_eq!(out, want);
    }

    #[test]
    fn frames_from_passt_become_datagrams_behind_an_empty_header() {
        let (device, relay) = UnixDatagram::pair().unwrap();
        let mut stream = Vec::new();
        for frame in [&b"hello"[..], &[7u8; 1500][..]] {
            stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            stream.extend_from_slice(frame);
        }
        from_passt(&mut stream.as_slice(), &relay).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = device.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], with_header(b"hello").as_slice());
        let n = device.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], with_header(&[7u8; 1500]).as_slice());
    }

    #[test]
    fn frames_the_device_has_no_room_for_are_dropped_not_waited_for() {
        let (device, relay) = UnixDatagram::pair().unwrap();
        // Far more frames than a datagram queue holds: the relay never blocks, keeps reading
        // the stream to its end, and the device finds the first frames whole.
        let mut stream = Vec::new();
        let frames = 2000;
        for i in 0..frames {
            let frame = vec![(i % 251) as u8; 9000];
            stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            stream.extend_from_slice(&frame);
        }
        from_passt(&mut stream.as_slice(), &relay).unwrap();
        device.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 16384];
        let mut got = 0;
        while let Ok(n) = device.recv(&mut buf) {
            assert_eq!(n, VNET_HDR_LEN + 9000);
            assert_eq!(
                buf[VNET_HDR_LEN],
                (got % 251) as u8,
                "frame {got} whole and in order"
            );
            got += 1;
        }
        assert!(got > 0 && got < frames, "{got} of {frames} delivered");
    }

    #[test]
    fn a_stream_that_lost_its_framing_stops_the_relay() {
        let (_device, relay) = UnixDatagram::pair().unwrap();
        for len in [0u32, MAX_FRAME_LEN as u32 + 1, u32::MAX] {
            let stream = len.to_be_bytes();
            let err = from_passt(&mut &stream[..], &relay).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{len}");
        }
        // Cut inside a frame or inside a length.
        let mut cut = 10u32.to_be_bytes().to_vec();
        cut.extend_from_slice(b"abc");
        let err = from_passt(&mut cut.as_slice(), &relay).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = from_passt(&mut &[0u8, 0][..], &relay).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
