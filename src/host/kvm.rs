//! Is `/dev/kvm` here, does it answer the KVM API, and is it backed by hardware
//! virtualisation (AMD SVM, Intel VMX) or by `kvm_pvm`, a software module under which
//! ordinary guest kernels do not run?

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use kvm_ioctls::{Cap, Kvm};
use serde::Serialize;

use super::HostRoot;

/// The KVM API version every Linux since 2.6.22 reports.
pub const KVM_API_VERSION: i32 = 12;

/// Capabilities the runvm VMM relies on.
const REQUIRED_CAPS: [(Cap, &str); 4] = [
    (Cap::UserMemory, "user memory"),
    (Cap::Irqchip, "in-kernel irqchip"),
    (Cap::Ioeventfd, "ioeventfd"),
    (Cap::Irqfd, "irqfd"),
];

/// What backs `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmBackend {
    /// No `/dev/kvm` at all.
    Absent,
    /// AMD-V (`svm`) with `kvm_amd`.
    HardwareSvm,
    /// Intel VT-x (`vmx`) with `kvm_intel`.
    HardwareVmx,
    /// `kvm_pvm`: pagetable-based software virtualisation; needs PVM-built guests.
    Pvm,
    /// `/dev/kvm` exists but neither hardware flags nor a known module explain it.
    Unknown,
}

impl KvmBackend {
    /// How a person would name it.
    pub fn describe(self) -> &'static str {
        match self {
            KvmBackend::Absent => "no /dev/kvm",
            KvmBackend::HardwareSvm => "hardware KVM (AMD SVM, kvm_amd)",
            KvmBackend::HardwareVmx => "hardware KVM (Intel VMX, kvm_intel)",
            KvmBackend::Pvm => "kvm_pvm (software nested virtualisation)",
            KvmBackend::Unknown => "KVM of unknown kind (no svm/vmx cpu flag)",
        }
    }
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvmReport {
    /// What backs `/dev/kvm`.
    pub backend: KvmBackend,
    /// The API version, when `/dev/kvm` could be opened.
    pub api_version: Option<i32>,
    /// Why `/dev/kvm` is not usable, if it is not.
    pub error: Option<String>,
}

impl KvmReport {
    /// True when runvm can boot ordinary guest kernels here.
    pub fn usable(&self) -> bool {
        self.error.is_none()
            && matches!(
                self.backend,
                KvmBackend::HardwareSvm | KvmBackend::HardwareVmx | KvmBackend::Unknown
            )
    }
}

/// The CPU flags of the first processor in `/proc/cpuinfo`.
fn cpu_flags(root: &HostRoot) -> Vec<String> {
    root.read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, flags)| flags.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Decides what backs `/dev/kvm` from loaded modules and CPU flags.
pub fn backend(root: &HostRoot) -> KvmBackend {
    if !root.exists("/dev/kvm") {
        return KvmBackend::Absent;
    }
    // When kvm_pvm is loaded it is the module serving /dev/kvm, whatever the CPU flags say.
    if root.exists("/sys/module/kvm_pvm") {
        return KvmBackend::Pvm;
    }
    let flags = cpu_flags(root);
    let has = |f: &str| flags.iter().any(|x| x == f);
    if has("svm") {
        KvmBackend::HardwareSvm
    } else if has("vmx") {
        KvmBackend::HardwareVmx
    } else {
        KvmBackend::Unknown
    }
}

/// Opens `/dev/kvm` below `root` and checks the API version and required capabilities.
fn open_and_check(root: &HostRoot) -> Result<i32, String> {
    let path = root.path("/dev/kvm");
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} has a NUL byte", path.display()))?;
    let kvm =
        Kvm::new_with_path(&cpath).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(format!(
            "KVM API version {version}, runvm needs {KVM_API_VERSION}"
        ));
    }
    let missing: Vec<&str> = REQUIRED_CAPS
        .iter()
        .filter(|(cap, _)| !kvm.check_extension(*cap))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!("KVM lacks {}", missing.join(", ")));
    }
    kvm.create_vm()
        .map_err(|e| format!("cannot create a VM: {e}"))?;
    Ok(version)
}

/// Probes `/dev/kvm` below `root`.
pub fn probe(root: &HostRoot) -> KvmReport {
    let backend = backend(root);
    if backend == KvmBackend::Absent {
        return KvmReport {
            backend,
            api_version: None,
            error: Some("/dev/kvm does not exist".into()),
        };
    }
    match open_and_check(root) {
        Ok(v) => KvmReport {
            backend,
            api_version: Some(v),
            error: None,
        },
        Err(e) => KvmReport {
            backend,
            api_version: None,
            error: Some(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(flags: &str, modules: &[&str], dev_kvm: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("proc")).unwrap();
        std::fs::write(
            p.join("proc/cpuinfo"),
            format!(
                "processor\t: 0\nvendor_id\t: X\nflags\t\t: fpu {flags} lm\n\nprocessor\t: 1\n"
            ),
        )
        .unwrap();
        for m in modules {
            std::fs::create_dir_all(p.join("sys/module").join(m)).unwrap();
        }
        if dev_kvm {
            std::fs::create_dir_all(p.join("dev")).unwrap();
            std::fs::write(p.join("dev/kvm"), "").unwrap();
        }
        dir
    }

    #[test]
    fn svm_with_kvm_amd_is_hardware() {
        let d = fake("svm", &["kvm", "kvm_amd"], true);
        assert_eq!(backend(&HostRoot::at(d.path())), KvmBackend::HardwareSvm);
    }

    #[test]
    fn vmx_is_hardware() {
        let d = fake("vmx", &["kvm", "kvm_intel"], true);
        assert_eq!(backend(&HostRoot::at(d.path())), KvmBackend::HardwareVmx);
    }

    #[test]
    fn kvm_pvm_wins_over_flags() {
        let d = fake("", &["kvm", "kvm_pvm"], true);
        assert_eq!(backend(&HostRoot::at(d.path())), KvmBackend::Pvm);
        let d = fake("svm", &["kvm", "kvm_pvm"], true);
        assert_eq!(backend(&HostRoot::at(d.path())), KvmBackend::Pvm);
    }

    #[test]
    fn no_device_is_absent_and_not_usable() {
        let d = fake("svm", &["kvm", "kvm_amd"], false);
        let r = probe(&HostRoot::at(d.path()));
        assert_eq!(r.backend, KvmBackend::Absent);
        assert!(!r.usable());
    }

    #[test]
    fn a_device_that_is_not_kvm_is_not_usable() {
        // A regular file stands for /dev/kvm: opening works, the ioctl must fail.
        let d = fake("svm", &["kvm", "kvm_amd"], true);
        let r = probe(&HostRoot::at(d.path()));
        assert_eq!(r.backend, KvmBackend::HardwareSvm);
        assert!(r.error.is_some(), "{r:?}");
        assert!(!r.usable());
    }

    #[test]
    fn flags_without_kvm_flags_is_unknown() {
        let d = fake("sse2", &["kvm"], true);
        assert_eq!(backend(&HostRoot::at(d.path())), KvmBackend::Unknown);
    }
}
