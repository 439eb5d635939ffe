//! Restricted string types shared by image and pod manifests. Each one checks
//! its rule in `TryFrom<String>`, which serde uses while deserializing, so a
//! manifest can never hold an invalid value.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ManifestError;

/// Defines a string newtype whose constructor runs `$check` (returning a
/// description of the problem on failure).
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                $check(&value)?;
                Ok($name(value))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = String;
            fn try_from(value: &str) -> Result<Self, String> {
                Self::try_from(value.to_string())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_string!(
    /// An AC Identifier: `^[a-z0-9]+([-._~/][a-z0-9]+)*$`, e.g.
    /// `example.com/~user/app_v1`. Used for image names, label names,
    /// isolator names and annotation names.
    AcIdentifier,
    check_ac_identifier
);

checked_string!(
    /// An AC Name: `^[a-z0-9]+(-[a-z0-9]+)*$`, e.g. `volume-var-tmp`. Used for
    /// app, volume, mount point and port names.
    AcName,
    check_ac_name
);

checked_string!(
    /// An image ID: `sha512-` followed by 128 lowercase hex digits (the SHA-512
    /// of the uncompressed ACI tar).
    ImageId,
    check_image_id
);

/// Checks the lowercase-alphanumeric shape both identifier kinds share:
/// `separators` are the other characters allowed, never first or last, and
/// (unless `allow_repeats`) never two in a row.
fn check_runs(
    value: &str,
    separators: &[char],
    allow_repeats: bool,
    what: &str,
) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    let mut previous_was_separator = true; // so a leading separator is refused
    for (index, c) in value.chars().enumerate() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            previous_was_separator = false;
        } else if separators.contains(&c) {
            if previous_was_separator && (index == 0 || !allow_repeats) {
                return Err(format!(
                    "{what} {value:?} must start with a letter or digit and not repeat separators"
                ));
            }
            previous_was_separator = true;
        } else {
            let allowed: String = separators.iter().collect();
            return Err(format!(
                "{what} {value:?} has character {c:?}; only lowercase letters, digits and {allowed:?} are allowed"
            ));
        }
    }
    if previous_was_separator {
        return Err(format!("{what} {value:?} must end with a letter or digit"));
    }
    Ok(())
}

/// The longest `/`-separated segment of an identifier: NAME_MAX, since image
/// names become directory names under `trustedkeys/prefix.d/`.
const MAX_SEGMENT: usize = 255;

fn check_ac_identifier(value: &str) -> Result<(), String> {
    // The spec's prose (and its example `example.com/~user/app_v1`) allows
    // separators next to each other, which its own regular expression does not;
    // follow the prose so such names keep working.
    check_runs(value, &['-', '.', '_', '~', '/'], true, "AC identifier")?;
    // But a name is also a path (the trust lookup joins it under
    // `prefix.d/`), and the regular expression forbids what would make it
    // climb: every `/`-separated segment holds a letter or digit, so none is
    // empty, `.` or `..`.
    for segment in value.split('/') {
        if !segment
            .chars()
            .any(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(format!(
                "AC identifier {value:?} has the segment {segment:?}; every \"/\"-separated \
                 segment needs a letter or digit (no empty, \".\" or \"..\" segments)"
            ));
        }
        if segment.len() > MAX_SEGMENT {
            return Err(format!(
                "AC identifier {value:?} has a segment of {} bytes; at most {MAX_SEGMENT} are allowed",
                segment.len()
            ));
        }
    }
    Ok(())
}

fn check_ac_name(value: &str) -> Result<(), String> {
    check_runs(value, &['-'], false, "AC name")
}

fn check_image_id(value: &str) -> Result<(), String> {
    let Some(hex) = value.strip_prefix("sha512-") else {
        return Err(format!("image ID {value:?} must start with \"sha512-\""));
    };
    if hex.len() != 128
        || !hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(format!(
            "image ID {value:?} must be \"sha512-\" followed by 128 lowercase hex digits"
        ));
    }
    Ok(())
}

