//! An app's `os/linux/*` isolators turned into what its processes get before exec
//! ([`Hardening`]), with the user's `--insecure-options` (`rkt.disable=`) taken into account,
//! and the isolators guest-init does not apply named, so none is ignored silently (the ACE spec
//! asks that the user be told).
//!
//! Each kind has its module: caps.rs, seccomp.rs, paths.rs (applied in the app's mount
//! namespace), cgroup.rs (`resource/*`, `os/linux/cpu-shares`); no_new_privs and
//! oom_score_adj are a line each and live here.

use appc::Isolator;
use caps::CapsHashSet;
use seccompiler::BpfProgram;
use serde_json::Value;
use thiserror::Error;

use super::caps::{self as capabilities, CapsError};
use super::params::Disabled;
use super::seccomp::{self, SeccompError};

pub const NO_NEW_PRIVILEGES: &str = "os/linux/no-new-privileges";
pub const OOM_SCORE_ADJ: &str = "os/linux/oom-score-adj";

/// Every isolator name guest-init applies: the contract's list, which the stage1 also uses to
/// name the others on `rkt run`'s stderr (a unit test keeps it in step with the names below).
const APPLIED: [&str; 9] = pod_control::isolators::APPLIED;

#[derive(Debug, Error)]
pub enum IsolatorError {
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("isolator {name}: {value} is not {expected}")]
    Value {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// What every process of an app gets before exec.
#[derive(Debug, Clone)]
pub struct Hardening {
    /// The capability bounding set.
    pub bounding: CapsHashSet,
    pub no_new_privs: bool,
    /// `None`: no filter (opted out, or `rkt.disable=seccomp`).
    pub seccomp: Option<BpfProgram>,
    /// Written to /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
}

impl Hardening {
    pub fn from_isolators(
        isolators: &[Isolator],
        disabled: Disabled,
    ) -> Result<Hardening, IsolatorError> {
        let bounding = if disabled.capabilities {
            capabilities::all()
        } else {
            capabilities::bounding_set(isolators)?
        };
        let seccomp = match disabled.seccomp {
            true => None,
            false => seccomp::spec_from_isolators(isolators)?
                .map(|spec| seccomp::build(&spec))
                .transpose()?,
        };
        let no_new_privs = match last(isolators, NO_NEW_PRIVILEGES) {
            None => false,
            Some(Value::Bool(on)) => *on,
            Some(other) => return Err(bad(NO_NEW_PRIVILEGES, other, "true or false")),
        };
        let oom_score_adj = match last(isolators, OOM_SCORE_ADJ) {
            None => None,
            Some(value) => Some(
                value
                    .as_i64()
                    .filter(|n| (-1000..=1000).contains(n))
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| bad(OOM_SCORE_ADJ, value, "an integer from -1000 to 1000"))?,
            ),
        };
        Ok(Hardening {
            bounding,
            no_new_privs,
            seccomp,
            oom_score_adj,
        })
    }
}

fn last<'a>(isolators: &'a [Isolator], name: &str) -> Option<&'a Value> {
    isolators
        .iter()
        .rev()
        .find(|i| i.name.as_str() == name)
        .map(|i| &i.value)
}

fn bad(name: &'static str, value: &Value, expected: &'static str) -> IsolatorError {
    IsolatorError::Value {
        name,
        value: value.to_string(),
        expected,
    }
}

/// The names of the app's isolators that guest-init does not apply, each once, in order.
pub fn not_applied(isolators: &[Isolator]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for isolator in isolators {
        let name = isolator.name.as_str();
        if !APPLIED.contains(&name) && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_contracts_list_is_what_guest_init_parses() {
        use super::super::cgroup;
        let mut ours = [
            cgroup::MEMORY_ISOLATOR,
            cgroup::CPU_ISOLATOR,
            cgroup::CPU_SHARES_ISOLATOR,
            capabilities::RETAIN_SET,
            capabilities::REMOVE_SET,
            seccomp::RETAIN_SET,
            seccomp::REMOVE_SET,
            NO_NEW_PRIVILEGES,
            OOM_SCORE_ADJ,
        ];
        let mut contract = APPLIED;
        ours.sort_unstable();
        contract.sort_unstable();
        assert_eq!(ours, contract);
    }

    fn isolator(name: &str, value: Value) -> Isolator {
        serde_json::from_value(json!({"name": name, "value": value})).unwrap()
    }

    #[test]
    fn defaults_and_values() {
        let hardening = Hardening::from_isolators(&[], Disabled::default()).unwrap();
        assert_eq!(hardening.bounding.len(), 14);
        assert!(hardening.seccomp.is_some());
        assert!(!hardening.no_new_privs);
        assert_eq!(hardening.oom_score_adj, None);

        let hardening = Hardening::from_isolators(
            &[
                isolator(NO_NEW_PRIVILEGES, json!(true)),
                isolator(OOM_SCORE_ADJ, json!(-300)),
            ],
            Disabled::default(),
        )
        .unwrap();
        assert!(hardening.no_new_privs);
        assert_eq!(hardening.oom_score_adj, Some(-300));

        for (name, value) in [
            (NO_NEW_PRIVILEGES, json!("yes")),
            (OOM_SCORE_ADJ, json!(1001)),
            (OOM_SCORE_ADJ, json!("5")),
        ] {
            assert!(
                Hardening::from_isolators(&[isolator(name, value)], Disabled::default()).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn disabled_parts_are_left_out() {
        let disabled = Disabled {
            capabilities: true,
            paths: true,
            seccomp: true,
        };
        // Even a bad seccomp isolator does not matter once seccomp is off.
        let hardening = Hardening::from_isolators(
            &[isolator(seccomp::REMOVE_SET, json!({"set": ["nope"]}))],
            disabled,
        )
        .unwrap();
        assert!(hardening.seccomp.is_none());
        assert!(hardening
            .bounding
            .contains(&caps::Capability::CAP_SYS_ADMIN));
        assert!(!hardening.bounding.contains(&caps::Capability::CAP_SYS_BOOT));
    }

    #[test]
    fn isolators_not_applied_are_named_once() {
        let names = not_applied(&[
            isolator("resource/memory", json!({"limit": "1G"})),
            isolator("os/linux/selinux-context", json!({"user": "u"})),
            isolator("os/linux/apparmor-profile", json!({"name": "p"})),
            isolator("os/linux/selinux-context", json!({"user": "v"})),
            isolator("example.com/x", json!(1)),
            isolator(OOM_SCORE_ADJ, json!(1)),
        ]);
        assert_eq!(
            names,
            [
                "os/linux/selinux-context",
                "os/linux/apparmor-profile",
                "example.com/x"
            ]
        );
    }
}
