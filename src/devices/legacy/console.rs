//! Where the guest's console goes: a log file, stderr (with `--debug`), and a bounded tail kept
//! in memory so that a failing boot can say what the kernel printed last.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// How much console output the tail keeps.
pub const TAIL_BYTES: usize = 16 * 1024;

/// The last [`TAIL_BYTES`] of console output, shared with whoever reports the boot.
#[derive(Debug, Clone, Default)]
pub struct ConsoleTail(Arc<Mutex<VecDeque<u8>>>);

impl ConsoleTail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..excess);
    }

    /// The kept output, as text.
    pub fn text(&self) -> String {
        let tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The kernel's panic line ("Kernel panic - not syncing: ..."), if the tail holds one,
    /// without its timestamp.
    pub fn panic_line(&self) -> Option<String> {
        let text = self.text();
        let line = text.lines().rev().find(|l| l.contains("Kernel panic"))?;
        let start = line.find("Kernel panic").unwrap_or(0);
        Some(line[start..].trim_end_matches(['\r', ' ']).to_owned())
    }

    /// The last `n` non-empty lines, without carriage returns.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let text = self.text();
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

/// The serial port's output sink.
pub struct ConsoleOutput {
    file: Option<File>,
    echo_stderr: bool,
    tail: ConsoleTail,
}

impl ConsoleOutput {
    /// Output to `file` (if any) and to stderr when `echo_stderr`; the tail is always kept.
    pub fn new(file: Option<File>, echo_stderr: bool) -> (Self, ConsoleTail) {
        let tail = ConsoleTail::default();
        (
            ConsoleOutput {
                file,
                echo_stderr,
                tail: tail.clone(),
            },
            tail,
        )
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tail.push(buf);
        // The console must never stop the guest: failures to log are dropped.
        if let Some(f) = &mut self.file {
            let _ = f.write_all(buf);
        }
        if self.echo_stderr {
            let _ = io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_bounded_and_keeps_the_end() {
        let (mut out, tail) = ConsoleOutput::new(None, false);
        for i in 0..5000 {
            writeln!(out, "line {i}\r").unwrap();
        }
        assert!(tail.text().len() <= TAIL_BYTES);
        assert_eq!(tail.last_lines(2), ["line 4998", "line 4999"]);
    }

    #[test]
    fn the_panic_line_is_found_among_the_trace() {
        let (mut out, tail) = ConsoleOutput::new(None, false);
        assert_eq!(tail.panic_line(), None);
        write!(
            out,
            "[    1.0] Run /init\r\n[    1.1] Kernel panic - not syncing: No working init found.\r\n\
             [    1.2] Call Trace:\r\n[    1.3]  ? 0xffffffff81000a41\r\n"
        )
        .unwrap();
        assert_eq!(
            tail.panic_line().as_deref(),
            Some("Kernel panic - not syncing: No working init found.")
        );
    }

    #[test]
    fn the_file_gets_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (mut out, _) = ConsoleOutput::new(Some(File::create(&path).unwrap()), false);
        out.write_all(b"hello\n").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "hello\n");
    }
}
