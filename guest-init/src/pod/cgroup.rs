//! Per-app resource limits: the `resource/memory` and `resource/cpu` isolators turned into a
//! cgroup v2 group per app (`memory.max`, `cpu.max`).
//!
//! The VM as a whole is sized from the same isolators by the host; these limits keep one app
//! from taking what its neighbours in the pod were promised. Only the limit is applied (the
//! request, when alone, stands in for it): rkt's `--memory`/`--cpu` set both to the same value.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use appc::Isolator;
use nix::mount::MsFlags;
use serde_json::Value;
use thiserror::Error;

/// Where guest-init mounts the cgroup v2 hierarchy.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The scheduling period written to `cpu.max`, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts in `cpu.max`, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;

pub const MEMORY_ISOLATOR: &str = "resource/memory";
pub const CPU_ISOLATOR: &str = "resource/cpu";
/// cgroup v1's relative CPU weight, which cgroup v2 calls `cpu.weight`.
pub const CPU_SHARES_ISOLATOR: &str = "os/linux/cpu-shares";
/// The kernel's bounds on cgroup v1 shares (`MIN_SHARES`, `MAX_SHARES`).
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

/// What an app's cgroup holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max`, in bytes.
    pub memory_max: Option<u64>,
    /// `cpu.max` quota, in microseconds per `CPU_PERIOD_US`.
    pub cpu_quota_us: Option<u64>,
    /// `cpu.weight` (1..=10000), from `os/linux/cpu-shares`.
    pub cpu_weight: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory_max.is_none() && self.cpu_quota_us.is_none() && self.cpu_weight.is_none()
    }

    /// The files to write in the app's group, in order, with their content.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        let mut files = Vec::new();
        if let Some(bytes) = self.memory_max {
            files.push(("memory.max", bytes.to_string()));
        }
        if let Some(quota) = self.cpu_quota_us {
            files.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
        }
        if let Some(weight) = self.cpu_weight {
            files.push(("cpu.weight", weight.to_string()));
        }
        files
    }
}

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error(
        "isolator {name}: {value} is not a quantity guest-init understands; write it like \
         \"128M\", \"1Gi\" (memory) or \"500m\", \"2\" (cpu)"
    )]
    BadQuantity { name: &'static str, value: String },

    #[error(
        "isolator {name}: a limit of {value} is too small to run anything; give at least \
         {minimum}"
    )]
    TooSmall {
        name: &'static str,
        value: String,
        minimum: &'static str,
    },

    #[error(
        "isolator {CPU_SHARES_ISOLATOR}: {value} is not a number of shares from \
         {MIN_SHARES} to {MAX_SHARES}"
    )]
    BadShares { value: String },

    #[error(
        "cannot apply the resource limits ({step}: {source}); the guest kernel needs cgroup v2 \
         with the memory and cpu controllers (CONFIG_MEMCG, CONFIG_CFS_BANDWIDTH)"
    )]
    Apply { step: String, source: io::Error },
}

/// The limits asked for by `isolators` (an app's). Other isolators are not this module's.
pub fn limits_from_isolators(isolators: &[Isolator]) -> Result<Limits, CgroupError> {
    let mut limits = Limits::default();
    for isolator in isolators {
        match isolator.name.as_str() {
            MEMORY_ISOLATOR => {
                let Some(value) = limit_or_request(&isolator.value) else {
                    continue;
                };
                let milli = quantity_milli(value).ok_or_else(|| bad(MEMORY_ISOLATOR, value))?;
                let bytes = u64::try_from(milli / 1000).unwrap_or(u64::MAX);
                // Below a page nothing runs, and the kernel would OOM-kill at once.
                if bytes < 4096 {
                    return Err(CgroupError::TooSmall {
                        name: MEMORY_ISOLATOR,
                        value: value.to_string(),
                        minimum: "4Ki",
                    });
                }
                limits.memory_max = Some(bytes);
            }
            CPU_ISOLATOR => {
                let Some(value) = limit_or_request(&isolator.value) else {
                    continue;
                };
                let millicores = quantity_milli(value).ok_or_else(|| bad(CPU_ISOLATOR, value))?;
                if millicores == 0 {
                    return Err(CgroupError::TooSmall {
                        name: CPU_ISOLATOR,
                        value: value.to_string(),
                        minimum: "10m",
                    });
                }
                // millicores / 1000 CPUs, each CPU_PERIOD_US of run time per period.
                let quota = millicores.saturating_mul(u128::from(CPU_PERIOD_US)) / 1000;
                let quota = u64::try_from(quota).unwrap_or(u64::MAX);
                limits.cpu_quota_us = Some(quota.max(CPU_MIN_QUOTA_US));
            }
            CPU_SHARES_ISOLATOR => {
                let shares = isolator
                    .value
                    .as_u64()
                    .filter(|shares| (MIN_SHARES..=MAX_SHARES).contains(shares))
                    .ok_or_else(|| CgroupError::BadShares {
                        value: isolator.value.to_string(),
                    })?;
                limits.cpu_weight = Some(shares_to_weight(shares));
            }
            _ => {}
        }
    }
    Ok(limits)
}

