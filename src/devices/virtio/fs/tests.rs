//! Tests of the virtio-fs device against a fake guest driver: FUSE requests written as
//! descriptor chains into test memory (the queues laid out by `MockSplitQueue`), replies read
//! back from the used ring, and the share a temporary directory on the host.
//!
//! `escape.rs` tries to reach outside the share; `hostile.rs` sends malformed chains;
//! `scale.rs` walks trees larger than the server's descriptor cache; `locks.rs` waits for
//! locks.

use std::mem::size_of;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventManager, SubscriberOps};
use fuse_backend_rs::abi::fuse_abi::{
    AttrOut, CreateIn, EntryOut, GetattrIn, InHeader, InitIn, InitIn2, InitOut, Opcode, OpenIn,
    OpenOut, OutHeader, ROOT_ID, ReadIn, WriteIn, WriteOut,
};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::devices::virtio::test_utils::{CountingInterrupt, DriverQueues, desc, settle};
use crate::devices::virtio::{ActivateError, Interrupt, TYPE_FS, VIRTIO_F_VERSION_1, VirtioDevice};
use fuse_backend_rs::api::filesystem::FsOptions;

mod escape;
mod hostile;
mod locks;
mod scale;
mod workers;

const MEM_SIZE: usize = 4 << 20;
const QUEUE_ADDRS: [u64; 2] = [0x0, 0x1_0000];
/// Where the guest puts a request (device-readable).
const REQUEST_ADDR: u64 = 0x10_0000;
/// Where the guest puts the buffer for the reply (device-writable), and its size.
const REPLY_ADDR: u64 = 0x20_0000;
const REPLY_LEN: u32 = 0x2_0000;
const TAG: &str = "runvm-share";

fn test_memory() -> GuestMemoryMmap {
    crate::devices::virtio::test_utils::test_memory(MEM_SIZE)
}

/// A reply read back from the guest's buffer.
#[derive(Debug)]
struct Reply {
    used_len: u32,
    header: OutHeader,
    body: Vec<u8>,
}

/// A FUSE reply: its payload, or the errno it carried.
type FuseResult<T> = Result<T, i32>;

/// The `T` at the start of `bytes`.
fn parse<T: ByteValued>(bytes: &[u8]) -> T {
    let bytes = bytes
        .get(..size_of::<T>())
        .unwrap_or_else(|| panic!("a reply of {} bytes is too short", bytes.len()));
    *T::from_slice(bytes).unwrap()
}

/// `name` NUL-terminated, as the kernel sends names.
fn cname(name: &[u8]) -> Vec<u8> {
    let mut out = name.to_vec();
    out.push(0);
    out
}

/// A guest driver talking to the device through its queues.
struct TestGuest<'a> {
    mem: &'a GuestMemoryMmap,
    queues: DriverQueues<'a>,
    device: Arc<Mutex<VirtioFs>>,
    interrupt: Arc<CountingInterrupt>,
    /// When set, queue notifications go through a real event manager.
    event_manager: Option<EventManager<Arc<Mutex<VirtioFs>>>>,
    /// Whether the device serves its request queues on workers (answers come later).
    workers: bool,
    next_unique: u64,
}

impl<'a> TestGuest<'a> {
    /// A device sharing `share`, not yet activated.
    fn inactive(mem: &'a GuestMemoryMmap, share: &Path) -> Self {
        Self::inactive_with(mem, share, ShareConfig::default())
    }

    /// A device sharing `share` served with `config`, not yet activated. It has no workers:
    /// the test serves its one request queue on its own thread (`workers.rs` tests them).
    fn inactive_with(mem: &'a GuestMemoryMmap, share: &Path, config: ShareConfig) -> Self {
        let device = VirtioFs::with_config(TAG, share, config)
            .and_then(|fs| fs.with_queues(1, 0))
            .unwrap();
        Self::inactive_device(mem, device, &QUEUE_ADDRS)
    }

    /// `device`, not yet activated, with the driver's queues at `queue_addrs`.
    fn inactive_device(mem: &'a GuestMemoryMmap, device: VirtioFs, queue_addrs: &[u64]) -> Self {
        TestGuest {
            mem,
            queues: DriverQueues::new(mem, queue_addrs, QUEUE_SIZE),
            workers: !device.loop_serves_requests(),
            device: Arc::new(Mutex::new(device)),
            interrupt: Arc::new(CountingInterrupt::default()),
            event_manager: None,
            next_unique: 1,
        }
    }

