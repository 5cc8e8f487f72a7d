//! Malformed chains and requests: each is completed (with nothing written, or an error reply)
//! and the device answers the next good request.

use super::*;

/// Checks that the device still answers a good request.
fn assert_still_works(guest: &mut TestGuest<'_>) {
    assert_eq!(guest.lookup(ROOT_ID, b"hello.txt").unwrap().attr.size, 20);
}

#[test]
fn chains_that_are_no_request_are_completed_empty() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let getattr = guest.fuse_request(
        Opcode::Getattr as u32,
        ROOT_ID,
        &[GetattrIn::default().as_slice()],
    );
    mem.write_slice(&getattr, GuestAddress(REQUEST_ADDR))
        .unwrap();
    let beyond = MEM_SIZE as u64 + 0x1000;
    let write = VRING_DESC_F_WRITE;
    let next = VRING_DESC_F_NEXT;
    let chains: Vec<Vec<RawDescriptor>> = vec![
        // Only a writable buffer: no request header to read.
        vec![desc(REPLY_ADDR, REPLY_LEN, write, 0)],
        // A header shorter than a fuse_in_header.
        vec![
            desc(REQUEST_ADDR, 20, next, 1),
            desc(REPLY_ADDR, REPLY_LEN, write, 0),
        ],
        // The request outside guest memory.
        vec![
            desc(beyond, 64, next, 1),
            desc(REPLY_ADDR, REPLY_LEN, write, 0),
        ],
        // The request straddling the end of guest memory.
        vec![
            desc(MEM_SIZE as u64 - 16, 64, next, 1),
            desc(REPLY_ADDR, REPLY_LEN, write, 0),
        ],
        // The reply buffer outside guest memory.
        vec![
            desc(REQUEST_ADDR, 56, next, 1),
            desc(beyond, REPLY_LEN, write, 0),
        ],
        // No reply buffer at all.
        vec![desc(REQUEST_ADDR, 56, 0, 0)],
        // A reply buffer too small for any reply.
        vec![
            desc(REQUEST_ADDR, 56, next, 1),
            desc(REPLY_ADDR, 8, write, 0),
        ],
        // A next pointer beyond the descriptor table.
        vec![desc(REQUEST_ADDR, 56, next, QUEUE_SIZE + 7)],
    ];
    for chain in chains {
        assert_eq!(guest.submit(REQUEST_QUEUE, &chain), [0], "{chain:?}");
        assert_still_works(&mut guest);
    }
}

#[test]
fn lying_lengths_get_error_replies() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    // A header claiming more bytes than the chain holds.
    let mut lookup = guest.fuse_request(Opcode::Lookup as u32, ROOT_ID, &[b"hello.txt\0"]);
    lookup[..4].copy_from_slice(&4096u32.to_le_bytes());
    assert_eq!(guest.send_raw(&lookup).header.error, -libc::EINVAL);
    // ... and fewer than a header.
    lookup[..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(guest.send_raw(&lookup).header.error, -libc::EINVAL);
    // A READ that does not fit its reply buffer is cut to it, a huge one refused.
    let read = ReadIn {
        size: u32::MAX,
        ..ReadIn::default()
    };
    let request = guest.fuse_request(Opcode::Read as u32, ROOT_ID, &[read.as_slice()]);
    assert_ne!(guest.send_raw(&request).header.error, 0);
    assert_still_works(&mut guest);
}

#[test]
fn unknown_opcodes_get_enosys() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    for opcode in [0, 7, 19, 50, 4096, u32::MAX] {
        let request = guest.fuse_request(opcode, ROOT_ID, &[&[0u8; 64]]);
        let reply = guest.send_raw(&request);
        assert_eq!(reply.header.error, -libc::ENOSYS, "opcode {opcode}");
        assert_eq!(reply.used_len, size_of::<OutHeader>() as u32);
    }
    assert_still_works(&mut guest);
}

#[test]
fn forgets_on_the_hiprio_queue_need_no_reply() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let inode = guest.lookup(ROOT_ID, b"hello.txt").unwrap().nodeid;
    for nodeid in [inode, ROOT_ID, 0, u64::MAX] {
        let forget = guest.fuse_request(Opcode::Forget as u32, nodeid, &[&u64::MAX.to_le_bytes()]);
        mem.write_slice(&forget, GuestAddress(REQUEST_ADDR))
            .unwrap();
        let chain = [desc(REQUEST_ADDR, forget.len() as u32, 0, 0)];
        assert_eq!(guest.submit(HIPRIO_QUEUE, &chain), [0]);
    }
    // Forgetting the root is ignored: the share is still reachable.
    assert_still_works(&mut guest);
}

#[test]
fn an_available_index_beyond_the_ring_stops_the_serving_thread() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let published = guest.queues.avail_idx(REQUEST_QUEUE);
    // More chains than the queue holds: no chain can be taken, however often it looks.
    guest
        .queues
        .set_avail_idx(REQUEST_QUEUE, published.wrapping_add(QUEUE_SIZE + 5));
    let device = Arc::clone(&guest.device);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        device.lock().unwrap().handle_queue_event(REQUEST_QUEUE);
        let _ = done.send(());
    });
    assert!(
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_ok(),
        "the serving thread spins on the lying ring"
    );
    assert!(guest.queues.take_used(REQUEST_QUEUE).is_empty());
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Checks that a new FUSE session works (random requests may have sent INIT, truncated or
/// renamed things).
fn assert_session_restarts(guest: &mut TestGuest<'_>) {
    guest.init().unwrap();
    assert!(guest.getattr(ROOT_ID).is_ok());
}

#[test]
fn random_requests_do_not_break_the_device() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    for round in 0..3000u32 {
        let opcode = (rng.next() % 52) as u32;
        // DESTROY ends the session: the driver would send INIT again.
        if opcode == Opcode::Destroy as u32 {
            continue;
        }
        let nodeid = [0, ROOT_ID, 2, 3, rng.next()][(rng.next() % 5) as usize];
        let args_len = (rng.next() % 300) as usize;
        let args: Vec<u8> = (0..args_len).map(|_| rng.next() as u8).collect();
        let mut request = guest.fuse_request(opcode, nodeid, &[&args]);
        if rng.next().is_multiple_of(4) {
            // Lie about the length.
            request[..4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
        }
        let reply = guest.send_raw(&request);
        assert!(reply.used_len <= REPLY_LEN, "round {round}");
        if round.is_multiple_of(100) {
            assert_session_restarts(&mut guest);
        }
    }
    assert_session_restarts(&mut guest);
}
