//! Locks through the device: SETLKW on a lock another owner holds stays unanswered while
//! the device goes on serving other requests, and is answered (out of order, on its own
//! chain) once the holder lets go.

use fuse_backend_rs::abi::fuse_abi::{FileLock, LkIn};

use super::*;

const A: u64 = 0xa;
const B: u64 = 0xb;
/// The waiting SETLKW's chain: descriptors 2 and 3, its own request and reply buffers.
const WAIT_HEAD: u16 = 2;
const WAIT_REQUEST: u64 = 0x30_0000;
const WAIT_REPLY: u64 = 0x31_0000;

fn lock_args(fh: u64, owner: u64, kind: i32) -> LkIn {
    LkIn {
        fh,
        owner,
        lk: FileLock {
            start: 0,
            end: i64::MAX as u64,
            type_: kind as u32,
            pid: 1,
        },
        lk_flags: 0,
        padding: 0,
    }
}

/// Queues B's SETLKW for the lock `fh_b` names on its own chain (descriptors [`WAIT_HEAD`]
/// on, its own buffers) and notifies the device; returns the request's `unique`.
fn queue_setlkw(guest: &mut TestGuest<'_>, inode: u64, fh_b: u64) -> u64 {
    let request = guest.fuse_request(
        Opcode::Setlkw as u32,
        inode,
        &[lock_args(fh_b, B, libc::F_WRLCK).as_slice()],
    );
    guest
        .mem
        .write_slice(&request, GuestAddress(WAIT_REQUEST))
        .unwrap();
    let request_len = u32::try_from(request.len()).unwrap();
    guest.queues.store(
        REQUEST_QUEUE,
        WAIT_HEAD,
        &[
            desc(WAIT_REQUEST, request_len, VRING_DESC_F_NEXT, WAIT_HEAD + 1),
            desc(WAIT_REPLY, 64, VRING_DESC_F_WRITE, 0),
        ],
    );
    guest.queues.publish(REQUEST_QUEUE, WAIT_HEAD);
    guest.notify(REQUEST_QUEUE);
    parse::<InHeader>(&request).unique
}

/// A guest whose owner A holds a write lock on `hello.txt` through its handle; returns the
/// guest, the inode, A's and B's handles, and A's lock request.
fn a_holds_the_lock<'a>(
    mem: &'a GuestMemoryMmap,
    share: &Path,
) -> (TestGuest<'a>, u64, u64, u64, LkIn) {
    let mut guest = TestGuest::new(mem, share);
    let inode = guest.lookup(ROOT_ID, b"hello.txt").unwrap().nodeid;
    let fh_a = guest.open(Opcode::Open, inode, libc::O_RDWR).unwrap();
    let fh_b = guest.open(Opcode::Open, inode, libc::O_RDWR).unwrap();
    let write_a = lock_args(fh_a, A, libc::F_WRLCK);
    guest
        .call(Opcode::Setlk, inode, &[write_a.as_slice()])
        .unwrap();
    (guest, inode, fh_a, fh_b, write_a)
}

#[test]
fn setlkw_waits_off_the_event_loop_and_is_answered_when_the_lock_is_free() {
    let share = share_with_file();
    let mem = test_memory();
    let (mut guest, inode, fh_a, fh_b, write_a) = a_holds_the_lock(&mem, share.path());

    // B waits: its chain is not used yet.
    let unique = queue_setlkw(&mut guest, inode, fh_b);
    assert!(guest.queues.take_used(REQUEST_QUEUE).is_empty());
    assert_eq!(guest.dev().lock_waits(), 1);

    // The device still serves: A asks who holds what, then lets go.
    assert!(guest.getattr(inode).is_ok());
    let unlock_a = lock_args(fh_a, A, libc::F_UNLCK);
    guest
        .call(Opcode::Setlk, inode, &[unlock_a.as_slice()])
        .unwrap();

    // B's wait ends on its thread; the event loop answers its chain.
    let mut used = Vec::new();
    for _ in 0..500 {
        guest.dev().answer_lock_waits();
        used = guest.queues.take_used(REQUEST_QUEUE);
        if !used.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let len = size_of::<OutHeader>() as u32;
    assert_eq!(used, vec![(WAIT_HEAD, len)]);
    let header: OutHeader = mem.read_obj(GuestAddress(WAIT_REPLY)).unwrap();
    assert_eq!((header.error, header.unique, header.len), (0, unique, len));
    assert_eq!(guest.dev().lock_waits(), 0);
    // B holds the lock now: A is refused, and gets it once B's close (FLUSH) let it go.
    assert_eq!(
        guest.call(Opcode::Setlk, inode, &[write_a.as_slice()]),
        Err(libc::EAGAIN)
    );
    let flush = fuse_backend_rs::abi::fuse_abi::FlushIn {
        fh: fh_b,
        unused: 0,
        padding: 0,
        lock_owner: B,
    };
    guest
        .call(Opcode::Flush, inode, &[flush.as_slice()])
        .unwrap();
    guest
        .call(Opcode::Setlk, inode, &[write_a.as_slice()])
        .unwrap();
}

#[test]
fn setlkw_on_a_free_lock_is_answered_at_once() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let inode = guest.lookup(ROOT_ID, b"hello.txt").unwrap().nodeid;
    let fh = guest.open(Opcode::Open, inode, libc::O_RDWR).unwrap();
    let args = lock_args(fh, A, libc::F_WRLCK);
    guest
        .call(Opcode::Setlkw, inode, &[args.as_slice()])
        .unwrap();
    // A handle the guest does not have: EBADF, at once.
    let args = lock_args(fh + 7, A, libc::F_WRLCK);
    assert_eq!(
        guest.call(Opcode::Setlkw, inode, &[args.as_slice()]),
        Err(libc::EBADF)
    );
    assert_eq!(guest.dev().lock_waits(), 0);
}

#[test]
fn a_cancelled_wait_is_answered_eintr_and_takes_nothing_later() {
    let share = share_with_file();
    let mem = test_memory();
    let (mut guest, inode, fh_a, fh_b, write_a) = a_holds_the_lock(&mem, share.path());
    let unique = queue_setlkw(&mut guest, inode, fh_b);
    assert_eq!(guest.dev().lock_waits(), 1);

    // A signal for the container: the wait ends in EINTR at once.
    guest.dev().lock_canceller().cancel();
    guest.dev().answer_lock_waits();
    let len = size_of::<OutHeader>() as u32;
    assert_eq!(
        guest.queues.take_used(REQUEST_QUEUE),
        vec![(WAIT_HEAD, len)]
    );
    let header: OutHeader = mem.read_obj(GuestAddress(WAIT_REPLY)).unwrap();
    assert_eq!((header.error, header.unique), (-libc::EINTR, unique));
    // A lets go: B's abandoned wait takes the lock and gives it back; A gets it again.
    let unlock_a = lock_args(fh_a, A, libc::F_UNLCK);
    guest
        .call(Opcode::Setlk, inode, &[unlock_a.as_slice()])
        .unwrap();
    let mut again = Err(0);
    for _ in 0..500 {
        again = guest.call(Opcode::Setlk, inode, &[write_a.as_slice()]);
        if again.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(again.is_ok(), "{again:?}");
    assert!(guest.queues.take_used(REQUEST_QUEUE).is_empty());
}