    /// An activated device sharing `share`, FUSE session initialized.
    fn new(mem: &'a GuestMemoryMmap, share: &Path) -> Self {
        let mut guest = Self::inactive(mem, share);
        guest.activate().unwrap();
        guest.init().unwrap();
        guest
    }

    fn activate(&mut self) -> Result<(), ActivateError> {
        self.queues.activate(&mut *self.dev(), &self.interrupt)
    }

    fn dev(&self) -> MutexGuard<'_, VirtioFs> {
        self.device.lock().unwrap()
    }

    fn interrupts(&self) -> usize {
        self.interrupt.count()
    }

    /// Publishes the chain `descs` (its head at descriptor 0) on `queue`, notifies the device
    /// and returns the used lengths of the chains the device completed meanwhile.
    fn submit(&mut self, queue: usize, descs: &[RawDescriptor]) -> Vec<u32> {
        self.queues.store(queue, 0, descs);
        self.queues.publish(queue, 0);
        self.notify(queue);
        if self.workers && queue != HIPRIO_QUEUE {
            // A worker answers on its own thread.
            return self.wait_used(queue, 1);
        }
        self.take_used(queue)
    }

    /// Notifies `queue` by its event, as the transport's ioeventfd does.
    fn kick(&self, queue: usize) {
        self.dev().queue_events()[queue].write(1).unwrap();
    }

    /// The used lengths of the next `count` chains `queue` completes (waiting for the
    /// workers, at most 10 s).
    fn wait_used(&mut self, queue: usize, count: usize) -> Vec<u32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut used = Vec::new();
        while used.len() < count && std::time::Instant::now() < deadline {
            used.extend(self.take_used(queue));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        used
    }

    /// Notifies `queue`, through the event manager if there is one, by its event if workers
    /// serve it.
    fn notify(&mut self, queue: usize) {
        if self.workers && queue != HIPRIO_QUEUE {
            self.kick(queue);
            return;
        }
        match self.event_manager.as_mut() {
            Some(manager) => {
                self.device.lock().unwrap().queue_events()[queue]
                    .write(1)
                    .unwrap();
                settle(manager);
            }
            None => self.dev().handle_queue_event(queue),
        }
    }

    /// The used lengths of the chains `queue` completed since the last call.
    fn take_used(&mut self, queue: usize) -> Vec<u32> {
        let used = self.queues.take_used(queue);
        for &(head, _) in &used {
            assert_eq!(head, 0, "the device completed a chain it was not given");
        }
        used.into_iter().map(|(_, len)| len).collect()
    }

    /// The usual chain: `request` in one readable descriptor, a reply buffer after it.
    fn request_chain(&self, request: &[u8]) -> Vec<RawDescriptor> {
        self.mem
            .write_slice(request, GuestAddress(REQUEST_ADDR))
            .unwrap();
        self.mem
            .write_slice(&vec![0u8; REPLY_LEN as usize], GuestAddress(REPLY_ADDR))
            .unwrap();
        let request_len = u32::try_from(request.len()).unwrap();
        vec![
            desc(REQUEST_ADDR, request_len, VRING_DESC_F_NEXT, 1),
            desc(REPLY_ADDR, REPLY_LEN, VRING_DESC_F_WRITE, 0),
        ]
    }

    /// A FUSE request: header (with the right length) then `args`.
    fn fuse_request(&mut self, opcode: u32, nodeid: u64, args: &[&[u8]]) -> Vec<u8> {
        let args_len: usize = args.iter().map(|a| a.len()).sum();
        let header = InHeader {
            len: u32::try_from(size_of::<InHeader>() + args_len).unwrap(),
            opcode,
            unique: self.next_unique,
            nodeid,
            ..InHeader::default()
        };
        self.next_unique += 1;
        let mut request = header.as_slice().to_vec();
        for arg in args {
            request.extend_from_slice(arg);
        }
        request
    }

    /// Sends raw request bytes on the request queue and reads the reply back.
    fn send_raw(&mut self, request: &[u8]) -> Reply {
        let chain = self.request_chain(request);
        let used = self.submit(REQUEST_QUEUE, &chain);
        assert_eq!(used.len(), 1, "the device completes every chain at once");
        let used_len = used[0];
        let mut reply = vec![0u8; used_len as usize];
        self.mem
            .read_slice(&mut reply, GuestAddress(REPLY_ADDR))
            .unwrap();
        let header = if reply.len() >= size_of::<OutHeader>() {
            parse::<OutHeader>(&reply)
        } else {
            OutHeader::default()
        };
        let body = reply.get(size_of::<OutHeader>()..).unwrap_or(&[]).to_vec();
        Reply {
            used_len,
            header,
            body,
        }
    }

    /// Sends one FUSE request and returns the reply's payload or errno.
    fn call(&mut self, opcode: Opcode, nodeid: u64, args: &[&[u8]]) -> FuseResult<Vec<u8>> {
        let request = self.fuse_request(opcode as u32, nodeid, args);
        let unique = parse::<InHeader>(&request).unique;
        let reply = self.send_raw(&request);
        assert!(
            reply.used_len as usize >= size_of::<OutHeader>(),
            "no reply to {opcode:?}: {reply:?}"
        );
        assert_eq!(reply.header.unique, unique);
        assert_eq!(reply.header.len, reply.used_len);
        match reply.header.error {
            0 => Ok(reply.body),
            error => Err(-error),
        }
    }

    fn init(&mut self) -> FuseResult<InitOut> {
        let init = InitIn {
            major: 7,
            minor: 33,
            max_readahead: 0x2_0000,
            flags: 0,
        };
        self.call(Opcode::Init, 0, &[init.as_slice()])
            .map(|body| parse(&body))
    }

    /// LOOKUP as a program sees it: a negative entry (node 0) is `ENOENT`.
    fn lookup(&mut self, parent: u64, name: &[u8]) -> FuseResult<EntryOut> {
        match self.lookup_raw(parent, name)? {
            entry if entry.nodeid == 0 => Err(libc::ENOENT),
            entry => Ok(entry),
        }
    }

    /// LOOKUP's reply as the guest kernel gets it.
    fn lookup_raw(&mut self, parent: u64, name: &[u8]) -> FuseResult<EntryOut> {
        self.call(Opcode::Lookup, parent, &[&cname(name)])
            .map(|body| parse(&body))
    }

    fn getattr(&mut self, inode: u64) -> FuseResult<AttrOut> {
        let args = GetattrIn::default();
        self.call(Opcode::Getattr, inode, &[args.as_slice()])
            .map(|body| parse(&body))
    }

    fn readlink(&mut self, inode: u64) -> FuseResult<Vec<u8>> {
        self.call(Opcode::Readlink, inode, &[])
    }

    /// OPEN (or OPENDIR) of `inode`; returns the file handle.
    fn open(&mut self, opcode: Opcode, inode: u64, flags: i32) -> FuseResult<u64> {
        let args = OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        };
        self.call(opcode, inode, &[args.as_slice()])
            .map(|body| parse::<OpenOut>(&body).fh)
    }

    fn read(&mut self, inode: u64, fh: u64, size: u32) -> FuseResult<Vec<u8>> {
        let args = ReadIn {
            fh,
            size,
            ..ReadIn::default()
        };
        self.call(Opcode::Read, inode, &[args.as_slice()])
    }

    /// CREATE of `name` in `parent`; returns the new entry and its file handle.
    fn create(&mut self, parent: u64, name: &[u8], mode: u32) -> FuseResult<(EntryOut, u64)> {
        let args = CreateIn {
            flags: (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32,
            mode: libc::S_IFREG | mode,
            umask: 0,
            fuse_flags: 0,
        };
        self.call(Opcode::Create, parent, &[args.as_slice(), &cname(name)])
            .map(|body| {
                let entry: EntryOut = parse(&body);
                let open: OpenOut = parse(&body[size_of::<EntryOut>()..]);
                (entry, open.fh)
            })
    }

    fn write(&mut self, inode: u64, fh: u64, offset: u64, data: &[u8]) -> FuseResult<u32> {
        let args = WriteIn {
            fh,
            offset,
            size: u32::try_from(data.len()).unwrap(),
            ..WriteIn::default()
        };
        self.call(Opcode::Write, inode, &[args.as_slice(), data])
            .map(|body| parse::<WriteOut>(&body).size)
    }
}

