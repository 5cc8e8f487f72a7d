//! Installation-wide settings: where the guest kernel and initramfs live.
//!
//! Defaults come from the data directory (`/usr/share/runvm`); `/etc/runvm/config.toml`
//! overrides them, and the `RUNVM_CONFIG` environment variable names another file (tests
//! and side-by-side installs use it). A missing default file is not an error; a missing file
//! named by `RUNVM_CONFIG`, or a malformed one, is.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The data directory that packages install the guest assets into.
pub const DEFAULT_DATA_DIR: &str = "/usr/share/runvm";
/// The system-wide configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/runvm/config.toml";
/// Names another configuration file than [`DEFAULT_CONFIG_FILE`].
pub const CONFIG_ENV: &str = "RUNVM_CONFIG";

/// Errors met while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists (or was named explicitly) but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
}

/// The settings as read from the file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initramfs: Option<PathBuf>,
}

/// The resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The guest kernel: an uncompressed ELF `vmlinux` (PVH entry) or a bzImage.
    pub kernel: PathBuf,
    /// The guest initramfs holding guest-init (newc cpio, optionally gzip-compressed).
    pub initramfs: PathBuf,
    /// The file the settings came from, if any.
    pub source: Option<PathBuf>,
}

impl Config {
    /// Settings with every value at its default, rooted at `data_dir`.
    pub fn defaults(data_dir: &Path) -> Self {
        Config {
            kernel: data_dir.join("vmlinux"),
            initramfs: data_dir.join("initramfs.img"),
            source: None,
        }
    }

    /// Loads the configuration the way every runvm command does: `$RUNVM_CONFIG` if set,
    /// else `/etc/runvm/config.toml` if present, else the defaults.
    pub fn load() -> Result<Self, ConfigError> {
        match std::env::var_os(CONFIG_ENV) {
            Some(path) if !path.is_empty() => Self::from_file(Path::new(&path)),
            _ => {
                let path = Path::new(DEFAULT_CONFIG_FILE);
                if path.exists() {
                    Self::from_file(path)
                } else {
                    Ok(Self::defaults(Path::new(DEFAULT_DATA_DIR)))
                }
            }
        }
    }

    /// Reads one configuration file. Relative paths in it are relative to its directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().replace('\n', " "),
        })?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let data_dir = base.join(
            file.data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        );
        let defaults = Self::defaults(&data_dir);
        Ok(Config {
            kernel: file.kernel.map_or(defaults.kernel, |p| base.join(p)),
            initramfs: file.initramfs.map_or(defaults.initramfs, |p| base.join(p)),
            source: Some(path.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("", Path::new("/etc/runvm/config.toml")).unwrap();
        assert_eq!(c.kernel, Path::new("/usr/share/runvm/vmlinux"));
        assert_eq!(c.initramfs, Path::new("/usr/share/runvm/initramfs.img"));
    }

    #[test]
    fn data_dir_moves_both_assets_and_explicit_paths_win() {
        let text = "data_dir = \"/opt/runvm\"\nkernel = \"/boot/other\"\n";
        let c = Config::from_toml(text, Path::new("/etc/runvm/config.toml")).unwrap();
        assert_eq!(c.kernel, Path::new("/boot/other"));
        assert_eq!(c.initramfs, Path::new("/opt/runvm/initramfs.img"));
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c = Config::from_toml("kernel = \"k\"", Path::new("/srv/conf/runvm.toml")).unwrap();
        assert_eq!(c.kernel, Path::new("/srv/conf/k"));
    }

    #[test]
    fn unknown_keys_are_refused_on_one_line() {
        let err = Config::from_toml("kernal = \"x\"", Path::new("/c.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown field `kernal`"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_named_missing_file_is_an_error() {
        let err = Config::from_file(Path::new("/nonexistent/runvm.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
