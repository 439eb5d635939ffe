//! The capability isolators: `os/linux/capabilities-retain-set` and `-remove-set`, over rkt's
//! default set, applied to the bounding set of every app process (and `enter` command) as rkt's
//! stage1 did, and to the other sets so nothing outside the bounding set survives:
//! - bounding set: the app's set, minus CAP_SYS_BOOT always (see `without_reboot`);
//! - inheritable and ambient: emptied (nothing is passed on across exec but what the kernel
//!   grants a root program from the bounding set);
//! - root apps: effective and permitted cut to the bounding set right away, so the app's
//!   first instruction already runs with them (exec would give it that set anyway);
//! - other users: setuid(2) empties permitted and effective, and exec grants nothing beyond
//!   file capabilities, which the bounding set limits too.

use std::collections::HashSet;
use std::io;
use std::str::FromStr;

use appc::Isolator;
use caps::{CapSet, Capability, CapsHashSet};
use serde_json::Value;
use thiserror::Error;

pub const RETAIN_SET: &str = "os/linux/capabilities-retain-set";
pub const REMOVE_SET: &str = "os/linux/capabilities-remove-set";

/// rkt's (and appc's) default set for apps.
pub const DEFAULT: [Capability; 14] = [
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_KILL,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETFCAP,
    Capability::CAP_SYS_CHROOT,
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CapsError {
    #[error("isolators {RETAIN_SET} and {REMOVE_SET} exclude each other; keep one")]
    Both,
    #[error("isolator {name}: the value must be {{\"set\": [\"CAP_...\", ...]}}")]
    Shape { name: &'static str },
    #[error(
        "isolator {name}: {capability:?} is not a Linux capability (write it like CAP_NET_RAW)"
    )]
    Unknown {
        name: &'static str,
        capability: String,
    },
}

/// The bounding set an app's isolators ask for.
pub fn bounding_set(isolators: &[Isolator]) -> Result<CapsHashSet, CapsError> {
    let retain = find(isolators, RETAIN_SET)?;
    let remove = find(isolators, REMOVE_SET)?;
    let set = match (retain, remove) {
        (Some(_), Some(_)) => return Err(CapsError::Both),
        (Some(retain), None) => retain,
        (None, Some(remove)) => DEFAULT
            .iter()
            .copied()
            .filter(|cap| !remove.contains(cap))
            .collect(),
        (None, None) => DEFAULT.iter().copied().collect(),
    };
    Ok(without_reboot(set))
}

/// Every capability but CAP_SYS_BOOT (`rkt.disable=capabilities`).
pub fn all() -> CapsHashSet {
    without_reboot(caps::all())
}

/// CAP_SYS_BOOT never reaches an app, whatever it asks for: the apps share the VM with
/// guest-init, and reboot(2) would end the pod without its statuses, or `halt -f` stop the
/// guest's CPUs for good and leave `rkt run` waiting.
fn without_reboot(mut set: CapsHashSet) -> CapsHashSet {
    set.remove(&Capability::CAP_SYS_BOOT);
    set
}

fn find(isolators: &[Isolator], name: &'static str) -> Result<Option<CapsHashSet>, CapsError> {
    let Some(isolator) = isolators.iter().rev().find(|i| i.name.as_str() == name) else {
        return Ok(None);
    };
    let Some(Value::Array(items)) = isolator.value.get("set") else {
        return Err(CapsError::Shape { name });
    };
    let mut set = HashSet::new();
    for item in items {
        let Value::String(text) = item else {
            return Err(CapsError::Shape { name });
        };
        let capability =
            Capability::from_str(&text.to_ascii_uppercase()).map_err(|_| CapsError::Unknown {
                name,
                capability: text.clone(),
            })?;
        set.insert(capability);
    }
    Ok(Some(set))
}

