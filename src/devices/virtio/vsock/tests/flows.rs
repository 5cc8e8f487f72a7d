//! What a well-behaved guest and the host do: connect both ways, move data under credit,
//! shut down and reset.

use super::super::connection::ConnState;
use super::super::muxer::ConnKey;
use super::*;

const PORT: u32 = 1234;
const GUEST_PORT: u32 = 5000;

#[test]
fn guest_connects_to_listener_and_data_flows_both_ways() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    guest.provide_rx(1, RX_BUF);
    guest.send(guest.hdr(OP_REQUEST, GUEST_PORT, PORT), &[]);
    let response = guest.recv_one();
    assert_eq!(
        response.hdr,
        VsockHeader {
            src_cid: HOST_CID,
            dst_cid: GUEST_CID,
            src_port: PORT,
            dst_port: GUEST_PORT,
            len: 0,
            type_: TYPE_STREAM,
            op: OP_RESPONSE,
            flags: 0,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: 0,
        }
    );
    let mut stream = listener
        .accept_timeout(Duration::from_secs(1))
        .unwrap()
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();

    // Guest to host.
    let hello = pattern(3000);
    guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), &hello);
    let mut got = vec![0u8; hello.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, hello);

    // Host to guest: five rx buffers' worth.
    let big = pattern(20_000);
    write_all(&mut stream, &big);
    guest.provide_rx(8, RX_BUF);
    guest.pump();
    let packets = guest.recv();
    assert_eq!(packets.len(), 5);
    let mut received = Vec::new();
    for packet in &packets {
        assert_eq!(packet.hdr.op, OP_RW);
        assert_eq!(
            (packet.hdr.src_port, packet.hdr.dst_port),
            (PORT, GUEST_PORT)
        );
        assert_eq!(packet.hdr.fwd_cnt, hello.len() as u32);
        assert!(packet.data.len() <= RX_BUF as usize);
        received.extend_from_slice(&packet.data);
    }
    assert_eq!(received, big);
    assert!(guest.interrupt.count() > 0);
}

#[test]
fn host_data_never_exceeds_guest_credit() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    const GUEST_BUF: u32 = 8192;
    let base = guest.hdr(OP_CREDIT_UPDATE, GUEST_PORT, PORT);
    let credit = move |fwd_cnt: u32| VsockHeader {
        buf_alloc: GUEST_BUF,
        fwd_cnt,
        ..base
    };
    let update = credit(0);
    guest.send(update, &[]);

    let data = pattern(4 * GUEST_BUF as usize + 100);
    write_all(&mut stream, &data);
    guest.provide_rx(16, RX_BUF);
    guest.pump();
    let mut received = Vec::new();
    let mut credit_requests = 0;
    for _ in 0..20 {
        let consumed = received.len() as u32;
        for packet in guest.recv() {
            match packet.hdr.op {
                OP_RW => received.extend_from_slice(&packet.data),
                OP_CREDIT_REQUEST => credit_requests += 1,
                op => panic!("unexpected op {op}"),
            }
            assert!(
                received.len() as u32 - consumed <= GUEST_BUF,
                "credit exceeded"
            );
        }
        if received.len() == data.len() {
            break;
        }
        // The guest application reads everything; the driver tells the device.
        let update = credit(received.len() as u32);
        guest.provide_rx(4, RX_BUF);
        guest.send(update, &[]);
        guest.pump();
    }
    assert_eq!(received, data);
    assert!(credit_requests >= 1, "a starved device asks for credit");
}

#[test]
fn guest_data_beyond_our_buffer_flows_with_credit_updates() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    let data = pattern(4 * CONN_BUF_ALLOC as usize + 1234);
    guest.provide_rx(8, RX_BUF);
    let (mut peer_buf_alloc, mut peer_fwd_cnt) = (CONN_BUF_ALLOC, 0u32);
    let (mut sent, mut host_got, mut updates) = (0usize, Vec::new(), 0);
    let mut max_buffered = 0;
    let key = ConnKey {
        local_port: PORT,
        peer_port: GUEST_PORT,
    };
    for _ in 0..10_000 {
        if host_got.len() == data.len() {
            break;
        }
        let credit = peer_buf_alloc - (sent as u32 - peer_fwd_cnt);
        if credit > 0 && sent < data.len() {
            let n = (credit as usize).min(32 * 1024).min(data.len() - sent);
            guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), &data[sent..sent + n]);
            sent += n;
            continue;
        }
        // Out of credit: the device tells the guest what it drained; only when nothing
        // moves does the host read (so the socket fills and the device has to buffer).
        guest.pump();
        let mut packets = guest.recv();
        if packets.is_empty() {
            let buffered = guest
                .dev()
                .muxer
                .connection(key)
                .map_or(0, |conn| conn.buffered_for_host());
            assert!(buffered <= CONN_BUF_ALLOC as usize);
            max_buffered = max_buffered.max(buffered);
            host_got.extend(read_available(&mut stream));
            guest.pump();
            packets = guest.recv();
        }
        for packet in packets {
            assert_eq!(packet.hdr.op, OP_CREDIT_UPDATE);
            updates += 1;
            peer_buf_alloc = packet.hdr.buf_alloc;
            peer_fwd_cnt = packet.hdr.fwd_cnt;
            guest.provide_rx(1, RX_BUF);
        }
    }
    assert_eq!(host_got.len(), data.len());
    assert!(host_got == data, "bytes differ");
    assert!(updates >= 3, "only {updates} credit updates");
    assert!(max_buffered > 0, "the device never had to buffer");
    assert_eq!(guest.connection_count(), 1);
}

