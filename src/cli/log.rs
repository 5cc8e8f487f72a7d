//! Error and debug reports the way runc writes them: a line on stderr, and, with `--log`, a
//! line in that file; `--log-format json` makes it `{"level":…,"msg":…,"time":…}`, the line
//! containerd shows the user when a command fails.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

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

/// The process's logger, for reports made far from the CLI ([`warning`]).
static INSTALLED: OnceLock<Logger> = OnceLock::new();

/// Makes `logger` the one [`warning`] writes through (the first call wins).
pub fn install(logger: Logger) {
    let _ = INSTALLED.set(logger);
}

/// A warning that is no error of the container's: a line in the `--log` file when there is
/// one (level `warning`), where the engines keep the runtime's messages; on stderr
/// otherwise. A sandbox's stderr is the container's, so what only concerns the host stays
/// out of it when a log exists.
pub fn warning(msg: &str) {
    report("warning", msg);
}

/// A developer's report (`--debug`): a line of level `debug` in the `--log` file when
/// there is one, on stderr otherwise. Callers check `--debug` themselves.
pub fn debug(msg: &str) {
    report("debug", msg);
}

/// One line of `level`: in the installed logger's file when it has one, on stderr otherwise.
fn report(level: &str, msg: &str) {
    let msg = msg.replace('\n', " ");
    match INSTALLED.get() {
        Some(logger) if logger.file.is_some() => logger.write(level, &msg),
        _ => eprintln!("runvm: {level}: {msg}"),
    }
}

/// Where reports go.
#[derive(Debug, Clone)]
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
        self.write("error", &msg);
    }

    /// Appends one line of `level` to the log file, if there is one.
    fn write(&self, level: &str, msg: &str) {
        if let Some(path) = &self.file {
            let line = format_line(
                self.format,
                level,
                msg,
                &crate::time::rfc3339(SystemTime::now()),
            );
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn warnings_go_to_the_log_file_at_their_level() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("log.json");
        let logger = Logger::new(Some(path.clone()), LogFormat::Json);
        logger.write("warning", "vhost-net not used");
        let v: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim_end()).unwrap();
        assert_eq!(v["level"], "warning");
        assert_eq!(v["msg"], "vhost-net not used");
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
