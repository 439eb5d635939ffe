//! The VM's size from the apps' `resource/cpu` and `resource/memory` isolators (each app's
//! limit, else its request), as rkt's kvm flavor sized it, with smaller defaults:
//!
//! - vCPUs: the sum of the apps' CPU, rounded up; 1 when no app names one; never more than
//!   the host's CPUs.
//! - memory: the sum of the apps' memory plus [`MEM_OVERHEAD_MIB`] for the guest kernel,
//!   guest-init and page cache, and never less than [`DEFAULT_MEM_MIB`], which is also the
//!   size when no app names one. An app without a memory isolator adds nothing (it shares
//!   what the others leave).
//!
//! Quantities are Kubernetes-style: `500m`, `2`, `1.5`, `128M` (10^6), `128Mi` (2^20), ...

use appc::{Isolator, PodManifest};
use serde_json::Value;

use crate::error::Stage1Error;

/// Guest RAM when no app asks for memory, and the floor otherwise.
pub const DEFAULT_MEM_MIB: u64 = 128;
/// What the guest itself needs on top of the apps' memory.
pub const MEM_OVERHEAD_MIB: u64 = 64;

const MIB: u128 = 1 << 20;

/// How big the pod's VM is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSize {
    pub vcpus: u8,
    pub mem_mib: u64,
}

/// Sizes the VM for `manifest` on a host with `host_cpus` CPUs.
pub fn vm_size(manifest: &PodManifest, host_cpus: usize) -> Result<VmSize, Stage1Error> {
    let mut cpu_milli: u128 = 0;
    let mut mem_bytes: u128 = 0;
    let mut any_cpu = false;
    let mut any_mem = false;
    for app in &manifest.apps {
        let isolators = app.app.as_ref().map(|a| a.isolators.as_slice());
        for isolator in isolators.unwrap_or_default() {
            let field = || format!("app {}: {}", app.name.as_str(), isolator.name.as_str());
            match isolator.name.as_str() {
                "resource/cpu" => {
                    any_cpu = true;
                    cpu_milli =
                        cpu_milli.saturating_add(amount(isolator).map_err(|p| bad(field(), p))?);
                }
                "resource/memory" => {
                    any_mem = true;
                    // Quantities are parsed in thousandths; memory is whole bytes.
                    let bytes = amount(isolator)
                        .map_err(|p| bad(field(), p))?
                        .div_ceil(1000);
                    mem_bytes = mem_bytes.saturating_add(bytes);
                }
                _ => {}
            }
        }
    }
    let max_vcpus = host_cpus.clamp(1, usize::from(vmm::config::MAX_VCPUS)) as u128;
    let vcpus = if any_cpu {
        cpu_milli.div_ceil(1000).clamp(1, max_vcpus)
    } else {
        1
    };
    let mem_mib = if any_mem {
        let apps = mem_bytes.div_ceil(MIB) + u128::from(MEM_OVERHEAD_MIB);
        apps.clamp(
            u128::from(DEFAULT_MEM_MIB),
            u128::from(vmm::config::MAX_MEM_MIB),
        )
    } else {
        u128::from(DEFAULT_MEM_MIB)
    };
    Ok(VmSize {
        vcpus: u8::try_from(vcpus).unwrap_or(vmm::config::MAX_VCPUS),
        mem_mib: u64::try_from(mem_mib).unwrap_or(vmm::config::MAX_MEM_MIB),
    })
}

fn bad(field: String, problem: String) -> Stage1Error {
    Stage1Error::Unsupported(format!("the pod manifest's isolator {field}: {problem}"))
}

/// The isolator's limit (else request), in thousandths of its unit.
fn amount(isolator: &Isolator) -> Result<u128, String> {
    let value = isolator
        .value
        .get("limit")
        .or_else(|| isolator.value.get("request"))
        .ok_or("it has neither limit nor request")?;
    match value {
        Value::String(text) => parse_quantity_milli(text),
        Value::Number(n) => parse_quantity_milli(&n.to_string()),
        _ => Err("its quantity is not a string".to_string()),
    }
}