#[test]
fn request_to_unlisted_port_is_reset() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    drop(guest.handle.listen(PORT).unwrap());
    guest.provide_rx(2, RX_BUF);
    for port in [PORT, 4321] {
        guest.send(guest.hdr(OP_REQUEST, GUEST_PORT, port), &[]);
        let reset = guest.recv_one();
        assert_eq!(reset.hdr.op, OP_RST);
        assert_eq!(
            (reset.hdr.src_cid, reset.hdr.dst_cid),
            (HOST_CID, GUEST_CID)
        );
        assert_eq!((reset.hdr.src_port, reset.hdr.dst_port), (port, GUEST_PORT));
    }
    assert_eq!(guest.connection_count(), 0);
}

#[test]
fn host_connect_sends_request_and_data_flows_after_response() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let mut stream = guest.handle.connect(7000).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write_all(&mut stream, b"early bytes");
    guest.wake();
    guest.provide_rx(4, RX_BUF);
    let request = guest.recv_one();
    assert_eq!(request.hdr.op, OP_REQUEST);
    assert_eq!(request.hdr.dst_port, 7000);
    assert!(request.hdr.src_port >= EPHEMERAL_PORT_START);
    assert_eq!(request.hdr.buf_alloc, CONN_BUF_ALLOC);
    let local = request.hdr.src_port;

    // Nothing flows before the guest answers.
    guest.pump();
    assert!(guest.recv().is_empty());

    guest.send(guest.hdr(OP_RESPONSE, 7000, local), &[]);
    guest.pump();
    let data = guest.recv_one();
    assert_eq!(data.hdr.op, OP_RW);
    assert_eq!(data.data, b"early bytes");

    guest.send(guest.hdr(OP_RW, 7000, local), b"reply");
    let mut got = [0u8; 5];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"reply");
}

#[test]
fn guest_reset_closes_the_host_stream() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    guest.send(guest.hdr(OP_RST, GUEST_PORT, PORT), &[]);
    assert!(read_to_eof(&mut stream).is_empty());
    assert_eq!(guest.connection_count(), 0);
    assert!(guest.recv().is_empty(), "no answer to a RST");

    // A refused host connect ends the same way.
    let mut stream = guest.handle.connect(7001).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    guest.wake();
    guest.provide_rx(1, RX_BUF);
    let request = guest.recv_one();
    guest.send(guest.hdr(OP_RST, 7001, request.hdr.src_port), &[]);
    assert!(read_to_eof(&mut stream).is_empty());
    assert_eq!(guest.connection_count(), 0);
}

#[test]
fn host_close_sends_data_then_shutdown_and_waits_for_reset() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    write_all(&mut stream, b"last words");
    drop(stream);
    guest.provide_rx(4, RX_BUF);
    guest.pump();
    let packets = guest.recv();
    let ops: Vec<u16> = packets.iter().map(|p| p.hdr.op).collect();
    assert_eq!(ops, [OP_RW, OP_SHUTDOWN]);
    assert_eq!(packets[0].data, b"last words");
    assert_eq!(packets[1].hdr.flags, SHUTDOWN_BOTH);
    // The guest's RST completes the close.
    let key = ConnKey {
        local_port: PORT,
        peer_port: GUEST_PORT,
    };
    let state = guest.dev().muxer.connection(key).map(|conn| conn.state());
    assert_eq!(state, Some(ConnState::Closing));
    guest.send(guest.hdr(OP_RST, GUEST_PORT, PORT), &[]);
    assert_eq!(guest.connection_count(), 0);
    assert!(guest.recv().is_empty());
}

