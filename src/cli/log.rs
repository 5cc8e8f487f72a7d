//! Error and debug reports the way runc writes them: a line on stderr, and, with `--log`, a
//! line in that file; `--log-format json` makes it `{"level":…,"msg":…,"time":…}`, the line
//! containerd shows the user when a command fails.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;

/// The format of `--log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time="…" level=error msg="…"`.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The flag's value naming this format.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where reports go.
#[derive(Debug)]
pub struct Logger {
    file: Option<PathBuf>,
    format: LogFormat,
}

impl Logger {
    /// A logger for `--log FILE --log-format F`.
    pub fn new(file: Option<PathBuf>, format: LogFormat) -> Self {
        Logger { file, format }
    }

    /// Reports an error: always on stderr, and in the log file when there is one.
    pub fn error(&self, msg: &str) {
        let msg = msg.replace('\n', " ");
        eprintln!("runvm: {msg}");
        if let Some(path) = &self.file {
            let line = format_line(self.format, "error", &msg, &rfc3339(SystemTime::now()));
            // A log file we cannot write must not hide the error itself, already on stderr.
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}

fn format_line(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            let obj = serde_json::json!({ "level": level, "msg": msg, "time": time });
            format!("{obj}\n")
        }
        LogFormat::Text => {
            let quoted = serde_json::Value::from(msg).to_string();
            format!("time=\"{time}\" level={level} msg={quoted}\n")
        }
    }
}

/// Formats `t` as an RFC 3339 UTC timestamp with nanoseconds, as runc's logs do.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Converts days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400 + 86_399, 5);
        assert_eq!(rfc3339(t), "2000-02-29T23:59:59.000000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_305_600);
        assert_eq!(rfc3339(t), "2026-11-22T00:00:00.000000000Z");
    }

    #[test]
    fn json_lines_are_what_containerd_parses() {
        let line = format_line(LogFormat::Json, "error", "bad \"spec\"", "T");
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "bad \"spec\"");
        assert_eq!(v["time"], "T");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    }

    #[test]
    fn error_appends_one_line_to_the_log_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("log.json");
        let logger = Logger::new(Some(path.clone()), LogFormat::Json);
        logger.error("first\nsecond");
        logger.error("third");
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["msg"], "first second");
    }
}