/// Before the user changes (as root, CAP_SETPCAP still in hand): the bounding set, and the
/// inheritable and ambient sets emptied.
pub fn apply_before_user(bounding: &CapsHashSet) -> io::Result<()> {
    let context = |what: &'static str| {
        move |error: caps::errors::CapsError| {
            io::Error::other(format!("cannot set the {what} capability set: {error}"))
        }
    };
    // Only those the running kernel knows (cap_last_cap): the others cannot be dropped, nor
    // held.
    for capability in caps::runtime::thread_all_supported() {
        if !bounding.contains(&capability) {
            caps::drop(None, CapSet::Bounding, capability).map_err(context("bounding"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(context("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(context("inheritable"))?;
    Ok(())
}

/// After the user changed: a root process keeps only the bounding set in its permitted and
/// effective sets. (For other users setuid(2) has emptied both.)
pub fn apply_after_user(bounding: &CapsHashSet) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let keep: CapsHashSet = caps::read(None, CapSet::Permitted)
        .map_err(|error| io::Error::other(format!("cannot read the capabilities: {error}")))?
        .intersection(bounding)
        .copied()
        .collect();
    caps::set(None, CapSet::Effective, &keep)
        .and_then(|()| caps::set(None, CapSet::Permitted, &keep))
        .map_err(|error| io::Error::other(format!("cannot reduce the capabilities: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn isolator(name: &str, value: Value) -> Isolator {
        serde_json::from_value(json!({"name": name, "value": value})).unwrap()
    }

    #[test]
    fn default_retain_and_remove() {
        let default = bounding_set(&[]).unwrap();
        assert_eq!(default.len(), 14);
        assert!(default.contains(&Capability::CAP_NET_RAW));
        assert!(!default.contains(&Capability::CAP_SYS_ADMIN));

        let retain = bounding_set(&[isolator(
            RETAIN_SET,
            json!({"set": ["CAP_NET_BIND_SERVICE", "cap_sys_admin", "CAP_SYS_BOOT"]}),
        )])
        .unwrap();
        assert_eq!(
            retain,
            [Capability::CAP_NET_BIND_SERVICE, Capability::CAP_SYS_ADMIN]
                .into_iter()
                .collect()
        );

        let remove =
            bounding_set(&[isolator(REMOVE_SET, json!({"set": ["CAP_NET_RAW"]}))]).unwrap();
        assert_eq!(remove.len(), 13);
        assert!(!remove.contains(&Capability::CAP_NET_RAW));
        assert!(!all().contains(&Capability::CAP_SYS_BOOT));
        assert!(all().contains(&Capability::CAP_SYS_ADMIN));
    }

    #[test]
    fn bad_values_are_refused() {
        assert_eq!(
            bounding_set(&[
                isolator(RETAIN_SET, json!({"set": ["CAP_KILL"]})),
                isolator(REMOVE_SET, json!({"set": ["CAP_KILL"]})),
            ]),
            Err(CapsError::Both)
        );
        assert!(matches!(
            bounding_set(&[isolator(RETAIN_SET, json!({"set": ["CAP_NOPE"]}))]),
            Err(CapsError::Unknown { .. })
        ));
        assert!(matches!(
            bounding_set(&[isolator(RETAIN_SET, json!({"set": "CAP_KILL"}))]),
            Err(CapsError::Shape { .. })
        ));
    }

    /// In a forked child on this host: the bounding set and the root sets as the app gets them.
    #[test]
    fn applied_in_a_child() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let set = bounding_set(&[isolator(RETAIN_SET, json!({"set": ["CAP_KILL"]}))]).unwrap();
        crate::pod::testutil::in_child(move || {
            apply_before_user(&set).map_err(|e| e.to_string())?;
            apply_after_user(&set).map_err(|e| e.to_string())?;
            let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
            let kill = format!("{:016x}", 1u64 << 5);
            for field in ["CapBnd", "CapPrm", "CapEff"] {
                let line = format!("{field}:\t{kill}");
                if !status.contains(&line) {
                    return Err(format!("no `{line}` in\n{status}"));
                }
            }
            if !status.contains("CapInh:\t0000000000000000")
                || !status.contains("CapAmb:\t0000000000000000")
            {
                return Err(format!("inheritable or ambient left:\n{status}"));
            }
            Ok(())
        });
    }
}
