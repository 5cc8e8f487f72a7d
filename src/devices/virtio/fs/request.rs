//! One FUSE request: a descriptor chain from the guest, answered by the FUSE server.
//!
//! The chain's device-readable part is the request (a `fuse_in_header`, then the opcode's
//! arguments), its device-writable part the room for the reply. Before the server sees a
//! request, [`screen_request`] refuses what no well-behaved driver sends and what the server
//! would pass on to the host too trustingly: names that are empty, too long, contain `/` or NUL
//! or are `.`/`..`, device nodes, and opcodes with no meaning (which fuse-backend-rs would turn into an
//! invalid enum value if its trace logging were on).
//!
//! A chain that is not a request at all (its buffers outside guest memory, no readable
//! header) is returned with nothing written. A request the server rejects without replying
//! gets an `EIO` reply if there is room for one.

use std::io::Read;
use std::mem::size_of;
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{
    CreateIn, InHeader, LinkIn, LkIn, MkdirIn, MknodIn, Opcode, OutHeader, Rename2In, RenameIn,
};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_queue::DescriptorChain;

use super::lock_wait::WaitingChain;
use super::server::{BlockedLock, LockAttempt, ShareFs};
use crate::vmm::GuestMemory;

/// The FUSE server over the shared directory.
pub(super) type FsServer = Server<Arc<ShareFs>>;

/// The longest name of one directory entry (Linux `NAME_MAX`).
const NAME_MAX: usize = 255;
/// The longest symlink target (Linux `PATH_MAX`, with its NUL).
const PATH_MAX: usize = 4096;

/// Why a chain was not answered normally: logged by the device, never fatal.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    /// The chain's buffers cannot be used (outside guest memory, lengths overflowing).
    #[error("unusable descriptor chain: {0}")]
    Chain(fuse_backend_rs::transport::Error),
    /// The chain's readable part is shorter than a FUSE in-header.
    #[error("request shorter than a fuse_in_header")]
    NoHeader,
    /// The FUSE server failed the request (answered with `EIO` when there was room).
    #[error("fuse opcode {opcode} failed: {source}")]
    Server {
        /// The request's opcode.
        opcode: u32,
        /// What the server reported.
        source: fuse_backend_rs::Error,
    },
}

/// How one chain was answered: the request's opcode and length when it had a header, the
/// bytes written to it (its used length) and, if it went wrong, why; or, for a lock the
/// guest waits for, what to wait on (the chain is answered when the wait ends).
#[derive(Debug)]
pub(super) struct Completion {
    pub(super) opcode: Option<u32>,
    pub(super) request_len: u32,
    pub(super) used_len: u32,
    pub(super) error: Option<RequestError>,
    pub(super) wait: Option<(BlockedLock, WaitingChain)>,
}

impl Completion {
    /// A chain that held no request.
    fn unusable(error: RequestError) -> Self {
        Completion {
            opcode: None,
            request_len: 0,
            used_len: 0,
            error: Some(error),
            wait: None,
        }
    }

    /// An answered request.
    fn answered(header: &InHeader, used_len: u32, error: Option<RequestError>) -> Self {
        Completion {
            opcode: Some(header.opcode),
            request_len: header.len,
            used_len,
            error,
            wait: None,
        }
    }
}

/// Runs the request in `chain` (from queue `queue`) through `server` and writes its reply into
/// the chain. SETLKW is taken before the server sees it: it is answered at once, or handed
/// back as a wait (`share` is the server's file system).
pub(super) fn handle_chain(
    server: &FsServer,
    share: &ShareFs,
    mem: &GuestMemory,
    queue: usize,
    chain: DescriptorChain<&GuestMemory>,
) -> Completion {
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(reader) => reader,
        Err(err) => return Completion::unusable(RequestError::Chain(err)),
    };
    let writer = match VirtioFsWriter::new(mem, chain.clone()) {
        Ok(writer) => writer,
        Err(err) => return Completion::unusable(RequestError::Chain(err)),
    };
    // Read the header on a copy: the server reads the request again from the start.
    let mut body = reader.clone();
    let Ok(header) = body.read_obj::<InHeader>() else {
        return Completion::unusable(RequestError::NoHeader);
    };
    if let Err(errno) = screen_request(&header, &mut body) {
        // Refused on purpose: an ordinary error reply, nothing to log.
        return Completion::answered(&header, reply_error(writer, header.unique, errno), None);
    }
    if header.opcode == Opcode::Setlkw as u32 {
        let Ok(args) = body.read_obj::<LkIn>() else {
            return Completion::answered(
                &header,
                reply_error(writer, header.unique, libc::EINVAL),
                None,
            );
        };
        let attempt = share.try_lock(
            header.nodeid,
            args.fh,
            args.owner,
            args.lk.into(),
            args.lk_flags,
        );
        return match attempt {
            LockAttempt::Done(result) => {
                let errno = result
                    .err()
                    .map_or(0, |e| e.raw_os_error().unwrap_or(libc::EIO));
                Completion::answered(&header, reply_error(writer, header.unique, errno), None)
            }
            LockAttempt::Blocked(lock) => Completion {
                wait: Some((lock, WaitingChain::of(queue, header.unique, chain))),
                ..Completion::answered(&header, 0, None)
            },
        };
    }
    // The server writes through its own copy; ours stays at the start for an error reply.
    match server.handle_message(reader, writer.clone().into(), None, None) {
        Ok(written) => {
            Completion::answered(&header, u32::try_from(written).unwrap_or(u32::MAX), None)
        }
        Err(source) => {
            let used_len = if expects_reply(header.opcode) {
                reply_error(writer, header.unique, libc::EIO)
            } else {
                0
            };
            let error = RequestError::Server {
                opcode: header.opcode,
                source,
            };
            Completion::answered(&header, used_len, Some(error))
        }
    }
}

