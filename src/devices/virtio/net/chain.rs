//! The descriptors of a chain, in the ring or through one indirect table
//! (`VIRTIO_RING_F_INDIRECT_DESC`, virtio v1.2 §2.7.5.3), walked with every check a hostile
//! guest calls for.
//!
//! virtio-queue's own iterator follows indirect tables too, but it ends the chain quietly on
//! anything wrong (a table of a bad size, an indirect descriptor inside a table, a `next`
//! outside the table, a loop, an unreadable descriptor): the device would then see a shorter
//! chain, and send or fill a truncated frame. It also takes tables of up to 65535 entries
//! whatever the queue's size. So the device walks chains itself, and a chain it cannot walk
//! to its end fails whole ([`ChainError`]):
//! - every `next` stays inside its table (the ring's, or the indirect one), and no table
//!   yields more descriptors than it has entries (no loops);
//! - an indirect descriptor only with `VIRTIO_RING_F_INDIRECT_DESC`, never with `NEXT` (it
//!   ends the ring's part of the chain), never inside an indirect table; its table is a
//!   non-zero multiple of 16 bytes, at most the queue's size in entries, all of it inside
//!   guest memory;
//! - the chain's lengths add up to less than 4 GiB (§2.7.5.2).
//!
//! What the descriptors point to (in guest memory, readable or writable) is for the device
//! to check as it uses them. A chain is walked afresh each time: the guest may change it
//! meanwhile, and every walk checks it again.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _};

use crate::vmm::GuestMemory;

/// The size of a descriptor, in a table.
const DESC_SIZE: u32 = 16;

/// Why a chain cannot be walked to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A chain's head, or a descriptor's `next`, is not in its table.
    #[error("descriptor index {index} is outside its {entries}-entry table")]
    IndexOutside {
        /// The index.
        index: u16,
        /// The table's entries.
        entries: u16,
    },
    /// A table yields more descriptors than it holds: the chain loops.
    #[error("chain loops (longer than its {0}-entry table)")]
    Loop(u16),
    /// A descriptor could not be read.
    #[error("descriptor table entry outside guest memory")]
    Unreadable,
    /// An indirect descriptor though the driver did not accept indirect descriptors.
    #[error("indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC")]
    IndirectNotNegotiated,
    /// An indirect descriptor inside an indirect table.
    #[error("indirect descriptor inside an indirect table")]
    NestedIndirect,
    /// An indirect descriptor with `NEXT` set.
    #[error("indirect descriptor with NEXT set")]
    IndirectWithNext,
    /// An indirect table whose length is 0, not a multiple of 16, or more than the queue's
    /// size in entries.
    #[error("indirect table of {len} bytes (a multiple of 16, at most {max} entries)")]
    IndirectTableLen {
        /// The table's length in bytes.
        len: u32,
        /// The most entries a table may have.
        max: u16,
    },
    /// An indirect table not (all) inside guest memory.
    #[error("indirect table at {0:#x} is outside guest memory")]
    IndirectTableOutside(u64),
    /// The chain's lengths add up to 4 GiB or more.
    #[error("chain of 4 GiB or more")]
    TooLong,
}

/// A chain the driver made available: where to walk it from, as often as needed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chain {
    head: u16,
    desc_table: GuestAddress,
    queue_size: u16,
    /// The driver accepted `VIRTIO_RING_F_INDIRECT_DESC`.
    indirect: bool,
}

impl Chain {
    /// Takes the next available chain of `queue`, if any; `indirect` says whether the driver
    /// accepted indirect descriptors.
    pub(super) fn pop(queue: &mut Queue, mem: &GuestMemory, indirect: bool) -> Option<Chain> {
        let head = queue.pop_descriptor_chain(mem)?.head_index();
        Some(Chain {
            head,
            desc_table: GuestAddress(queue.desc_table()),
            queue_size: queue.size(),
            indirect,
        })
    }

    /// The chain's head: what goes into the used ring.
    pub(super) fn head(&self) -> u16 {
        self.head
    }

    /// Its descriptors, in order (none that refers to an indirect table): each `Ok`, then
    /// nothing; or an `Err` where the chain is bad, then nothing.
    pub(super) fn descriptors<'m>(&self, mem: &'m GuestMemory) -> Descriptors<'m> {
        Descriptors {
            mem,
            table: self.desc_table,
            entries: self.queue_size,
            left: self.queue_size,
            next: Some(self.head),
            in_indirect: false,
            indirect_allowed: self.indirect,
            max_table: self.queue_size,
            bytes: 0,
        }
    }
}

/// The walk of a [`Chain`] ([`Chain::descriptors`]).
pub(super) struct Descriptors<'m> {
    mem: &'m GuestMemory,
    /// The table walked now: the ring's, or an indirect one.
    table: GuestAddress,
    entries: u16,
    /// Descriptors this table may still yield.
    left: u16,
    /// The index of the next descriptor in `table`; `None` once the chain ended or failed.
    next: Option<u16>,
    in_indirect: bool,
    indirect_allowed: bool,
    /// The most entries an indirect table may have: the queue's size.
    max_table: u16,
    /// The chain's length so far.
    bytes: u32,
}

impl Descriptors<'_> {
    /// Reads descriptor `index` of the current table.
    fn read(&mut self, index: u16) -> Result<Descriptor, ChainError> {
        if index >= self.entries {
            return Err(ChainError::IndexOutside {
                index,
                entries: self.entries,
            });
        }
        self.left = self
            .left
            .checked_sub(1)
            .ok_or(ChainError::Loop(self.entries))?;
        let addr = self
            .table
            .checked_add(u64::from(index) * u64::from(DESC_SIZE))
            .ok_or(ChainError::Unreadable)?;
        self.mem
            .read_obj::<Descriptor>(addr)
            .map_err(|_| ChainError::Unreadable)
    }

    /// Goes on in the indirect table `desc` refers to, once it is checked.
    fn enter_table(&mut self, desc: &Descriptor) -> Result<(), ChainError> {
        if !self.indirect_allowed {
            return Err(ChainError::IndirectNotNegotiated);
        }
        if self.in_indirect {
            return Err(ChainError::NestedIndirect);
        }
        if desc.has_next() {
            return Err(ChainError::IndirectWithNext);
        }
        let len = desc.len();
        let entries = u16::try_from(len / DESC_SIZE)
            .ok()
            .filter(|&entries| {
                entries > 0 && entries <= self.max_table && len.is_multiple_of(DESC_SIZE)
            })
            .ok_or(ChainError::IndirectTableLen {
                len,
                max: self.max_table,
            })?;
        // `len` fits in usize: it is at most 16 times a u16.
        if !self.mem.check_range(desc.addr(), len as usize) {
            return Err(ChainError::IndirectTableOutside(desc.addr().raw_value()));
        }
        self.table = desc.addr();
        self.entries = entries;
        self.left = entries;
        self.in_indirect = true;
        Ok(())
    }

    /// The next descriptor, following an indirect descriptor into its table.
    fn step(&mut self, mut index: u16) -> Result<Descriptor, ChainError> {
        // Twice at most: the second indirect descriptor met is refused.
        loop {
            let desc = self.read(index)?;
            if !desc.refers_to_indirect_table() {
                self.bytes = self
                    .bytes
                    .checked_add(desc.len())
                    .ok_or(ChainError::TooLong)?;
                if desc.has_next() {
                    self.next = Some(desc.next());
                }
                return Ok(desc);
            }
            self.enter_table(&desc)?;
            index = 0;
        }
    }
}

impl Iterator for Descriptors<'_> {
    type Item = Result<Descriptor, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.next.take()?;
        Some(self.step(index))
    }
}
