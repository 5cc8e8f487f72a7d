//! A hostile guest: malformed descriptor chains, bad headers, protocol violations, floods.
//! The device consumes what it cannot use, resets what breaks the rules, and keeps working.

use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_INDIRECT;

use super::*;

const PORT: u32 = 1234;
const GUEST_PORT: u32 = 5000;

type ChainBuilder = Box<dyn Fn(u16, u64) -> Vec<RawDescriptor>>;

/// A good connection request still gets its RESPONSE (and is then reset by the guest).
fn assert_still_works(guest: &mut TestGuest, listener: &VsockListener, guest_port: u32) {
    let _stream = guest.connect_from_guest(listener, guest_port, PORT);
    guest.send(guest.hdr(OP_RST, guest_port, PORT), &[]);
}

#[test]
fn malformed_tx_chains_are_consumed_and_the_device_keeps_working() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let request = guest.hdr(OP_REQUEST, GUEST_PORT, PORT);
    let rw_base = guest.hdr(OP_RW, GUEST_PORT, PORT);
    let rw = |len| VsockHeader { len, ..rw_base };
    let hdr_len = PKT_HEADER_SIZE as u32;
    let outside = MEM_SIZE as u64 + 0x1000;
    let (next, write) = (VRING_DESC_F_NEXT, VRING_DESC_F_WRITE);
    let cases: Vec<(&str, VsockHeader, ChainBuilder)> = vec![
        (
            "header descriptor shorter than a header",
            request,
            Box::new(|_, addr| vec![desc(addr, 20, 0, 0)]),
        ),
        (
            "write-only header descriptor",
            request,
            Box::new(move |_, addr| vec![desc(addr, hdr_len, write, 0)]),
        ),
        (
            "write-only data descriptor",
            rw(8),
            Box::new(move |head, addr| {
                vec![
                    desc(addr, hdr_len, next, head + 1),
                    desc(addr + DATA_OFFSET, 8, write, 0),
                ]
            }),
        ),
        (
            "len larger than the data descriptor",
            rw(1000),
            Box::new(move |head, addr| {
                vec![
                    desc(addr, hdr_len, next, head + 1),
                    desc(addr + DATA_OFFSET, 100, 0, 0),
                ]
            }),
        ),
        (
            "len larger than the maximum payload",
            rw(MAX_PKT_PAYLOAD + 1),
            Box::new(move |head, addr| {
                vec![
                    desc(addr, hdr_len, next, head + 1),
                    desc(addr + DATA_OFFSET, MAX_PKT_PAYLOAD + 1, 0, 0),
                ]
            }),
        ),
        (
            "len set but no data descriptor",
            rw(8),
            Box::new(move |_, addr| vec![desc(addr, hdr_len, 0, 0)]),
        ),
        (
            "next index beyond the queue",
            rw(8),
            Box::new(move |_, addr| vec![desc(addr, hdr_len, next, 300)]),
        ),
        (
            "chain looping on itself (longer than the queue)",
            rw(8),
            Box::new(move |head, addr| vec![desc(addr, hdr_len, next, head)]),
        ),
        (
            "header outside guest memory",
            request,
            Box::new(move |_, _| vec![desc(outside, hdr_len, 0, 0)]),
        ),
        (
            "header across the end of guest memory",
            request,
            Box::new(move |_, _| vec![desc(MEM_SIZE as u64 - 20, hdr_len, 0, 0)]),
        ),
        (
            "data outside guest memory",
            rw(8),
            Box::new(move |head, addr| {
                vec![desc(addr, hdr_len, next, head + 1), desc(outside, 8, 0, 0)]
            }),
        ),
        (
            "indirect table of a bad size",
            request,
            Box::new(move |_, addr| vec![desc(addr + DATA_OFFSET, 17, VRING_DESC_F_INDIRECT, 0)]),
        ),
    ];
    let mem_ref = guest.mem;
    for (round, (what, hdr, build)) in cases.into_iter().enumerate() {
        let head = guest.push_chain(TX_QUEUE, |head, addr| {
            mem_ref
                .write_slice(&hdr.to_bytes(), GuestAddress(addr))
                .unwrap();
            build(head, addr)
        });
        assert_eq!(guest.tx_used.last(), Some(&(head, 0)), "{what}");
        assert_eq!(guest.connection_count(), 0, "{what}");
        // Whatever the device answered (a RST for a looping chain it could read), it still
        // serves a good request.
        guest.provide_rx(2, RX_BUF);
        for packet in guest.recv() {
            assert_eq!(packet.hdr.op, OP_RST, "{what}");
        }
        assert_still_works(&mut guest, &listener, GUEST_PORT + 1 + round as u32);
    }
}