/// cgroup v1 shares to cgroup v2 weight as the kernel relates them (the default 1024 shares is
/// the default weight 100) and systemd converts `CPUShares=`: proportionally, clamped to the
/// weight's range 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    (shares.saturating_mul(100) / 1024).clamp(1, 10_000)
}

fn bad(name: &'static str, value: &Value) -> CgroupError {
    CgroupError::BadQuantity {
        name,
        value: value.to_string(),
    }
}

fn limit_or_request(value: &Value) -> Option<&Value> {
    value.get("limit").or_else(|| value.get("request"))
}

/// A Kubernetes-style quantity (what appc uses) in thousandths of its unit: `"500m"` is 500,
/// `"2"` is 2000, `"128M"` is 128e9, `"1Gi"` is 2^30 * 1000. Exact integer arithmetic; a
/// fraction below a thousandth is dropped. JSON numbers are taken as plain quantities.
pub fn quantity_milli(value: &Value) -> Option<u128> {
    let text = match value {
        Value::String(text) => text.trim().to_owned(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    const SUFFIXES: [(&str, u128); 14] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
        ("m", 0),
    ];
    let (number, multiplier_milli) = SUFFIXES
        .iter()
        .find_map(|(suffix, multiplier)| {
            text.strip_suffix(suffix).map(|number| {
                // `m` means thousandths: the number already counts them.
                let milli = if *multiplier == 0 {
                    1
                } else {
                    multiplier * 1000
                };
                (number, milli)
            })
        })
        .unwrap_or((text.as_str(), 1000));
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty()
        || !digits_only(whole)
        || !digits_only(fraction)
        || whole.len() + fraction.len() > 30
    {
        return None;
    }
    let mantissa: u128 = format!("{whole}{fraction}").parse().ok()?;
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    mantissa.checked_mul(multiplier_milli).map(|m| m / scale)
}

/// The cgroup v2 hierarchy, mounted and with the memory and cpu controllers handed down to the
/// app groups.
pub struct Hierarchy {
    root: PathBuf,
}

impl Hierarchy {
    /// Mounts cgroup2 at `CGROUP_ROOT` (unless it is there already) and enables the
    /// controllers for the groups below.
    pub fn set_up() -> Result<Hierarchy, CgroupError> {
        let root = PathBuf::from(CGROUP_ROOT);
        let apply = |step: &str, source: io::Error| CgroupError::Apply {
            step: step.to_owned(),
            source,
        };
        fs::create_dir_all(&root).map_err(|e| apply("create /sys/fs/cgroup", e))?;
        if !root.join("cgroup.controllers").exists() {
            nix::mount::mount(
                Some("cgroup2"),
                &root,
                Some("cgroup2"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|errno| apply("mount cgroup2", errno.into()))?;
        }
        fs::write(root.join("cgroup.subtree_control"), "+memory +cpu")
            .map_err(|e| apply("enable the memory and cpu controllers", e))?;
        Ok(Hierarchy { root })
    }

    /// Creates the group of app `name` with `limits`; returns its `cgroup.procs`, which the
    /// app's processes join before they exec.
    pub fn create_app_group(&self, name: &str, limits: &Limits) -> Result<PathBuf, CgroupError> {
        let group = self.root.join(format!("app-{name}"));
        create_group(&group, limits)?;
        Ok(group.join("cgroup.procs"))
    }
}

fn create_group(group: &Path, limits: &Limits) -> Result<(), CgroupError> {
    match fs::create_dir(group) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(CgroupError::Apply {
                step: format!("create {}", group.display()),
                source,
            })
        }
    }
    for (file, content) in limits.files() {
        fs::write(group.join(file), &content).map_err(|source| CgroupError::Apply {
            step: format!("write {content:?} to {}", group.join(file).display()),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn isolator(name: &str, value: Value) -> Isolator {
        serde_json::from_value(json!({"name": name, "value": value})).unwrap()
    }

    #[test]
    fn quantities_in_thousandths() {
        let q = |text: &str| quantity_milli(&json!(text));
        assert_eq!(q("500m"), Some(500));
        assert_eq!(q("2"), Some(2000));
        assert_eq!(q("1.5"), Some(1500));
        assert_eq!(q("128M"), Some(128_000_000_000));
        assert_eq!(q("1Gi"), Some((1 << 30) * 1000));
        assert_eq!(q("0.5Ki"), Some(512_000));
        assert_eq!(q("2k"), Some(2_000_000));
        assert_eq!(quantity_milli(&json!(3)), Some(3000));
        assert_eq!(quantity_milli(&json!(0.25)), Some(250));
        for bad in ["", "lots", "1.2.3", "-1", "M", "1 G", "12x"] {
            assert_eq!(q(bad), None, "{bad:?}");
        }
        assert_eq!(quantity_milli(&json!(true)), None);
    }

    #[test]
    fn memory_and_cpu_limits_become_cgroup_files() {
        let limits = limits_from_isolators(&[
            isolator(
                "resource/memory",
                json!({"request": "64M", "limit": "128M"}),
            ),
            isolator("resource/cpu", json!({"request": "500m", "limit": "500m"})),
            isolator("os/linux/oom-score-adj", json!(100)),
        ])
        .unwrap();
        assert_eq!(limits.memory_max, Some(128_000_000));
        assert_eq!(limits.cpu_quota_us, Some(50_000));
        assert_eq!(
            limits.files(),
            vec![
                ("memory.max", "128000000".to_owned()),
                ("cpu.max", "50000 100000".to_owned())
            ]
        );
        let two_cpus =
            limits_from_isolators(&[isolator("resource/cpu", json!({"limit": "2"}))]).unwrap();
        assert_eq!(two_cpus.cpu_quota_us, Some(200_000));
        assert_eq!(two_cpus.memory_max, None);
        // A tiny CPU share still gets the kernel's minimum quota.
        let tiny = limits_from_isolators(&[isolator("resource/cpu", json!({"limit": "1m"}))]);
        assert_eq!(tiny.unwrap().cpu_quota_us, Some(1_000));
    }

    #[test]
    fn cpu_shares_become_a_weight() {
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(512), 50);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        let limits =
            limits_from_isolators(&[isolator("os/linux/cpu-shares", json!(2048))]).unwrap();
        assert_eq!(limits.files(), vec![("cpu.weight", "200".to_owned())]);
        for bad in [json!(1), json!(300_000), json!("1024")] {
            assert!(matches!(
                limits_from_isolators(&[isolator("os/linux/cpu-shares", bad)]),
                Err(CgroupError::BadShares { .. })
            ));
        }
    }

    #[test]
    fn request_alone_stands_in_for_the_limit() {
        let limits =
            limits_from_isolators(&[isolator("resource/memory", json!({"request": "1Gi"}))])
                .unwrap();
        assert_eq!(limits.memory_max, Some(1 << 30));
    }

    #[test]
    fn no_isolators_no_limits_and_bad_values_are_named() {
        assert!(limits_from_isolators(&[]).unwrap().is_empty());
        assert!(limits_from_isolators(&[]).unwrap().files().is_empty());
        let message =
            limits_from_isolators(&[isolator("resource/memory", json!({"limit": "lots"}))])
                .unwrap_err()
                .to_string();
        assert!(message.contains("resource/memory"), "{message}");
        assert!(message.contains("lots"), "{message}");
        assert!(matches!(
            limits_from_isolators(&[isolator("resource/cpu", json!({"limit": "0"}))]),
            Err(CgroupError::TooSmall { .. })
        ));
        assert!(matches!(
            limits_from_isolators(&[isolator("resource/memory", json!({"limit": "1k"}))]),
            Err(CgroupError::TooSmall { .. })
        ));
    }

    #[test]
    fn a_group_gets_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("app-web");
        let limits = Limits {
            memory_max: Some(1 << 20),
            cpu_quota_us: Some(25_000),
            cpu_weight: None,
        };
        create_group(&group, &limits).unwrap();
        assert_eq!(
            fs::read_to_string(group.join("memory.max")).unwrap(),
            "1048576"
        );
        assert_eq!(
            fs::read_to_string(group.join("cpu.max")).unwrap(),
            "25000 100000"
        );
        // Created again (a second boot), it is reused.
        create_group(&group, &limits).unwrap();
    }
}
