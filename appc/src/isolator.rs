//! Isolators: `{name, value}` pairs whose value shape depends on the name.
//! Known names are checked; unknown ones are kept as they are (the spec lets an
//! executor ignore them, as long as it tells the user).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ManifestError;
use crate::types::AcIdentifier;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isolator {
    pub name: AcIdentifier,
    pub value: Value,
}

impl Isolator {
    /// Whether this crate knows (and checks) the isolator's value shape.
    pub fn is_known(&self) -> bool {
        KNOWN.contains(&self.name.as_str())
    }

    /// Checks the value against the shape its name requires. `field` is the
    /// JSON path of this isolator.
    pub fn validate(&self, field: &str) -> Result<(), ManifestError> {
        let at = format!("{field}.value");
        let fail = |problem: String| Err(ManifestError::invalid(at.clone(), problem));
        let name = self.name.as_str();
        match name {
            "resource/cpu" | "resource/memory" => {
                let Some(object) = self.value.as_object() else {
                    return fail(format!(
                        "{name} needs an object with \"request\" and/or \"limit\""
                    ));
                };
                if !object.contains_key("request") && !object.contains_key("limit") {
                    return fail(format!("{name} needs \"request\" and/or \"limit\""));
                }
                for key in ["request", "limit"] {
                    if let Some(quantity) = object.get(key) {
                        if let Err(problem) = check_quantity(quantity) {
                            return Err(ManifestError::invalid(format!("{at}.{key}"), problem));
                        }
                    }
                }
                Ok(())
            }
            "resource/block-bandwidth" | "resource/block-iops" | "resource/network-bandwidth" => {
                match self.value.get("limit") {
                    Some(limit) => check_quantity(limit)
                        .map_err(|problem| ManifestError::invalid(format!("{at}.limit"), problem)),
                    None => fail(format!("{name} needs a \"limit\"")),
                }
            }
            "os/linux/capabilities-retain-set" | "os/linux/capabilities-remove-set" => {
                let set = string_set(&self.value, &at)?;
                if let Some(bad) = set.iter().find(|cap| !cap.starts_with("CAP_")) {
                    return fail(format!(
                        "{bad:?} is not a capability name like \"CAP_NET_ADMIN\""
                    ));
                }
                Ok(())
            }
            "os/linux/seccomp-retain-set" | "os/linux/seccomp-remove-set" => {
                string_set(&self.value, &at)?;
                match self.value.get("errno") {
                    None | Some(Value::String(_)) => Ok(()),
                    Some(_) => fail("\"errno\" must be a string like \"EPERM\"".to_string()),
                }
            }
            "os/linux/no-new-privileges" => match self.value {
                Value::Bool(_) => Ok(()),
                _ => fail("must be true or false".to_string()),
            },
            "os/linux/oom-score-adj" => match self.value.as_i64() {
                Some(n) if (-1000..=1000).contains(&n) => Ok(()),
                _ => fail("must be an integer from -1000 to 1000".to_string()),
            },
            "os/linux/cpu-shares" => match self.value.as_i64() {
                Some(n) if (2..=262_144).contains(&n) => Ok(()),
                _ => fail("must be an integer from 2 to 262144".to_string()),
            },
            "os/linux/selinux-context" => {
                for key in ["user", "role", "type", "level"] {
                    if !self.value.get(key).is_some_and(Value::is_string) {
                        return fail(format!("needs string field {key:?}"));
                    }
                }
                Ok(())
            }
            "os/linux/apparmor-profile" => match self.value.get("name") {
                Some(Value::String(_)) => Ok(()),
                _ => fail("needs a string field \"name\"".to_string()),
            },
            "os/unix/sysctl" => match self.value.as_object() {
                Some(object) if object.values().all(Value::is_string) => Ok(()),
                _ => fail("must be an object of string values".to_string()),
            },
            _ => Ok(()),
        }
    }
}

