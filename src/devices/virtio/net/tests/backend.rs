//! The handle (attach, detach, replace), a failing tap, reset, the config space, and the
//! device under a real event manager.

use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS};

use super::*;
use crate::devices::virtio::{ActivateError, Interrupt, TYPE_NET, VIRTIO_F_VERSION_1};

/// Whether the device still holds its end of the pair behind `peer`.
fn tap_open(peer: &UnixDatagram) -> bool {
    match peer.send(&frame(10, 0)) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(_) => false,
    }
}

#[test]
fn handle_is_clone_send_and_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<NetHandle>();
}

#[test]
fn attach_and_detach_through_the_handle() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    assert!(!guest.dev().attached());
    let (tap, peer) = tap_pair();
    let fd = tap.as_raw_fd();
    guest.handle.attach(tap).unwrap();
    // Applied on the event loop only.
    assert!(!guest.dev().attached());
    guest.wake();
    assert!(guest.dev().attached());
    assert_eq!(guest.watcher.watched.get(&fd), Some(&EventSet::empty()));
    guest.provide_rx(1, 2048);
    assert_eq!(guest.tap_interest(), Some(EventSet::IN));
    guest.send(&frame(60, 1));
    assert_eq!(recv_now(&peer).unwrap(), frame(60, 1));

    guest.handle.detach().unwrap();
    guest.wake();
    assert!(!guest.dev().attached());
    assert_eq!(guest.tap_interest(), None);
    assert!(!tap_open(&peer), "the device closed its end");
    guest.send(&frame(60, 2));
    let stats = guest.stats();
    assert_eq!((stats.tx_frames, stats.tx_dropped), (1, 1));

    // And back.
    let peer = guest.attach_tap();
    let sent = frame(80, 3);
    guest.assert_delivered(&peer, &sent);
}

#[test]
fn attaching_again_replaces_the_tap() {
    let mem = test_memory();
    let (mut guest, old_peer) = TestGuest::with_tap(&mem);
    let (tap, new_peer) = tap_pair();
    let new_fd = tap.as_raw_fd();
    guest.handle.attach(tap).unwrap();
    guest.wake();
    assert_eq!(
        guest.watcher.watched.keys().copied().collect::<Vec<_>>(),
        vec![new_fd]
    );
    assert!(!tap_open(&old_peer));
    guest.send(&frame(60, 4));
    assert_eq!(recv_now(&new_peer).unwrap(), frame(60, 4));
}

#[test]
fn only_the_latest_change_counts() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let (first, first_peer) = tap_pair();
    let (second, second_peer) = tap_pair();
    guest.handle.attach(first).unwrap();
    guest.handle.clone().attach(second).unwrap();
    assert!(!tap_open(&first_peer), "the first tap is closed unused");
    guest.wake();
    guest.send(&frame(60, 5));
    assert_eq!(recv_now(&second_peer).unwrap(), frame(60, 5));

    guest.handle.attach(tap_pair().0).unwrap();
    guest.handle.detach().unwrap();
    guest.wake();
    assert!(!guest.dev().attached());
    assert!(!tap_open(&second_peer));
}

#[test]
fn tap_hang_up_stops_watching_it() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let (ours, peer) = UnixDatagram::pair().unwrap();
    let our_copy = ours.try_clone().unwrap();
    guest.handle.attach(OwnedFd::from(ours)).unwrap();
    guest.wake();
    guest.provide_rx(2, 2048);
    let sent = frame(100, 6);
    peer.send(&sent).unwrap();
    our_copy.shutdown(std::net::Shutdown::Both).unwrap();
    // Readable and hung up: the frame queued before is still delivered, then the tap is
    // dropped from the loop (which would otherwise spin: pump panics).
    guest.pump();
    assert_eq!(guest.recv(), vec![as_received(&sent)]);
    assert_eq!(guest.tap_interest(), None);
    assert!(guest.dev().attached());
    guest.send(&frame(60, 7));
    assert_eq!(guest.stats().tx_dropped, 1);
    // A rx kick does not bring it back.
    guest.provide_rx(1, 2048);
    assert_eq!(guest.tap_interest(), None);

    // A new tap does.
    let peer = guest.attach_tap();
    assert_eq!(guest.tap_interest(), Some(EventSet::IN));
    let sent = frame(100, 8);
    guest.assert_delivered(&peer, &sent);
}