/// A temporary share holding `hello.txt`.
fn share_with_file() -> tempfile::TempDir {
    let share = tempfile::tempdir().unwrap();
    std::fs::write(share.path().join("hello.txt"), b"hello from the host\n").unwrap();
    share
}

#[test]
fn config_space_features_and_queues() {
    let share = share_with_file();
    let device = VirtioFs::new(TAG, share.path()).unwrap();
    assert_eq!(device.device_type(), TYPE_FS);
    assert_eq!(
        device.device_features(),
        VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX
    );
    assert_eq!(device.queue_max_sizes(), &[1024, 1024]);
    assert_eq!(device.queue_events().len(), 2);
    assert_eq!(device.tag(), TAG);

    let mut config = [0xffu8; CONFIG_SIZE + 4];
    device.read_config(0, &mut config);
    let mut tag = [0u8; TAG_MAX_LEN];
    tag[..TAG.len()].copy_from_slice(TAG.as_bytes());
    assert_eq!(config[..TAG_MAX_LEN], tag);
    assert_eq!(config[TAG_MAX_LEN..CONFIG_SIZE], 1u32.to_le_bytes());
    assert_eq!(
        config[CONFIG_SIZE..],
        [0; 4],
        "bytes beyond the end read as 0"
    );

    let mut num_request_queues = [0u8; 4];
    device.read_config(36, &mut num_request_queues);
    assert_eq!(u32::from_le_bytes(num_request_queues), 1);
    let mut far = [0xffu8; 2];
    device.read_config(u64::MAX, &mut far);
    assert_eq!(far, [0, 0]);
}