#[test]
fn malformed_rx_chains_are_consumed_and_the_next_buffer_is_used() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let _listener = guest.handle.listen(PORT).unwrap();
    let hdr_len = PKT_HEADER_SIZE as u32;
    let (next, write) = (VRING_DESC_F_NEXT, VRING_DESC_F_WRITE);
    let outside = MEM_SIZE as u64 + 0x1000;
    let bad: [ChainBuilder; 4] = [
        // Read-only: the device may not write it.
        Box::new(move |head, addr| {
            vec![
                desc(addr, hdr_len, next, head + 1),
                desc(addr + DATA_OFFSET, RX_BUF, 0, 0),
            ]
        }),
        // Too short for a header.
        Box::new(move |_, addr| vec![desc(addr, 30, write, 0)]),
        // Outside guest memory.
        Box::new(move |head, _| {
            vec![
                desc(outside, hdr_len, write | next, head + 1),
                desc(outside + 0x100, RX_BUF, write, 0),
            ]
        }),
        // Next index beyond the queue.
        Box::new(move |_, addr| vec![desc(addr, hdr_len, write | next, 999)]),
    ];
    for build in bad {
        guest.push_chain(RX_QUEUE, build);
    }
    guest.provide_rx(1, RX_BUF);
    guest.send(guest.hdr(OP_REQUEST, GUEST_PORT, PORT), &[]);
    let used = guest.take_used(RX_QUEUE);
    let lens: Vec<u32> = used.iter().map(|&(_, len)| len).collect();
    assert_eq!(lens, [0, 0, 0, 0, PKT_HEADER_SIZE as u32]);
    assert_eq!(guest.connection_count(), 1);
}

#[test]
fn unknown_op_is_reset() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    guest.provide_rx(2, RX_BUF);
    guest.send(guest.hdr(99, GUEST_PORT, PORT), &[]);
    let reset = guest.recv_one();
    assert_eq!(reset.hdr.op, OP_RST);
    assert_eq!((reset.hdr.src_port, reset.hdr.dst_port), (PORT, GUEST_PORT));
    assert!(read_to_eof(&mut stream).is_empty());
    assert_eq!(guest.connection_count(), 0);

    // And with no connection.
    guest.send(guest.hdr(0, 6000, 4444), &[]);
    assert_eq!(guest.recv_one().hdr.op, OP_RST);
}

#[test]
fn wrong_cids_are_refused_or_dropped() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    guest.provide_rx(4, RX_BUF);

    // To another CID: refused, as from that CID.
    let to_sibling = VsockHeader {
        dst_cid: 5,
        ..guest.hdr(OP_REQUEST, GUEST_PORT, PORT)
    };
    guest.send(to_sibling, &[]);
    let reset = guest.recv_one();
    assert_eq!(reset.hdr.op, OP_RST);
    assert_eq!((reset.hdr.src_cid, reset.hdr.dst_cid), (5, GUEST_CID));

    // From another CID: dropped.
    let spoofed = VsockHeader {
        src_cid: 7,
        ..guest.hdr(OP_REQUEST, GUEST_PORT, PORT)
    };
    guest.send(spoofed, &[]);
    assert!(guest.recv().is_empty());
    assert_eq!(guest.connection_count(), 0);
    assert!(listener.accept_timeout(Duration::ZERO).unwrap().is_none());

    // Spoofed data for a live connection does not reach it.
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    let spoofed = VsockHeader {
        src_cid: 7,
        ..guest.hdr(OP_RW, GUEST_PORT, PORT)
    };
    guest.send(spoofed, b"spoofed");
    assert!(read_available(&mut stream).is_empty());
    assert_eq!(guest.connection_count(), 1);
}

#[test]
fn non_stream_type_is_reset() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let _listener = guest.handle.listen(PORT).unwrap();
    guest.provide_rx(1, RX_BUF);
    let seqpacket = VsockHeader {
        type_: 2,
        ..guest.hdr(OP_REQUEST, GUEST_PORT, PORT)
    };
    guest.send(seqpacket, &[]);
    let reset = guest.recv_one();
    assert_eq!((reset.hdr.op, reset.hdr.type_), (OP_RST, 2));
    assert_eq!(guest.connection_count(), 0);
}

