//! A writer of "newc" cpio archives (the format the kernel unpacks as an initramfs):
//! per entry a 110-byte ASCII header of thirteen 8-digit hex fields, the NUL-terminated
//! name, the data, each padded to 4 bytes; then the `TRAILER!!!` entry.

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// An archive being written.
#[derive(Debug, Default)]
pub struct Archive {
    out: Vec<u8>,
    next_ino: u32,
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

impl Archive {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        pad4(&mut self.out);
        self.out.extend_from_slice(data);
        pad4(&mut self.out);
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | perm, (0, 0), &[]);
    }

    /// Adds a regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, (0, 0), data);
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, (major, minor), &[]);
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: name, mode, rdev, data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Parses an archive back into entries: a reader written from the format description, to
    /// check the writer.
    fn parse(mut b: &[u8]) -> Vec<Entry> {
        let start = b.len();
        let mut entries = Vec::new();
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name = std::str::from_utf8(&b[110..110 + namesize as usize - 1])
                .unwrap()
                .to_owned();
            let consumed = start - b.len();
            let name_end = (consumed + 110 + namesize as usize).div_ceil(4) * 4 - consumed;
            let data = b[name_end..name_end + size as usize].to_vec();
            let next = (consumed + name_end + size as usize).div_ceil(4) * 4 - consumed;
            b = &b[next..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return entries;
            }
            entries.push((name, mode, (rmaj, rmin), data));
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut a = Archive::default();
        a.dir("dev", 0o755);
        a.char_device("dev/console", 0o600, 5, 1);
        a.file("init", 0o755, b"\x7fELF-ish, 13b");
        a.file("empty", 0o644, b"");
        let bytes = a.finish();
        assert_eq!(bytes.len() % 4, 0);
        let e = parse(&bytes);
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].0, "dev");
        assert_eq!(e[0].1, S_IFDIR | 0o755);
        assert_eq!((e[1].1, e[1].2), (S_IFCHR | 0o600, (5, 1)));
        assert_eq!(e[2].3, b"\x7fELF-ish, 13b");
        assert_eq!(e[3].3, b"");
    }

    #[test]
    fn gnu_cpio_reads_it_too() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let bytes = crate::image::initramfs(b"binary");
        let mut child = Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio (package cpio, installed by packaging/host-deps)");
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let names = String::from_utf8(out.stdout).unwrap();
        assert_eq!(names, "dev\nproc\nsys\nrun\ntmp\ndev/console\ninit\n");
    }

    #[test]
    fn the_initramfs_has_init_and_a_console() {
        let e = parse(&crate::image::initramfs(b"binary"));
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "proc", "sys", "run", "tmp", "dev/console", "init"]
        );
        assert_eq!(e[6].3, b"binary");
    }
}