#[test]
fn new_checks_tag_and_directory() {
    let share = share_with_file();
    let longest = "t".repeat(TAG_MAX_LEN);
    assert_eq!(
        VirtioFs::new(&longest, share.path()).unwrap().tag(),
        longest
    );
    for tag in ["", "a\0b", &"t".repeat(TAG_MAX_LEN + 1)] {
        assert!(matches!(
            VirtioFs::new(tag, share.path()),
            Err(FsError::InvalidTag { .. })
        ));
    }
    assert!(matches!(
        VirtioFs::new(TAG, &share.path().join("missing")),
        Err(FsError::SharedDir { .. })
    ));
    assert!(matches!(
        VirtioFs::new(TAG, &share.path().join("hello.txt")),
        Err(FsError::NotADirectory(_))
    ));
    // A symlink to a directory is resolved: the device shares the directory.
    std::os::unix::fs::symlink(share.path(), share.path().join("link")).unwrap();
    let device = VirtioFs::new(TAG, &share.path().join("link")).unwrap();
    assert_eq!(device.shared_dir(), share.path().canonicalize().unwrap());
}

#[test]
fn activation_needs_two_queues_once() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::inactive(&mem, share.path());
    for count in [0, 1, 3] {
        let queues: Vec<Queue> = (0..count)
            .map(|_| Queue::new(QUEUE_SIZE).unwrap())
            .collect();
        let interrupt: Arc<dyn Interrupt> = guest.interrupt.clone();
        let result = guest.dev().activate(mem.clone(), interrupt, queues);
        assert!(
            matches!(result, Err(ActivateError::QueueCount { expected: 2, got }) if got == count)
        );
    }
    assert!(!guest.dev().is_active());
    guest.activate().unwrap();
    assert!(guest.dev().is_active());
    assert!(matches!(
        guest.activate(),
        Err(ActivateError::AlreadyActive)
    ));
    assert!(guest.dev().reset());
    assert!(!guest.dev().is_active());
    guest.activate().unwrap();
}

#[test]
fn queue_events_before_activation_are_ignored() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::inactive(&mem, share.path());
    let request = guest.fuse_request(
        Opcode::Getattr as u32,
        ROOT_ID,
        &[GetattrIn::default().as_slice()],
    );
    let chain = guest.request_chain(&request);
    assert!(guest.submit(REQUEST_QUEUE, &chain).is_empty());
    guest.activate().unwrap();
    // Activation kicks the queues: the waiting request is answered.
    guest.notify(REQUEST_QUEUE);
    let used_len = (size_of::<OutHeader>() + size_of::<AttrOut>()) as u32;
    assert_eq!(guest.take_used(REQUEST_QUEUE), [used_len]);
}

