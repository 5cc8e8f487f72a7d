//! What a share's FUSE requests cost, per opcode: how many, the bytes each way and the time
//! the device spent answering them (from popping the chain to its reply), so that a slow
//! workload in a container can be explained (`runvm --debug` logs it when the container
//! ends).
//!
//! Counters are atomics: the event loop records, any thread reads. An opcode the table does
//! not know (the guest chooses the number) is counted under "other".

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// FUSE's opcode numbers and names (`include/uapi/linux/fuse.h`); `None` where no opcode is.
const NAMES: [Option<&str>; 53] = [
    None,
    Some("LOOKUP"),
    Some("FORGET"),
    Some("GETATTR"),
    Some("SETATTR"),
    Some("READLINK"),
    Some("SYMLINK"),
    None,
    Some("MKNOD"),
    Some("MKDIR"),
    Some("UNLINK"),
    Some("RMDIR"),
    Some("RENAME"),
    Some("LINK"),
    Some("OPEN"),
    Some("READ"),
    Some("WRITE"),
    Some("STATFS"),
    Some("RELEASE"),
    None,
    Some("FSYNC"),
    Some("SETXATTR"),
    Some("GETXATTR"),
    Some("LISTXATTR"),
    Some("REMOVEXATTR"),
    Some("FLUSH"),
    Some("INIT"),
    Some("OPENDIR"),
    Some("READDIR"),
    Some("RELEASEDIR"),
    Some("FSYNCDIR"),
    Some("GETLK"),
    Some("SETLK"),
    Some("SETLKW"),
    Some("ACCESS"),
    Some("CREATE"),
    Some("INTERRUPT"),
    Some("BMAP"),
    Some("DESTROY"),
    Some("IOCTL"),
    Some("POLL"),
    Some("NOTIFY_REPLY"),
    Some("BATCH_FORGET"),
    Some("FALLOCATE"),
    Some("READDIRPLUS"),
    Some("RENAME2"),
    Some("LSEEK"),
    Some("COPY_FILE_RANGE"),
    Some("SETUPMAPPING"),
    Some("REMOVEMAPPING"),
    Some("SYNCFS"),
    Some("TMPFILE"),
    Some("STATX"),
];

/// The bucket of opcodes the table does not name.
const OTHER: usize = 0;

/// One opcode's counters.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    nanos: AtomicU64,
}

/// The counters of one share, by opcode.
#[derive(Debug)]
pub struct FsStats {
    by_opcode: [Counters; NAMES.len()],
}

impl Default for FsStats {
    fn default() -> Self {
        FsStats {
            by_opcode: std::array::from_fn(|_| Counters::default()),
        }
    }
}

/// One opcode's figures, as [`FsStats::snapshot`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpcodeStats {
    /// The opcode's name ("other" for numbers FUSE does not define).
    pub name: &'static str,
    /// Requests answered.
    pub requests: u64,
    /// Of which failed in the device (unusable chain, no header, the server's error); an
    /// errno reply to the guest is an answer, not a failure.
    pub errors: u64,
    /// Bytes the guest sent (the requests' `len`).
    pub bytes_in: u64,
    /// Bytes written back (the replies' used lengths).
    pub bytes_out: u64,
    /// Time spent answering them.
    pub time: Duration,
}