impl ImageId {
    /// Builds the ID from a raw SHA-512 digest.
    pub fn from_sha512(digest: &[u8; 64]) -> ImageId {
        let mut s = String::with_capacity(7 + 128);
        s.push_str("sha512-");
        for byte in digest {
            s.push_str(&format!("{byte:02x}"));
        }
        ImageId(s)
    }

    /// The hex digest without the `sha512-` prefix.
    pub fn hex(&self) -> &str {
        &self.0["sha512-".len()..]
    }

    /// The short form rkt prints in listings: `sha512-` and 12 hex digits.
    pub fn short(&self) -> &str {
        &self.0[.."sha512-".len() + 12]
    }
}

/// The `acVersion` of a manifest: a semantic version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AcVersion(semver::Version);

impl AcVersion {
    pub fn version(&self) -> &semver::Version {
        &self.0
    }
}

impl TryFrom<String> for AcVersion {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        semver::Version::parse(&value)
            .map(AcVersion)
            .map_err(|err| format!("{value:?} is not a semantic version (like \"0.8.11\"): {err}"))
    }
}

impl From<AcVersion> for String {
    fn from(value: AcVersion) -> String {
        value.0.to_string()
    }
}

impl fmt::Display for AcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One `{name, value}` label. Well-known names: `version`, `os`, `arch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub name: AcIdentifier,
    pub value: String,
}

/// An ordered label list, as found in manifests and dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(pub Vec<Label>);

/// Operating systems and architectures appc knows, as `(os, [arch...])`.
const OS_ARCH: &[(&str, &[&str])] = &[
    (
        "linux",
        &[
            "amd64",
            "i386",
            "aarch64",
            "aarch64_be",
            "armv6l",
            "armv7l",
            "armv7b",
            "ppc64",
            "ppc64le",
            "s390x",
        ],
    ),
    ("freebsd", &["amd64", "i386", "arm"]),
    ("darwin", &["x86_64", "i386"]),
];

impl Labels {
    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|label| label.name.as_str() == name)
            .map(|label| label.value.as_str())
    }

    /// Checks the spec's rules: unique names, none called `name`, and a known
    /// os (with a known arch for it) when those labels are present. `field` is
    /// the JSON path of this list, used in the error.
    pub fn validate(&self, field: &str) -> Result<(), ManifestError> {
        for (index, label) in self.0.iter().enumerate() {
            let here = format!("{field}[{index}].name");
            if label.name.as_str() == "name" {
                return Err(ManifestError::invalid(
                    here,
                    "a label may not be called \"name\"; the image name is its own field",
                ));
            }
            if self.0[..index]
                .iter()
                .any(|earlier| earlier.name == label.name)
            {
                return Err(ManifestError::invalid(
                    here,
                    format!("label {:?} appears twice; keep one", label.name.as_str()),
                ));
            }
        }
        let os = self.get("os");
        let arch = self.get("arch");
        match (os, arch) {
            (None, Some(_)) => {
                return Err(ManifestError::invalid(
                    field,
                    "an \"arch\" label needs an \"os\" label too",
                ))
            }
            (Some(os), arch) => {
                let Some((_, arches)) = OS_ARCH.iter().find(|(known, _)| *known == os) else {
                    return Err(ManifestError::invalid(
                        field,
                        format!("os label {os:?} is not one of linux, freebsd, darwin"),
                    ));
                };
                if let Some(arch) = arch {
                    if !arches.contains(&arch) {
                        return Err(ManifestError::invalid(
                            field,
                            format!(
                                "arch label {arch:?} is not valid for os {os:?}; use one of {}",
                                arches.join(", ")
                            ),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// A `{name, value}` pair with a free-form name: environment variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ac_identifier_accepts_spec_examples() {
        for ok in [
            "database",
            "example.com/database",
            "example.com/~user/app_v1",
            "sub-domain.example.com/org/product/release",
            "registry-1.docker.io/library/busybox",
        ] {
            assert!(
                AcIdentifier::try_from(ok).is_ok(),
                "{ok} should be accepted"
            );
        }
    }

    #[test]
    fn ac_identifier_refuses_bad_shapes_and_says_why() {
        let err = AcIdentifier::try_from("Example.com").unwrap_err();
        assert!(err.contains("'E'"), "{err}");
        assert!(AcIdentifier::try_from("").unwrap_err().contains("empty"));
        assert!(AcIdentifier::try_from("-abc").is_err());
        assert!(AcIdentifier::try_from("abc/").unwrap_err().contains("end"));
        assert!(
            AcIdentifier::try_from("a.-b").is_ok(),
            "repeats follow the spec prose"
        );
        assert!(AcIdentifier::try_from("a:b").is_err());
    }

    #[test]
    fn ac_identifier_segments_never_climb_or_vanish() {
        for bad in [
            "example.com/../../../../../../keys",
            "example.com/../x",
            "a/./b",
            "a//b",
            "a/~/b",
            "a/.-_~/b",
        ] {
            let err = AcIdentifier::try_from(bad).unwrap_err();
            assert!(err.contains("segment"), "{bad}: {err}");
        }
        let long = format!("example.com/{}", "a".repeat(256));
        assert!(AcIdentifier::try_from(long).unwrap_err().contains("255"));
        let longest = format!("example.com/{}", "a".repeat(255));
        assert!(AcIdentifier::try_from(longest).is_ok());
        // Dots inside a segment are fine: they are not path components.
        assert!(AcIdentifier::try_from("example.com/a..b/c~~d").is_ok());
    }

    #[test]
    fn ac_name_allows_only_dashes() {
        assert!(AcName::try_from("volume-var-tmp").is_ok());
        assert!(AcName::try_from("80-tcp").is_ok());
        assert!(AcName::try_from("a.b").is_err());
        assert!(AcName::try_from("a_b").is_err());
        assert!(AcName::try_from("a--b").is_err());
    }

    #[test]
    fn image_id_shape() {
        let digest = [0xabu8; 64];
        let id = ImageId::from_sha512(&digest);
        assert_eq!(id.as_str().len(), 7 + 128);
        assert!(ImageId::try_from(id.as_str()).is_ok());
        assert_eq!(id.short(), "sha512-abababababab");
        assert_eq!(id.hex().len(), 128);
        assert!(ImageId::try_from("sha256-abc").is_err());
        assert!(ImageId::try_from("sha512-ABC").is_err());
        let upper = format!("sha512-{}", "A".repeat(128));
        assert!(ImageId::try_from(upper).is_err());
    }

    #[test]
    fn ac_version_is_semver() {
        assert!(AcVersion::try_from("0.8.11".to_string()).is_ok());
        assert!(AcVersion::try_from("1.0.0-alpha+build".to_string()).is_ok());
        let err = AcVersion::try_from("0.8".to_string()).unwrap_err();
        assert!(err.contains("semantic version"), "{err}");
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels(
            pairs
                .iter()
                .map(|(n, v)| Label {
                    name: AcIdentifier::try_from(*n).unwrap(),
                    value: v.to_string(),
                })
                .collect(),
        )
    }

    #[test]
    fn labels_rules() {
        assert!(
            labels(&[("version", "1"), ("os", "linux"), ("arch", "amd64")])
                .validate("labels")
                .is_ok()
        );
        let dup = labels(&[("version", "1"), ("version", "2")]).validate("labels");
        assert_eq!(dup.unwrap_err().field(), "labels[1].name");
        let named = labels(&[("name", "x")]).validate("labels");
        assert_eq!(named.unwrap_err().field(), "labels[0].name");
        let bad_arch = labels(&[("os", "linux"), ("arch", "x86_64")]).validate("labels");
        assert!(bad_arch.unwrap_err().to_string().contains("x86_64"));
        assert!(labels(&[("arch", "amd64")]).validate("labels").is_err());
        assert!(labels(&[("os", "plan9")]).validate("labels").is_err());
    }
}