/// Parses a Kubernetes quantity into thousandths of the unit (`500m` -> 500, `1` -> 1000,
/// `1Ki` -> 1_024_000). Fractions beyond a thousandth are rounded up.
pub fn parse_quantity_milli(text: &str) -> Result<u128, String> {
    const SUFFIXES: &[(&str, u128, u128)] = &[
        // (suffix, multiplier, divisor)
        ("Ki", 1 << 10, 1),
        ("Mi", 1 << 20, 1),
        ("Gi", 1 << 30, 1),
        ("Ti", 1 << 40, 1),
        ("Pi", 1 << 50, 1),
        ("Ei", 1 << 60, 1),
        ("m", 1, 1000),
        ("k", 1_000, 1),
        ("K", 1_000, 1),
        ("M", 1_000_000, 1),
        ("G", 1_000_000_000, 1),
        ("T", 1_000_000_000_000, 1),
        ("P", 1_000_000_000_000_000, 1),
        ("E", 1_000_000_000_000_000_000, 1),
    ];
    let bad = || format!("{text:?} is not a quantity like \"500m\", \"128M\" or \"1Gi\"");
    let (number, multiplier, divisor) = SUFFIXES
        .iter()
        .find_map(|(suffix, m, d)| text.strip_suffix(suffix).map(|n| (n, *m, *d)))
        .unwrap_or((text, 1, 1));
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
        || whole.len() > 30
    {
        return Err(bad());
    }
    // The number in units of 10^-digits, then scaled to thousandths of the unit, rounding up.
    let digits = fraction.len().min(30) as u32;
    let mantissa: u128 = format!("{whole}{}", &fraction[..digits as usize])
        .parse()
        .map_err(|_| bad())?;
    let too_big = || format!("{text:?} is too large");
    let scaled = mantissa
        .checked_mul(multiplier)
        .and_then(|v| v.checked_mul(1000))
        .ok_or_else(too_big)?;
    let denominator = 10u128
        .pow(digits)
        .checked_mul(divisor)
        .ok_or_else(too_big)?;
    Ok(scaled.div_ceil(denominator))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(isolators: &[&str]) -> PodManifest {
        let apps: Vec<String> = isolators
            .iter()
            .enumerate()
            .map(|(i, iso)| {
                format!(
                    r#"{{"name":"a{i}","image":{{"id":"sha512-{}"}},
                        "app":{{"exec":["/x"],"user":"0","group":"0","isolators":[{iso}]}}}}"#,
                    "0".repeat(128)
                )
            })
            .collect();
        let json = format!(
            r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[{}]}}"#,
            apps.join(",")
        );
        PodManifest::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_milli("500m"), Ok(500));
        assert_eq!(parse_quantity_milli("2"), Ok(2000));
        assert_eq!(parse_quantity_milli("1.5"), Ok(1500));
        assert_eq!(parse_quantity_milli("0.0001"), Ok(1), "rounded up");
        assert_eq!(parse_quantity_milli("128M"), Ok(128_000_000_000));
        assert_eq!(parse_quantity_milli("1Gi"), Ok((1u128 << 30) * 1000));
        assert_eq!(parse_quantity_milli(".5Ki"), Ok(512_000));
        for bad in ["", "m", "lots", "1.2.3", "-1", "1 G", "1e3", "."] {
            assert!(parse_quantity_milli(bad).is_err(), "{bad:?}");
        }
        assert!(parse_quantity_milli(&format!("{}Ei", "9".repeat(30)))
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn no_isolators_means_the_defaults() {
        assert_eq!(
            vm_size(&pod(&[""]), 8).unwrap(),
            VmSize {
                vcpus: 1,
                mem_mib: DEFAULT_MEM_MIB
            }
        );
    }

    #[test]
    fn cpus_add_up_round_up_and_stop_at_the_host() {
        let cpu = |q: &str| {
            format!(r#"{{"name":"resource/cpu","value":{{"request":"{q}","limit":"{q}"}}}}"#)
        };
        let two_apps = pod(&[&cpu("500m"), &cpu("1200m")]);
        assert_eq!(vm_size(&two_apps, 8).unwrap().vcpus, 2);
        assert_eq!(vm_size(&pod(&[&cpu("16")]), 4).unwrap().vcpus, 4);
        assert_eq!(vm_size(&pod(&[&cpu("1m")]), 4).unwrap().vcpus, 1);
    }

    #[test]
    fn memory_adds_up_plus_overhead_with_a_floor() {
        let mem = |q: &str| format!(r#"{{"name":"resource/memory","value":{{"limit":"{q}"}}}}"#);
        assert_eq!(
            vm_size(&pod(&[&mem("256Mi"), &mem("100M"), ""]), 2)
                .unwrap()
                .mem_mib,
            256 + 96 + MEM_OVERHEAD_MIB // 100 MB is 95.4 MiB, rounded up
        );
        assert_eq!(
            vm_size(&pod(&[&mem("16Mi")]), 2).unwrap().mem_mib,
            DEFAULT_MEM_MIB
        );
        let request_only = r#"{"name":"resource/memory","value":{"request":"512Mi"}}"#;
        assert_eq!(
            vm_size(&pod(&[request_only]), 2).unwrap().mem_mib,
            512 + MEM_OVERHEAD_MIB
        );
    }
}