#[test]
fn host_close_without_guest_answer_is_reset_after_timeout() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    drop(stream);
    guest.provide_rx(4, RX_BUF);
    guest.pump();
    assert_eq!(guest.recv_one().hdr.op, OP_SHUTDOWN);
    guest.advance_time(CLOSE_TIMEOUT / 2);
    assert!(guest.recv().is_empty());
    guest.advance_time(CLOSE_TIMEOUT + Duration::from_millis(10));
    let reset = guest.recv_one();
    assert_eq!(reset.hdr.op, OP_RST);
    assert_eq!((reset.hdr.src_port, reset.hdr.dst_port), (PORT, GUEST_PORT));
    assert_eq!(guest.connection_count(), 0);
}

#[test]
fn host_half_close_and_guest_half_close() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);

    // The host stops writing: the guest hears SHUTDOWN(SEND), and can still send.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    guest.provide_rx(4, RX_BUF);
    guest.pump();
    let shutdown = guest.recv_one();
    assert_eq!(
        (shutdown.hdr.op, shutdown.hdr.flags),
        (OP_SHUTDOWN, SHUTDOWN_SEND)
    );
    guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), b"still here");
    let mut got = [0u8; 10];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");

    // The guest stops writing: the host reads end of file.
    guest.send(
        VsockHeader {
            flags: SHUTDOWN_SEND,
            ..guest.hdr(OP_SHUTDOWN, GUEST_PORT, PORT)
        },
        &[],
    );
    assert!(read_to_eof(&mut stream).is_empty());
    // Nothing can flow any more: the device closes the connection.
    guest.pump();
    assert_eq!(guest.recv_one().hdr.flags, SHUTDOWN_BOTH);
    guest.send(guest.hdr(OP_RST, GUEST_PORT, PORT), &[]);
    assert_eq!(guest.connection_count(), 0);
}

#[test]
fn guest_shutdown_both_ways_is_answered_with_reset() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), b"bye");
    guest.provide_rx(2, RX_BUF);
    guest.send(
        VsockHeader {
            flags: SHUTDOWN_BOTH,
            ..guest.hdr(OP_SHUTDOWN, GUEST_PORT, PORT)
        },
        &[],
    );
    assert_eq!(guest.recv_one().hdr.op, OP_RST);
    assert_eq!(guest.connection_count(), 0);
    assert_eq!(read_to_eof(&mut stream), b"bye");
}

#[test]
fn credit_request_is_answered_with_credit_update() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let _stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), &pattern(1000));
    guest.provide_rx(1, RX_BUF);
    assert!(
        guest.recv().is_empty(),
        "no update while the guest has credit"
    );
    guest.send(guest.hdr(OP_CREDIT_REQUEST, GUEST_PORT, PORT), &[]);
    let update = guest.recv_one();
    assert_eq!(update.hdr.op, OP_CREDIT_UPDATE);
    assert_eq!(
        (update.hdr.buf_alloc, update.hdr.fwd_cnt),
        (CONN_BUF_ALLOC, 1000)
    );
}

#[test]
fn host_connect_without_answer_times_out() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let mut answered_by_nobody = guest.handle.connect(7002).unwrap();
    answered_by_nobody
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    guest.wake();
    guest.provide_rx(2, RX_BUF);
    let request = guest.recv_one();
    guest.advance_time(CONNECT_TIMEOUT + Duration::from_millis(10));
    let reset = guest.recv_one();
    assert_eq!(reset.hdr.op, OP_RST);
    assert_eq!(
        (reset.hdr.src_port, reset.hdr.dst_port),
        (request.hdr.src_port, 7002)
    );
    assert!(read_to_eof(&mut answered_by_nobody).is_empty());

    // Never even sent (no rx buffers): closed without a RST.
    let mut never_sent = guest.handle.connect(7003).unwrap();
    never_sent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    guest.wake();
    guest.advance_time(CONNECT_TIMEOUT + Duration::from_millis(10));
    assert!(read_to_eof(&mut never_sent).is_empty());
    guest.provide_rx(1, RX_BUF);
    assert!(guest.recv().is_empty());
    assert_eq!(guest.connection_count(), 0);
}

#[test]
fn works_through_a_real_event_manager() {
    let mem = test_memory();
    let mut guest = TestGuest::with_event_manager(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    guest.send(guest.hdr(OP_RW, GUEST_PORT, PORT), b"to host");
    let mut got = [0u8; 7];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"to host");
    write_all(&mut stream, b"to guest");
    guest.provide_rx(2, RX_BUF);
    guest.pump();
    assert_eq!(guest.recv_one().data, b"to guest");

    let mut host_stream = guest.handle.connect(9000).unwrap();
    guest.settle();
    let request = guest.recv_one();
    assert_eq!(request.hdr.op, OP_REQUEST);
    guest.send(guest.hdr(OP_RESPONSE, 9000, request.hdr.src_port), &[]);
    write_all(&mut host_stream, b"hi");
    guest.provide_rx(1, RX_BUF);
    guest.pump();
    assert_eq!(guest.recv_one().data, b"hi");

    drop(stream);
    guest.provide_rx(2, RX_BUF);
    guest.pump();
    assert_eq!(guest.recv_one().hdr.op, OP_SHUTDOWN);
}