#[test]
fn fuse_init_round_trip_interrupts_the_guest() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::inactive(&mem, share.path());
    guest.activate().unwrap();
    let out = guest.init().unwrap();
    assert_eq!(out.major, 7);
    assert!(out.minor >= 27, "minor {}", out.minor);
    assert!(out.max_write > 0);
    assert_eq!(guest.interrupts(), 1);
}

#[test]
fn init_grants_one_mebibyte_requests_when_the_guest_offers_them() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    // A 6.x guest kernel's offer includes BIG_WRITES and MAX_PAGES (with INIT_EXT, the second
    // flags word follows).
    let offer = FsOptions::BIG_WRITES | FsOptions::MAX_PAGES | FsOptions::INIT_EXT;
    let init = InitIn {
        major: 7,
        minor: 38,
        max_readahead: 0x2_0000,
        flags: offer.bits() as u32,
    };
    let flags2 = InitIn2 {
        flags2: 0,
        unused: [0; 11],
    };
    let body = guest
        .call(Opcode::Init, 0, &[init.as_slice(), flags2.as_slice()])
        .unwrap();
    let out: InitOut = parse(&body);
    assert_eq!(out.max_write, 1 << 20);
    assert_eq!(out.max_pages, 256);
    assert_ne!(out.flags & FsOptions::MAX_PAGES.bits() as u32, 0);
    // Without the offer, requests stay small.
    let mut old = TestGuest::new(&mem, share.path());
    assert!(old.init().unwrap().max_write < 1 << 20);
}

#[test]
fn a_one_mebibyte_write_in_page_sized_buffers_reaches_the_file() {
    const DATA_ADDR: u64 = 0x24_0000;
    const PAGE: u32 = 4096;
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let (entry, fh) = guest.create(ROOT_ID, b"big", 0o644).unwrap();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    mem.write_slice(&data, GuestAddress(DATA_ADDR)).unwrap();
    let args = WriteIn {
        fh,
        offset: 0,
        size: 1 << 20,
        ..WriteIn::default()
    };
    let mut request = guest.fuse_request(Opcode::Write as u32, entry.nodeid, &[args.as_slice()]);
    // The header's length counts the data that follows in the other buffers.
    let len = u32::try_from(request.len()).unwrap() + (1 << 20);
    request[..4].copy_from_slice(&len.to_le_bytes());
    // The request's header in one buffer, the data in 256 pages, then the reply's room.
    mem.write_slice(&request, GuestAddress(REQUEST_ADDR))
        .unwrap();
    let pages = (1u32 << 20) / PAGE;
    let mut chain = vec![desc(
        REQUEST_ADDR,
        u32::try_from(request.len()).unwrap(),
        VRING_DESC_F_NEXT,
        1,
    )];
    for page in 0..pages {
        let next = u16::try_from(page + 2).unwrap();
        let addr = DATA_ADDR + u64::from(page * PAGE);
        chain.push(desc(addr, PAGE, VRING_DESC_F_NEXT, next));
    }
    chain.push(desc(REPLY_ADDR, REPLY_LEN, VRING_DESC_F_WRITE, 0));
    let used = guest.submit(REQUEST_QUEUE, &chain);
    assert_eq!(used.len(), 1);
    let mut out = vec![0u8; size_of::<OutHeader>() + size_of::<WriteOut>()];
    mem.read_slice(&mut out, GuestAddress(REPLY_ADDR)).unwrap();
    let header: OutHeader = parse(&out);
    assert_eq!(header.error, 0);
    assert_eq!(
        parse::<WriteOut>(&out[size_of::<OutHeader>()..]).size,
        1 << 20
    );
    assert_eq!(std::fs::read(share.path().join("big")).unwrap(), data);
}