/// Whether the driver waits for a reply to `opcode` (FORGET and BATCH_FORGET have none).
fn expects_reply(opcode: u32) -> bool {
    opcode != Opcode::Forget as u32 && opcode != Opcode::BatchForget as u32
}

/// Writes a reply that carries only `errno` (0: success); returns its length, or 0 when it
/// did not fit.
fn reply_error(mut writer: VirtioFsWriter<'_>, unique: u64, errno: i32) -> u32 {
    const LEN: usize = size_of::<OutHeader>();
    let header = OutHeader {
        len: LEN as u32,
        error: -errno,
        unique,
    };
    match writer.write_obj(header) {
        Ok(()) => LEN as u32,
        Err(_) => 0,
    }
}

/// Where a request's names are: after a fixed argument struct of `args_len` bytes come
/// `strings` NUL-terminated strings, the first `names` of which are directory entry names
/// (the rest: a symlink's target).
struct NameLayout {
    args_len: usize,
    strings: usize,
    names: usize,
}

/// The name layout of `opcode`, or None if it carries no names.
fn name_layout(opcode: u32) -> Option<NameLayout> {
    let layout = |args_len, strings, names| {
        Some(NameLayout {
            args_len,
            strings,
            names,
        })
    };
    match opcode {
        op if op == Opcode::Lookup as u32
            || op == Opcode::Unlink as u32
            || op == Opcode::Rmdir as u32 =>
        {
            layout(0, 1, 1)
        }
        op if op == Opcode::Symlink as u32 => layout(0, 2, 1),
        op if op == Opcode::Mknod as u32 => layout(size_of::<MknodIn>(), 1, 1),
        op if op == Opcode::Mkdir as u32 => layout(size_of::<MkdirIn>(), 1, 1),
        op if op == Opcode::Create as u32 => layout(size_of::<CreateIn>(), 1, 1),
        op if op == Opcode::Link as u32 => layout(size_of::<LinkIn>(), 1, 1),
        op if op == Opcode::Rename as u32 => layout(size_of::<RenameIn>(), 2, 2),
        op if op == Opcode::Rename2 as u32 => layout(size_of::<Rename2In>(), 2, 2),
        _ => None,
    }
}

/// Checks a request before the server sees it; `body` is positioned after the header.
/// Returns the errno to refuse it with.
pub(super) fn screen_request(header: &InHeader, body: &mut impl Read) -> Result<(), i32> {
    // Numbers below MaxOpcode that name no opcode (fuse-backend-rs transmutes them for its
    // trace log); the server answers everything else it does not know with ENOSYS itself.
    const UNDEFINED_OPCODES: [u32; 3] = [0, 7, 19];
    if UNDEFINED_OPCODES.contains(&header.opcode) {
        return Err(libc::ENOSYS);
    }
    let Some(layout) = name_layout(header.opcode) else {
        return Ok(());
    };
    let body_len = usize::try_from(header.len)
        .ok()
        .and_then(|len| len.checked_sub(size_of::<InHeader>() + layout.args_len))
        .ok_or(libc::EINVAL)?;
    if body_len > layout.strings * (PATH_MAX + 1) {
        return Err(libc::ENAMETOOLONG);
    }
    let mut request = vec![0u8; layout.args_len + body_len];
    body.read_exact(&mut request).map_err(|_| libc::EINVAL)?;
    let (args, strings) = request.split_at(layout.args_len);
    if header.opcode == Opcode::Mknod as u32 {
        check_mknod_type(args)?;
    }
    check_strings(strings, &layout)
}

/// Refuses device nodes: a node the guest makes in a share that is also a host directory (a
/// bind-mount source) would give host users its device (`/dev/mem`'s numbers, a disk).
/// The server never opens one itself; the guest keeps its own `/dev` elsewhere.
fn check_mknod_type(args: &[u8]) -> Result<(), i32> {
    let mode = args
        .first_chunk::<4>()
        .map(|bytes| u32::from_le_bytes(*bytes))
        .ok_or(libc::EINVAL)?;
    match mode & libc::S_IFMT {
        libc::S_IFCHR | libc::S_IFBLK => Err(libc::EPERM),
        _ => Ok(()),
    }
}

/// Checks that `strings` is exactly `layout.strings` NUL-terminated strings and that the
/// names among them are single, ordinary path components.
fn check_strings(strings: &[u8], layout: &NameLayout) -> Result<(), i32> {
    let Some((&0, all_but_last_nul)) = strings.split_last() else {
        return Err(libc::EINVAL);
    };
    let parts: Vec<&[u8]> = all_but_last_nul.split(|&byte| byte == 0).collect();
    if parts.len() != layout.strings {
        // Either a name holds a NUL or strings are missing.
        return Err(libc::EINVAL);
    }
    for (index, part) in parts.iter().enumerate() {
        if index < layout.names {
            check_name(part)?;
        } else if part.is_empty() || part.len() >= PATH_MAX {
            return Err(libc::EINVAL);
        }
    }
    Ok(())
}

/// Checks that `name` is one ordinary path component (it holds no NUL: split there).
fn check_name(name: &[u8]) -> Result<(), i32> {
    if name.len() > NAME_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(libc::EINVAL);
    }
    Ok(())
}