#[test]
fn reset_keeps_the_tap_but_stops_watching_it_until_activation() {
    let mem = test_memory();
    let (mut guest, peer) = TestGuest::with_tap(&mem);
    guest.provide_rx(1, 2048);
    assert_eq!(guest.tap_interest(), Some(EventSet::IN));
    assert!(guest.dev().reset());
    guest.wake();
    assert!(!guest.dev().is_active());
    assert!(guest.dev().attached());
    assert_eq!(guest.tap_interest(), Some(EventSet::empty()));
    peer.send(&frame(100, 9)).unwrap();
    guest.pump();

    // The driver starts over with fresh queues.
    guest.queues = driver_queues(&mem);
    guest.free_slots = [(0..SLOTS).collect(), (0..SLOTS).collect()];
    guest.activate();
    guest.provide_rx(1, 2048);
    assert_eq!(guest.recv(), vec![as_received(&frame(100, 9))]);
    guest.send(&frame(60, 10));
    assert_eq!(recv_now(&peer).unwrap(), frame(60, 10));
}

#[test]
fn config_space_holds_the_mac_and_link_up() {
    let (mut device, _handle) = Net::new(SLOT).unwrap();
    let mac = guest_init::netspec::slot_mac(SLOT);
    assert_eq!(device.mac(), mac);
    assert_eq!(device.slot(), SLOT);
    assert_eq!(device.device_type(), TYPE_NET);
    assert_eq!(device.queue_max_sizes(), &[RX_QUEUE_SIZE, TX_QUEUE_SIZE]);
    let features = VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS);
    assert_eq!(device.device_features() & features, features);
    assert_eq!(device.device_features(), super::super::device::FEATURES);

    let mut config = [0xeeu8; 10];
    device.read_config(0, &mut config);
    assert_eq!(&config[..6], &mac);
    assert_eq!(
        &config[6..8],
        &[1, 0],
        "VIRTIO_NET_S_LINK_UP, little endian"
    );
    assert_eq!(&config[8..], &[0, 0], "beyond the config space");
    let mut status = [0u8; 2];
    device.read_config(6, &mut status);
    assert_eq!(u16::from_le_bytes(status), 1);
    let mut far = [0xeeu8; 4];
    device.read_config(u64::MAX - 1, &mut far);
    assert_eq!(far, [0; 4]);

    // Read-only.
    device.write_config(0, &[0; 6]);
    device.read_config(0, &mut config);
    assert_eq!(&config[..6], &mac);
}

#[test]
fn activation_needs_two_queues_once() {
    let mem = test_memory();
    let (mut device, _handle) = Net::new(SLOT).unwrap();
    let queues = driver_queues(&mem);
    let make = |n: usize| -> Vec<Queue> {
        let mut made = queues.device_queues();
        made.truncate(n);
        made
    };
    let interrupt: Arc<dyn Interrupt> = Arc::new(CountingInterrupt::default());
    let result = device.activate(mem.clone(), interrupt.clone(), make(1));
    assert!(matches!(
        result,
        Err(ActivateError::QueueCount {
            expected: 2,
            got: 1
        })
    ));
    device
        .activate(mem.clone(), interrupt.clone(), make(2))
        .unwrap();
    assert!(device.is_active());
    let again = device.activate(mem.clone(), interrupt, make(2));
    assert!(matches!(again, Err(ActivateError::AlreadyActive)));
}

#[test]
fn event_manager_moves_frames_both_ways_and_idles_without_buffers() {
    let mem = test_memory();
    let mut guest = TestGuest::with_event_manager(&mem);
    let peer = guest.attach_tap();
    assert!(guest.dev().attached());

    let sent = frame(1000, 11);
    guest.send(&sent);
    assert_eq!(recv_now(&peer).unwrap(), sent);

    // Two frames and no buffers: the loop goes idle (settle panics if it spins).
    let first = frame(200, 12);
    let second = frame(300, 13);
    peer.send(&first).unwrap();
    peer.send(&second).unwrap();
    guest.settle();
    assert!(guest.take_used(RX_QUEUE).is_empty());
    guest.provide_rx(1, 2048);
    assert_eq!(guest.recv(), vec![as_received(&first)]);
    guest.settle();
    guest.provide_rx(2, 2048);
    assert_eq!(guest.recv(), vec![as_received(&second)]);
    let third = frame(400, 14);
    guest.assert_delivered(&peer, &third);

    guest.handle.detach().unwrap();
    guest.settle();
    assert!(!guest.dev().attached());
    assert!(!tap_open(&peer));
    // A new tap may get the old one's descriptor number: the event loop must take it.
    let peer = guest.attach_tap();
    let fourth = frame(100, 15);
    peer.send(&fourth).unwrap();
    guest.provide_rx(1, 2048);
    assert_eq!(guest.recv(), vec![as_received(&fourth)]);
}

#[test]
fn an_unknown_descriptor_leaves_the_event_loop() {
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem);
    let (stray, _peer) = tap_pair();
    let fd = stray.as_raw_fd();
    guest.watcher.watch(fd, EventSet::IN).unwrap();
    let source = guest.dev().event_source(fd);
    assert_eq!(source, EventSource::Unknown(fd));
    guest.event(source, EventSet::IN);
    assert_eq!(guest.tap_interest(), None);
}