const KNOWN: &[&str] = &[
    "resource/cpu",
    "resource/memory",
    "resource/block-bandwidth",
    "resource/block-iops",
    "resource/network-bandwidth",
    "os/linux/capabilities-retain-set",
    "os/linux/capabilities-remove-set",
    "os/linux/seccomp-retain-set",
    "os/linux/seccomp-remove-set",
    "os/linux/no-new-privileges",
    "os/linux/oom-score-adj",
    "os/linux/cpu-shares",
    "os/linux/selinux-context",
    "os/linux/apparmor-profile",
    "os/unix/sysctl",
];

/// Reads `{"set": ["..", ...]}`, refusing an empty or non-string set.
fn string_set(value: &Value, at: &str) -> Result<Vec<String>, ManifestError> {
    let Some(items) = value.get("set").and_then(Value::as_array) else {
        return Err(ManifestError::invalid(at, "needs a \"set\" array"));
    };
    if items.is_empty() {
        return Err(ManifestError::invalid(
            format!("{at}.set"),
            "must not be empty",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            item.as_str().map(str::to_string).ok_or_else(|| {
                ManifestError::invalid(format!("{at}.set[{index}]"), "must be a string")
            })
        })
        .collect()
}

/// Checks a Kubernetes-style resource quantity: a decimal number with an
/// optional suffix (`500m`, `128M`, `1Gi`, `2`). Numbers are accepted too.
fn check_quantity(value: &Value) -> Result<(), String> {
    let text = match value {
        Value::String(text) => text.as_str(),
        Value::Number(_) => return Ok(()),
        _ => return Err("must be a quantity string like \"500m\" or \"128M\"".to_string()),
    };
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "K", "M", "G", "T", "P", "E", "",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| text.strip_suffix(suffix))
        .unwrap_or(text);
    let digits_ok = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    if digits_ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a quantity like \"500m\", \"128M\" or \"1Gi\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn isolator(name: &str, value: Value) -> Isolator {
        Isolator {
            name: AcIdentifier::try_from(name).unwrap(),
            value,
        }
    }

    #[test]
    fn known_isolators_accept_good_values() {
        let good = [
            isolator("resource/memory", json!({"limit": "128M"})),
            isolator("resource/cpu", json!({"request": "500m", "limit": "1"})),
            isolator(
                "os/linux/capabilities-retain-set",
                json!({"set": ["CAP_NET_ADMIN"]}),
            ),
            isolator(
                "os/linux/seccomp-remove-set",
                json!({"set": ["reboot"], "errno": "EPERM"}),
            ),
            isolator("os/linux/no-new-privileges", json!(true)),
            isolator("os/linux/oom-score-adj", json!(-500)),
            isolator("os/linux/cpu-shares", json!(1024)),
            isolator("os/unix/sysctl", json!({"net.ipv4.ip_forward": "1"})),
            isolator("example.com/unknown", json!({"anything": 1})),
        ];
        for iso in good {
            assert!(iso.validate("isolators[0]").is_ok(), "{}", iso.name);
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = isolator("resource/memory", json!({"limit": "lots"}))
            .validate("app.isolators[3]")
            .unwrap_err();
        assert_eq!(err.field(), "app.isolators[3].value.limit");
        assert!(err.to_string().contains("lots"));

        let err = isolator(
            "os/linux/capabilities-retain-set",
            json!({"set": ["NET_ADMIN"]}),
        )
        .validate("isolators[0]")
        .unwrap_err();
        assert!(err.to_string().contains("CAP_"), "{err}");

        let err = isolator("os/linux/seccomp-retain-set", json!({"set": [1]}))
            .validate("isolators[0]")
            .unwrap_err();
        assert_eq!(err.field(), "isolators[0].value.set[0]");

        assert!(isolator("os/linux/oom-score-adj", json!(5000))
            .validate("i")
            .is_err());
        assert!(isolator("os/linux/no-new-privileges", json!("yes"))
            .validate("i")
            .is_err());
        assert!(isolator("resource/cpu", json!({})).validate("i").is_err());
    }
}
