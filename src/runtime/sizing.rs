//! How big a container's VM is, from its spec: guest RAM from the memory limit (plus an
//! overhead for the guest kernel and guest-init), vCPUs from the CPU quota or cpuset, the
//! defaults otherwise; annotations `runvm.memory_mib` and `runvm.vcpus` override both. RAM is
//! mapped lazily, so a generous size costs the host only what the guest touches.

use oci_spec::runtime::Spec;

use crate::vmm::vm::MAX_VCPUS;

/// Guest RAM when the spec sets no memory limit.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Guest RAM added to the container's memory limit: the guest kernel, guest-init, page cache.
pub const MEMORY_OVERHEAD_MIB: u64 = 64;
/// The least guest RAM a VM gets.
pub const MIN_MEMORY_MIB: u64 = 128;
/// The most guest RAM a VM gets (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// vCPUs when the spec sets no CPU limit.
pub const DEFAULT_VCPUS: u8 = 1;
/// Annotation overriding guest RAM in MiB.
pub const ANNOTATION_MEMORY: &str = "runvm.memory_mib";
/// Annotation overriding the vCPU count.
pub const ANNOTATION_VCPUS: &str = "runvm.vcpus";

/// The size of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
}

/// A bad sizing annotation.
#[derive(Debug, thiserror::Error)]
#[error("annotation {name}={value}: expected a whole number from {min} to {max}")]
pub struct SizingError {
    name: &'static str,
    value: String,
    min: u64,
    max: u64,
}

/// Counts the CPUs of a cpuset list such as `0-3,6`; `None` if it is malformed.
fn cpuset_count(list: &str) -> Option<u64> {
    let mut n: u64 = 0;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?),
            None => {
                let c = part.parse::<u64>().ok()?;
                (c, c)
            }
        };
        if hi < lo || hi > 4095 {
            return None;
        }
        n += hi - lo + 1;
    }
    (n > 0).then_some(n)
}

fn annotation(
    spec: &Spec,
    name: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, SizingError> {
    let Some(value) = spec.annotations().as_ref().and_then(|a| a.get(name)) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
        _ => Err(SizingError {
            name,
            value: value.clone(),
            min,
            max,
        }),
    }
}

/// The VM size for `spec` on a host with `host_cpus` CPUs.
pub fn vm_size(spec: &Spec, host_cpus: u64) -> Result<VmSize, SizingError> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let limit = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0);
    let memory_mib = match annotation(spec, ANNOTATION_MEMORY, MIN_MEMORY_MIB, MAX_MEMORY_MIB)? {
        Some(m) => m,
        None => match limit {
            Some(bytes) => ((bytes as u64).div_ceil(1 << 20) + MEMORY_OVERHEAD_MIB)
                .clamp(MIN_MEMORY_MIB, MAX_MEMORY_MIB),
            None => DEFAULT_MEMORY_MIB,
        },
    };

    let max_vcpus = host_cpus.clamp(1, u64::from(MAX_VCPUS));
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    let from_quota = cpu.and_then(|c| match (c.quota(), c.period()) {
        (Some(q), Some(p)) if q > 0 && p > 0 => Some((q as u64).div_ceil(p)),
        _ => None,
    });
    let from_cpuset = cpu.and_then(|c| c.cpus().as_deref()).and_then(cpuset_count);
    let vcpus = match annotation(spec, ANNOTATION_VCPUS, 1, u64::from(MAX_VCPUS))? {
        Some(v) => v,
        None => from_quota
            .or(from_cpuset)
            .unwrap_or(u64::from(DEFAULT_VCPUS))
            .clamp(1, max_vcpus),
    };
    Ok(VmSize {
        vcpus: u8::try_from(vcpus).unwrap_or(MAX_VCPUS),
        memory_mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    fn fixture(name: &str) -> Spec {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn docker_limits_size_the_vm() {
        // docker run -m 128m --cpus 0.5: limit 134217728, quota 50000 / period 100000.
        let s = vm_size(&fixture("docker-run-limits-config.json"), 2).unwrap();
        assert_eq!(
            s,
            VmSize {
                vcpus: 1,
                memory_mib: 128 + MEMORY_OVERHEAD_MIB
            }
        );
    }

    #[test]
    fn no_limits_give_the_defaults() {
        for f in ["docker-run-config.json", "podman-run-config.json"] {
            let s = vm_size(&fixture(f), 2).unwrap();
            assert_eq!(
                s,
                VmSize {
                    vcpus: DEFAULT_VCPUS,
                    memory_mib: DEFAULT_MEMORY_MIB
                },
                "{f}"
            );
        }
    }

    #[test]
    fn quota_rounds_up_and_is_capped_by_the_host() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"resources":{"cpu":{"quota":250000,"period":100000}}}}"#,
        );
        assert_eq!(vm_size(&s, 8).unwrap().vcpus, 3);
        assert_eq!(vm_size(&s, 2).unwrap().vcpus, 2);
        let s = spec(r#"{"ociVersion":"1.0.2","linux":{"resources":{"cpu":{"cpus":"0-3,6"}}}}"#);
        assert_eq!(vm_size(&s, 64).unwrap().vcpus, 5);
    }

    #[test]
    fn tiny_and_unlimited_memory() {
        let s =
            spec(r#"{"ociVersion":"1.0.2","linux":{"resources":{"memory":{"limit":6291456}}}}"#);
        assert_eq!(vm_size(&s, 1).unwrap().memory_mib, MIN_MEMORY_MIB);
        let s = spec(r#"{"ociVersion":"1.0.2","linux":{"resources":{"memory":{"limit":-1}}}}"#);
        assert_eq!(vm_size(&s, 1).unwrap().memory_mib, DEFAULT_MEMORY_MIB);
    }

    #[test]
    fn annotations_override_and_are_checked() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","annotations":{"runvm.vcpus":"4","runvm.memory_mib":"512"}}"#,
        );
        assert_eq!(
            vm_size(&s, 1).unwrap(),
            VmSize {
                vcpus: 4,
                memory_mib: 512
            }
        );
        for bad in [
            r#""runvm.vcpus":"0""#,
            r#""runvm.vcpus":"many""#,
            r#""runvm.memory_mib":"1""#,
        ] {
            let s = spec(&format!(
                r#"{{"ociVersion":"1.0.2","annotations":{{{bad}}}}}"#
            ));
            let err = vm_size(&s, 1).unwrap_err().to_string();
            assert!(err.starts_with("annotation runvm."), "{err}");
        }
    }

    #[test]
    fn cpuset_lists() {
        assert_eq!(cpuset_count("0"), Some(1));
        assert_eq!(cpuset_count("0-3, 8-9"), Some(6));
        assert_eq!(cpuset_count(""), None);
        assert_eq!(cpuset_count("3-1"), None);
        assert_eq!(cpuset_count("0-999999"), None);
        assert_eq!(cpuset_count("x"), None);
    }
}
