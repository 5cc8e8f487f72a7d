//! An OCI bundle: `config.json` parsed with oci-spec and checked for what runvm needs, and
//! the root file system resolved (absolute, or relative to the bundle).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// The largest config.json runvm reads.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// Errors loading a bundle, each a one-line message for the user.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle's config.json cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// config.json is larger than [`MAX_CONFIG_BYTES`].
    #[error("{path} is {size} bytes, more than the {MAX_CONFIG_BYTES} runvm accepts")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// config.json is not a valid runtime spec.
    #[error("invalid {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
    /// A required part is missing.
    #[error("{path}: {what}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: &'static str,
    },
    /// The root file system is not a directory.
    #[error("root file system {0} is not a directory")]
    Root(PathBuf),
}

/// A loaded bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory, absolute.
    pub dir: PathBuf,
    /// The parsed spec.
    pub spec: Spec,
    /// The root file system, absolute.
    pub root: PathBuf,
}

impl Bundle {
    /// Loads `dir/config.json` and resolves the root file system.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let dir = std::path::absolute(dir).map_err(|source| BundleError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("config.json");
        let read = |source| BundleError::Read {
            path: path.clone(),
            source,
        };
        let size = std::fs::metadata(&path).map_err(read)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(BundleError::TooLarge { path, size });
        }
        let text = std::fs::read_to_string(&path).map_err(read)?;
        let spec: Spec = serde_json::from_str(&text).map_err(|e| BundleError::Invalid {
            path: path.clone(),
            message: e.to_string().replace('\n', " "),
        })?;
        let Some(root) = spec.root() else {
            return Err(BundleError::Missing {
                path,
                what: "no root file system (root.path)",
            });
        };
        let root = dir.join(root.path());
        if !root.is_dir() {
            return Err(BundleError::Root(root));
        }
        if spec.process().is_none() {
            return Err(BundleError::Missing {
                path,
                what: "no process to run",
            });
        }
        Ok(Bundle { dir, spec, root })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str, make_rootfs: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        if make_rootfs {
            std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        }
        dir
    }

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#;

    #[test]
    fn a_minimal_bundle_loads_with_a_relative_root() {
        let dir = bundle_with(MINIMAL, true);
        let b = Bundle::load(dir.path()).unwrap();
        assert_eq!(b.root, dir.path().join("rootfs"));
        assert!(b.root.is_absolute());
    }

    #[test]
    fn the_engines_configs_parse() {
        for f in [
            "docker-run-config.json",
            "docker-run-limits-config.json",
            "podman-run-config.json",
        ] {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures")
                    .join(f),
            )
            .unwrap();
            let spec: Spec = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(spec.process().is_some(), "{f}");
            assert!(spec.root().as_ref().unwrap().path().is_absolute(), "{f}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read") && err.contains("config.json"),
            "{err}"
        );

        let dir = bundle_with("{not json", true);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("invalid") && !err.contains('\n'), "{err}");

        let dir = bundle_with(MINIMAL, false);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");

        let no_process = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#;
        let dir = bundle_with(no_process, true);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no process"), "{err}");
    }

    #[test]
    fn an_oversized_config_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("config.json")).unwrap();
        f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(err, BundleError::TooLarge { .. }), "{err}");
    }
}