impl FsStats {
    /// Counts one request: its opcode (`None` when the chain held no header), the bytes
    /// each way, how long it took, and whether it failed in the device.
    pub fn record(
        &self,
        opcode: Option<u32>,
        bytes_in: u32,
        bytes_out: u32,
        time: Duration,
        failed: bool,
    ) {
        let index = opcode
            .and_then(|op| usize::try_from(op).ok())
            .filter(|&op| NAMES.get(op).is_some_and(Option::is_some))
            .unwrap_or(OTHER);
        let c = &self.by_opcode[index];
        c.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes_in.fetch_add(u64::from(bytes_in), Ordering::Relaxed);
        c.bytes_out
            .fetch_add(u64::from(bytes_out), Ordering::Relaxed);
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        c.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The opcodes seen so far, the most time first.
    pub fn snapshot(&self) -> Vec<OpcodeStats> {
        let mut out: Vec<OpcodeStats> = self
            .by_opcode
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let requests = c.requests.load(Ordering::Relaxed);
                (requests > 0).then(|| OpcodeStats {
                    name: NAMES[i].unwrap_or("other"),
                    requests,
                    errors: c.errors.load(Ordering::Relaxed),
                    bytes_in: c.bytes_in.load(Ordering::Relaxed),
                    bytes_out: c.bytes_out.load(Ordering::Relaxed),
                    time: Duration::from_nanos(c.nanos.load(Ordering::Relaxed)),
                })
            })
            .collect();
        out.sort_by(|a, b| b.time.cmp(&a.time).then(a.name.cmp(b.name)));
        out
    }

    /// One line for a log: the total, then each opcode (most time first) as
    /// `NAME requests/errors in/out bytes, total ms (average µs)`.
    pub fn summary(&self) -> String {
        let ops = self.snapshot();
        let requests: u64 = ops.iter().map(|o| o.requests).sum();
        let time: Duration = ops.iter().map(|o| o.time).sum();
        let mut line = format!(
            "virtio-fs: {requests} requests in {:.1} ms",
            time.as_secs_f64() * 1e3
        );
        for o in &ops {
            let avg_us = o.time.as_secs_f64() * 1e6 / o.requests as f64;
            let _ = write!(
                line,
                "; {} {}/{} err, {}/{} B in/out, {:.1} ms ({avg_us:.0} us avg)",
                o.name,
                o.requests,
                o.errors,
                o.bytes_in,
                o.bytes_out,
                o.time.as_secs_f64() * 1e3,
            );
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_fuse_numbers() {
        assert_eq!(NAMES[1], Some("LOOKUP"));
        assert_eq!(NAMES[16], Some("WRITE"));
        assert_eq!(NAMES[26], Some("INIT"));
        assert_eq!(NAMES[35], Some("CREATE"));
        assert_eq!(NAMES[44], Some("READDIRPLUS"));
        assert_eq!(NAMES[52], Some("STATX"));
        for undefined in [0, 7, 19] {
            assert_eq!(NAMES[undefined], None);
        }
    }

    #[test]
    fn requests_are_counted_by_opcode_most_time_first() {
        let stats = FsStats::default();
        stats.record(Some(1), 60, 144, Duration::from_micros(100), false);
        stats.record(Some(1), 62, 16, Duration::from_micros(50), false);
        stats.record(Some(16), 4176, 24, Duration::from_millis(2), false);
        let ops = stats.snapshot();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].name, "WRITE");
        assert_eq!(ops[0].requests, 1);
        assert_eq!(ops[1].name, "LOOKUP");
        assert_eq!(ops[1].requests, 2);
        assert_eq!(ops[1].bytes_in, 122);
        assert_eq!(ops[1].bytes_out, 160);
        assert_eq!(ops[1].time, Duration::from_micros(150));
        assert_eq!(ops[1].errors, 0);
    }

    #[test]
    fn numbers_fuse_does_not_define_and_headerless_chains_are_other() {
        let stats = FsStats::default();
        for op in [Some(0), Some(7), Some(53), Some(u32::MAX), None] {
            stats.record(op, 0, 0, Duration::ZERO, true);
        }
        let ops = stats.snapshot();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].name, "other");
        assert_eq!(ops[0].requests, 5);
        assert_eq!(ops[0].errors, 5);
    }

    #[test]
    fn the_summary_names_each_opcode_with_its_figures() {
        let stats = FsStats::default();
        assert_eq!(stats.summary(), "virtio-fs: 0 requests in 0.0 ms");
        stats.record(Some(3), 56, 120, Duration::from_micros(300), false);
        stats.record(Some(3), 56, 120, Duration::from_micros(100), false);
        assert_eq!(
            stats.summary(),
            "virtio-fs: 2 requests in 0.4 ms; GETATTR 2/0 err, 112/240 B in/out, 0.4 ms (200 us avg)"
        );
    }
}