#[test]
fn listener_and_handle_api() {
    let mem = test_memory();
    let guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    assert_eq!(listener.port(), PORT);
    let again = guest.handle.listen(PORT).unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::AddrInUse);
    assert!(
        listener
            .accept_timeout(Duration::from_millis(10))
            .unwrap()
            .is_none()
    );
    drop(listener);
    let _listener = guest.handle.listen(PORT).unwrap();

    let handle = guest.handle.clone();
    drop(guest);
    assert!(handle.connect(1).is_err(), "the device is gone");
    assert!(Vsock::new(2).is_err());
    assert!(Vsock::new(u64::from(u32::MAX)).is_err());
}

#[test]
fn features_config_and_activation() {
    let (mut device, _handle) = Vsock::new(0x1_2345).unwrap();
    assert_eq!(device.device_type(), crate::devices::virtio::TYPE_VSOCK);
    assert_eq!(device.queue_max_sizes(), &[QUEUE_SIZE; NUM_QUEUES]);
    assert_eq!(
        device.device_features(),
        crate::devices::virtio::VIRTIO_F_VERSION_1
    );
    assert_eq!(device.queue_events().len(), NUM_QUEUES);
    let mut config = [0xffu8; 12];
    device.read_config(0, &mut config);
    assert_eq!(config, [0x45, 0x23, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut high = [0xffu8; 2];
    device.read_config(1, &mut high);
    assert_eq!(high, [0x23, 0x01]);
    device.read_config(u64::MAX, &mut high);
    assert_eq!(high, [0, 0]);
    device.write_config(0, &[1, 2, 3]);
    device.read_config(0, &mut config[..1]);
    assert_eq!(config[0], 0x45);

    // Queue events before activation are ignored.
    let mut watcher = FakeWatcher::default();
    for index in 0..NUM_QUEUES {
        device.queue_events()[index].write(1).unwrap();
        device.handle_event(
            EventSource::Queue(index),
            EventSet::IN,
            Instant::now(),
            &mut watcher,
        );
    }
    let mem = test_memory();
    let interrupt: Arc<dyn Interrupt> = Arc::new(CountingInterrupt::default());
    let err = device
        .activate(
            mem.clone(),
            interrupt.clone(),
            vec![Queue::new(256).unwrap()],
        )
        .unwrap_err();
    assert!(err.to_string().contains("expected 3 queues"));
    let queues = || (0..NUM_QUEUES).map(|_| Queue::new(256).unwrap()).collect();
    device
        .activate(mem.clone(), interrupt.clone(), queues())
        .unwrap();
    assert!(device.is_active());
    assert!(
        device
            .activate(mem.clone(), interrupt.clone(), queues())
            .is_err()
    );
    assert!(device.reset());
    assert!(!device.is_active());
    device.activate(mem, interrupt, queues()).unwrap();
}

#[test]
fn device_reset_closes_connections() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    assert!(guest.dev().reset());
    guest.wake();
    assert!(read_to_eof(&mut stream).is_empty());
    assert_eq!(guest.connection_count(), 0);
    assert!(guest.watcher.watched.is_empty());
}

#[test]
fn payload_spread_over_two_descriptors_arrives_whole() {
    // Linux sends large writes as non-linear packets: the header with the start of the
    // payload in one descriptor, the rest in the next ones.
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let listener = guest.handle.listen(PORT).unwrap();
    let mut stream = guest.connect_from_guest(&listener, GUEST_PORT, PORT);
    let data = pattern(3000);
    let hdr = VsockHeader {
        len: data.len() as u32,
        ..guest.hdr(OP_RW, GUEST_PORT, PORT)
    };
    let (first, rest) = data.split_at(200);
    guest.push_chain(TX_QUEUE, |head, addr| {
        mem.write_slice(&hdr.to_bytes(), GuestAddress(addr))
            .unwrap();
        mem.write_slice(first, GuestAddress(addr + PKT_HEADER_SIZE as u64))
            .unwrap();
        let rest_addr = addr + DATA_OFFSET;
        mem.write_slice(rest, GuestAddress(rest_addr)).unwrap();
        vec![
            desc(
                addr,
                (PKT_HEADER_SIZE + first.len()) as u32,
                VRING_DESC_F_NEXT,
                head + 1,
            ),
            desc(rest_addr, rest.len() as u32, 0, 0),
        ]
    });
    let mut got = vec![0u8; data.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, data);
    assert_eq!(guest.connection_count(), 1, "the connection lives on");
}