#[test]
fn the_device_counts_requests_by_opcode() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let stats = guest.dev().stats();
    guest.lookup(ROOT_ID, b"hello.txt").unwrap();
    guest.lookup(ROOT_ID, b"hello.txt").unwrap();
    assert_eq!(guest.lookup(ROOT_ID, b"missing").err(), Some(libc::ENOENT));
    // Refused by the screen: still a request, answered.
    assert_eq!(guest.lookup_raw(ROOT_ID, b"a/b").err(), Some(libc::EINVAL));
    let ops = stats.snapshot();
    let lookup = ops.iter().find(|o| o.name == "LOOKUP").unwrap();
    assert_eq!(lookup.requests, 4);
    assert_eq!(lookup.errors, 0);
    assert!(lookup.bytes_in >= 4 * size_of::<InHeader>() as u64);
    assert!(lookup.bytes_out >= 4 * size_of::<OutHeader>() as u64);
    let init = ops.iter().find(|o| o.name == "INIT").unwrap();
    assert_eq!(init.requests, 1);
    assert_eq!(ops.iter().map(|o| o.requests).sum::<u64>(), 5);
    assert!(stats.summary().contains("LOOKUP 4/0 err"));
}

#[test]
fn lookup_and_getattr_of_a_file() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let entry = guest.lookup(ROOT_ID, b"hello.txt").unwrap();
    assert_ne!(entry.nodeid, ROOT_ID);
    assert_eq!(entry.attr.size, 20);
    assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFREG);
    let attr = guest.getattr(entry.nodeid).unwrap();
    assert_eq!(attr.attr.size, 20);
    assert_eq!(attr.attr.ino, entry.attr.ino);
    let root = guest.getattr(ROOT_ID).unwrap();
    assert_eq!(root.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    // A missing name is a negative entry the guest may cache as long as a positive one.
    let missing = guest.lookup_raw(ROOT_ID, b"missing").unwrap();
    assert_eq!(missing.nodeid, 0);
    assert_eq!(missing.entry_valid, entry.entry_valid);
    assert!(missing.entry_valid > 0);
    // It is not an inode: nothing to forget.
    assert_eq!(guest.dev().share().inode_count(), 2);
}

#[test]
fn open_and_read_return_the_file_bytes() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let inode = guest.lookup(ROOT_ID, b"hello.txt").unwrap().nodeid;
    let fh = guest.open(Opcode::Open, inode, libc::O_RDONLY).unwrap();
    assert_eq!(
        guest.read(inode, fh, 4096).unwrap(),
        b"hello from the host\n"
    );
    assert_eq!(guest.read(inode, fh, 5).unwrap(), b"hello");
}

#[test]
fn create_and_write_are_visible_on_the_host() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let (entry, fh) = guest.create(ROOT_ID, b"new.txt", 0o640).unwrap();
    assert_eq!(
        guest
            .write(entry.nodeid, fh, 0, b"written by the guest")
            .unwrap(),
        20
    );
    let path = share.path().join("new.txt");
    assert_eq!(std::fs::read(&path).unwrap(), b"written by the guest");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(
        guest.create(ROOT_ID, b"new.txt", 0o640).map(|_| ()),
        Err(libc::EEXIST)
    );
}

#[test]
fn an_event_manager_drives_the_device() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::inactive(&mem, share.path());
    let mut manager = EventManager::new().unwrap();
    manager.add_subscriber(Arc::clone(&guest.device));
    guest.event_manager = Some(manager);
    // Events before activation are consumed and ignored.
    guest.notify(HIPRIO_QUEUE);
    guest.activate().unwrap();
    guest.init().unwrap();
    assert_eq!(guest.lookup(ROOT_ID, b"hello.txt").unwrap().attr.size, 20);
}

#[test]
fn the_device_can_be_shared_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<VirtioFs>();
    assert_send::<Arc<Mutex<VirtioFs>>>();
    // Sync through the mutex: the transport and the event loop hold it on two threads.
    fn assert_sync<T: Sync>() {}
    assert_sync::<Arc<Mutex<VirtioFs>>>();
}

#[test]
fn reset_starts_a_new_session() {
    let share = share_with_file();
    let mem = test_memory();
    let mut guest = TestGuest::new(&mem, share.path());
    let inode = guest.lookup(ROOT_ID, b"hello.txt").unwrap().nodeid;
    assert!(guest.dev().reset());
    // The driver sets up new queues (in fresh memory) and a new FUSE session: the old inodes
    // are gone.
    guest.queues = DriverQueues::new(&mem, &[0x4_0000, 0x5_0000], QUEUE_SIZE);
    guest.activate().unwrap();
    guest.init().unwrap();
    assert!(guest.getattr(inode).is_err());
    assert!(guest.lookup(ROOT_ID, b"hello.txt").is_ok());
}
