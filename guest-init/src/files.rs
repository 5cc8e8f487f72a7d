//! Reading and writing guest files for the host's diagnostic requests, bounded in size.

use std::io::{self, Read};

use guest_init::protocol::{GuestMessage, MAX_FILE_TEXT};

/// The first [`MAX_FILE_TEXT`] bytes of `path`, as (lossy) text.
pub fn read_text(path: &str) -> io::Result<GuestMessage> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?
        .take(MAX_FILE_TEXT as u64)
        .read_to_end(&mut buf)?;
    Ok(GuestMessage::File {
        text: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// Writes `text` to `path`, replacing it.
pub fn write_text(path: &str, text: &str) -> io::Result<()> {
    std::fs::write(path, text).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}
