//! `runvm spec` (a default config.json, runc's) and `runvm features` (what runvm supports, in
//! the OCI features format runc prints).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use crate::runtime::spec::mounts;
use crate::runtime::state::OCI_VERSION;

/// Flags of `runvm spec`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Where to write config.json.
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
}

/// Writes the default config.json into the bundle directory; refuses to overwrite one.
/// `rootless` is the global `--rootless` (which `runvm spec --rootless` sets too, as runc's
/// spec flag of that name): runvm writes no rootless spec.
pub fn spec(args: &SpecArgs, rootless: Option<&str>) -> anyhow::Result<ExitCode> {
    if rootless.is_some_and(|r| r != "false") {
        bail!("rootless containers are not supported");
    }
    let path = args.bundle.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let spec = oci_spec::runtime::Spec::default();
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The features document.
pub fn features_json() -> serde_json::Value {
    let mut known: Vec<caps::Capability> = caps::all().into_iter().collect();
    known.sort_by_key(caps::Capability::index);
    let capabilities: Vec<String> = known.iter().map(ToString::to_string).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": mounts::option_names(),
        "linux": {
            "namespaces": ["ipc", "mount", "network", "pid", "uts"],
            "capabilities": capabilities,
            "cgroup": { "v1": false, "v2": false, "systemd": false, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_X86_64"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "runvm.version": env!("CARGO_PKG_VERSION"),
            "runvm.isolation": "kvm-microvm"
        }
    })
}

/// Prints the features document.
pub fn features() -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&features_json())?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_parse_as_the_oci_features_document() {
        let f: oci_spec::runtime::Features =
            serde_json::from_value(features_json()).expect("OCI features");
        assert_eq!(f.oci_version_max(), OCI_VERSION);
        let linux = f.linux().as_ref().unwrap();
        assert!(linux.namespaces().as_ref().unwrap().len() == 5);
        let caps = linux.capabilities().as_ref().unwrap();
        assert_eq!(caps.first().map(String::as_str), Some("CAP_CHOWN"));
        assert!(
            f.mount_options()
                .as_ref()
                .unwrap()
                .iter()
                .any(|o| o == "rbind")
        );
    }

    #[test]
    fn spec_writes_a_parsable_default_once() {
        let dir = tempfile::tempdir().unwrap();
        let args = SpecArgs {
            bundle: dir.path().to_owned(),
        };
        spec(&args, None).unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        let parsed: oci_spec::runtime::Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed.root().as_ref().unwrap().path(),
            &PathBuf::from("rootfs")
        );
        assert!(parsed.process().is_some());
        let again = spec(&args, None).unwrap_err().to_string();
        assert!(
            again.ends_with("config.json exists. Remove it first"),
            "{again}"
        );
    }
}