#[test]
fn guest_exceeding_granted_credit_is_reset() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    let data = pattern(CONN_BUF_ALLOC as usize + 1);
    let half = CONN_BUF_ALLOC as usize / 2;
    // Exactly the credit granted in the RESPONSE (no rx buffers: no update can reach it).
    guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), &data[..half]);
    guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), &data[half..2 * half]);
    assert_eq!(guest.connection_count(), 1);
    // One byte more.
    guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), &data[2 * half..]);
    assert_eq!(guest.connection_count(), 0);
    guest.provide_rx(2, RX_BUF);
    assert_eq!(guest.recv_one().hdr.op, OP_RST);
    let got = read_to_eof(&mut stream);
    assert!(got.len() <= CONN_BUF_ALLOC as usize);
    assert_eq!(got[..], data[..got.len()]);
}

#[test]
fn protocol_violations_on_a_connection_are_reset() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let violations: [(u16, u32); 3] = [
        (OP_REQUEST, 0),  // a second REQUEST
        (OP_RESPONSE, 0), // a RESPONSE to nothing
        (OP_RW, 1),       // data after SHUTDOWN(SEND)
    ];
    for (round, (op, send_shutdown_first)) in violations.into_iter().enumerate() {
        let guest_port = GUEST_PORT + round as u32;
        let mut stream = guest.connect_from_guest(&listener, guest_port, PORT);
        guest.provide_rx(4, RX_BUF);
        if send_shutdown_first == 1 {
            let shutdown = VsockHeader {
                flags: SHUTDOWN_SEND,
                ..guest.hdr(OP_SHUTDOWN, guest_port, PORT)
            };
            guest.send(shutdown, &[]);
        }
        guest.send(guest.hdr(op, guest_port, PORT), b"x");
        let reset = guest.recv_one();
        assert_eq!(reset.hdr.op, OP_RST, "op {op}");
        assert!(read_to_eof(&mut stream).is_empty(), "op {op}");
        assert_eq!(guest.connection_count(), 0, "op {op}");
    }
    // Data and credit packets for unknown connections are refused too.
    for op in [
        OP_RW,
        OP_SHUTDOWN,
        OP_CREDIT_UPDATE,
        OP_CREDIT_REQUEST,
        OP_RESPONSE,
    ] {
        guest.send(guest.hdr(op, 7777, 8888), b"y");
        assert_eq!(guest.recv_one().hdr.op, OP_RST, "op {op}");
    }
}

#[test]
fn lying_fwd_cnt_leaves_the_guest_without_credit() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    let lie = VsockHeader {
        fwd_cnt: 1000,
        ..guest.hdr(OP_CREDIT_UPDATE, GUEST_PORT, PORT)
    };
    guest.send(lie, &[]);
    write_all(&mut stream, b"data");
    guest.provide_rx(4, RX_BUF);
    guest.pump();
    assert_eq!(guest.recv_one().hdr.op, OP_CREDIT_REQUEST);
    // The truth unblocks it.
    guest.send(guest.hdr(OP_CREDIT_UPDATE, GUEST_PORT, PORT), &[]);
    guest.pump();
    assert_eq!(guest.recv_one().data, b"data");
}

#[test]
fn flood_of_resets_is_bounded() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    for port in 0..(MAX_PENDING_RESETS as u32 + 100) {
        guest.send(guest.hdr(OP_RW, port, 1), b"z");
    }
    let mut resets = 0;
    for _ in 0..100 {
        guest.provide_rx(64, RX_BUF);
        let packets = guest.recv();
        if packets.is_empty() {
            break;
        }
        resets += packets.len();
    }
    assert_eq!(resets, MAX_PENDING_RESETS);
}

#[test]
fn rx_buffers_without_data_room_do_not_stall_the_queue() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    write_all(&mut stream, b"payload");
    guest.provide_rx(3, 0);
    guest.pump();
    assert!(guest.recv().is_empty());
    guest.provide_rx(1, RX_BUF);
    guest.pump();
    assert_eq!(guest.recv_one().data, b"payload");
}
