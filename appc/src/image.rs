//! The image manifest (`/manifest` inside an ACI; appc `aci.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{parse_json, ManifestError};
use crate::isolator::Isolator;
use crate::types::{AcIdentifier, AcName, AcVersion, ImageId, Labels, NameValue};

pub const IMAGE_MANIFEST_KIND: &str = "ImageManifest";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub ac_kind: String,
    pub ac_version: AcVersion,
    pub name: AcIdentifier,
    #[serde(default, skip_serializing_if = "is_empty_labels")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_whitelist: Vec<String>,
}

pub(crate) fn is_empty_labels(labels: &Labels) -> bool {
    labels.0.is_empty()
}

/// What to run and how, for an image or (as an override) a pod app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    pub user: String,
    pub group: String,
    #[serde(
        default,
        rename = "supplementaryGIDs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub supplementary_gids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_handlers: Vec<EventHandler>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<NameValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolators: Vec<Isolator>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventHandler {
    /// `pre-start` or `post-stop`.
    pub name: String,
    pub exec: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub name: AcName,
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    pub name: AcName,
    pub protocol: String,
    pub port: u16,
    #[serde(default = "one")]
    pub count: u16,
    #[serde(default)]
    pub socket_activated: bool,
}

fn one() -> u16 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub name: AcIdentifier,
    pub value: String,
}

/// An image layered under this one when rendering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub image_name: AcIdentifier,
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<ImageId>,
    #[serde(default, skip_serializing_if = "is_empty_labels")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl ImageManifest {
    /// Parses and validates a manifest; the error names the field at fault.
    pub fn from_json(bytes: &[u8]) -> Result<ImageManifest, ManifestError> {
        let manifest: ImageManifest = parse_json(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Pretty JSON, as `rkt image cat-manifest --pretty-print` prints it.
    pub fn to_json_pretty(&self) -> String {
        // Serializing plain structs of strings, numbers and maps with string
        // keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the rules a parse alone cannot (see `validate_app` for `app`).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.ac_kind != IMAGE_MANIFEST_KIND {
            return Err(ManifestError::invalid(
                "acKind",
                format!(
                    "is {:?}; an image manifest must say \"{IMAGE_MANIFEST_KIND}\"",
                    self.ac_kind
                ),
            ));
        }
        self.labels.validate("labels")?;
        if let Some(app) = &self.app {
            app.validate("app")?;
        }
        check_unique(
            self.annotations.iter().map(|a| a.name.as_str()),
            "annotations",
            "name",
        )?;
        for (index, dependency) in self.dependencies.iter().enumerate() {
            dependency
                .labels
                .validate(&format!("dependencies[{index}].labels"))?;
        }
        for (index, path) in self.path_whitelist.iter().enumerate() {
            check_absolute(path, &format!("pathWhitelist[{index}]"))?;
        }
        Ok(())
    }

    /// The value of annotation `name`, if present.
    pub fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|a| a.name.as_str() == name)
            .map(|a| a.value.as_str())
    }
}

impl App {
    /// Checks the app section; `field` is its JSON path (`app`, or
    /// `apps[0].app` in a pod manifest).
    pub fn validate(&self, field: &str) -> Result<(), ManifestError> {
        if let Some(first) = self.exec.first() {
            if first.is_empty() {
                return Err(ManifestError::invalid(
                    format!("{field}.exec[0]"),
                    "the program to run must not be empty",
                ));
            }
        }
        if self.user.is_empty() {
            return Err(ManifestError::invalid(
                format!("{field}.user"),
                "is required; use \"0\" for root",
            ));
        }
        if self.group.is_empty() {
            return Err(ManifestError::invalid(
                format!("{field}.group"),
                "is required; use \"0\" for root",
            ));
        }
        for (index, handler) in self.event_handlers.iter().enumerate() {
            if handler.name != "pre-start" && handler.name != "post-stop" {
                return Err(ManifestError::invalid(
                    format!("{field}.eventHandlers[{index}].name"),
                    format!("{:?} is not \"pre-start\" or \"post-stop\"", handler.name),
                ));
            }
            if handler.exec.is_empty() {
                return Err(ManifestError::invalid(
                    format!("{field}.eventHandlers[{index}].exec"),
                    "must name a program to run",
                ));
            }
        }
        check_unique(
            self.event_handlers.iter().map(|h| h.name.as_str()),
            &format!("{field}.eventHandlers"),
            "name",
        )?;
        if let Some(dir) = &self.working_directory {
            check_absolute(dir, &format!("{field}.workingDirectory"))?;
        }
        for (index, var) in self.environment.iter().enumerate() {
            if var.name.is_empty() || var.name.contains('=') || var.name.contains('\0') {
                return Err(ManifestError::invalid(
                    format!("{field}.environment[{index}].name"),
                    format!("{:?} is not a variable name (non-empty, no '=')", var.name),
                ));
            }
        }
        check_unique(
            self.environment.iter().map(|v| v.name.as_str()),
            &format!("{field}.environment"),
            "name",
        )?;
        for (index, isolator) in self.isolators.iter().enumerate() {
            isolator.validate(&format!("{field}.isolators[{index}]"))?;
        }
        for (index, mount) in self.mount_points.iter().enumerate() {
            check_absolute(&mount.path, &format!("{field}.mountPoints[{index}].path"))?;
        }
        check_unique(
            self.mount_points.iter().map(|m| m.name.as_str()),
            &format!("{field}.mountPoints"),
            "name",
        )?;
        for (index, port) in self.ports.iter().enumerate() {
            let at = format!("{field}.ports[{index}]");
            if port.protocol != "tcp" && port.protocol != "udp" {
                return Err(ManifestError::invalid(
                    format!("{at}.protocol"),
                    format!("{:?} is not \"tcp\" or \"udp\"", port.protocol),
                ));
            }
            if port.port == 0 {
                return Err(ManifestError::invalid(
                    format!("{at}.port"),
                    "must be 1-65535",
                ));
            }
            if port.count == 0 || u32::from(port.port) + u32::from(port.count) - 1 > 65535 {
                return Err(ManifestError::invalid(
                    format!("{at}.count"),
                    "must be at least 1 and keep the range within 65535",
                ));
            }
        }
        check_unique(
            self.ports.iter().map(|p| p.name.as_str()),
            &format!("{field}.ports"),
            "name",
        )?;
        Ok(())
    }
}

pub(crate) fn check_absolute(path: &str, field: &str) -> Result<(), ManifestError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(ManifestError::invalid(
            field,
            format!("{path:?} must be an absolute path (starting with '/')"),
        ))
    }
}

/// Refuses a repeated key in a list; the error names the second occurrence.
pub(crate) fn check_unique<'a>(
    keys: impl Iterator<Item = &'a str>,
    list_field: &str,
    key_name: &str,
) -> Result<(), ManifestError> {
    let mut seen = std::collections::HashSet::new();
    for (index, key) in keys.enumerate() {
        if !seen.insert(key) {
            return Err(ManifestError::invalid(
                format!("{list_field}[{index}].{key_name}"),
                format!("{key:?} appears twice; names must be unique"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": "example.com/busybox",
        "labels": [
            {"name": "version", "value": "1.36"},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": "amd64"}
        ],
        "app": {
            "exec": ["/bin/sh", "-c", "echo hi"],
            "user": "0",
            "group": "0",
            "supplementaryGIDs": [10],
            "workingDirectory": "/tmp",
            "environment": [{"name": "FOO", "value": "bar"}],
            "isolators": [{"name": "resource/memory", "value": {"limit": "64M"}}],
            "mountPoints": [{"name": "data", "path": "/data", "readOnly": true}],
            "ports": [{"name": "80-tcp", "protocol": "tcp", "port": 80}]
        },
        "annotations": [{"name": "authors", "value": "us"}],
        "dependencies": [{"imageName": "example.com/base", "labels": [{"name": "version", "value": "1"}]}],
        "pathWhitelist": ["/bin/sh"]
    }"#;

    fn with(pointer: &str, value: serde_json::Value) -> Vec<u8> {
        let mut doc: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        *doc.pointer_mut(pointer).unwrap() = value;
        serde_json::to_vec(&doc).unwrap()
    }

    #[test]
    fn parses_a_full_manifest() {
        let m = ImageManifest::from_json(GOOD.as_bytes()).unwrap();
        assert_eq!(m.name.as_str(), "example.com/busybox");
        assert_eq!(m.labels.get("version"), Some("1.36"));
        let app = m.app.as_ref().unwrap();
        assert_eq!(app.supplementary_gids, vec![10]);
        assert_eq!(app.ports[0].count, 1);
        assert!(app.mount_points[0].read_only);
        assert_eq!(m.annotation("authors"), Some("us"));
        assert!(m.dependencies[0].image_id.is_none());
        // Round trip keeps the appc field spellings.
        let json = m.to_json_pretty();
        assert!(json.contains("\"supplementaryGIDs\""));
        assert!(json.contains("\"pathWhitelist\""));
        assert!(json.contains("\"imageName\""));
        assert_eq!(ImageManifest::from_json(json.as_bytes()).unwrap(), m);
    }

    #[test]
    fn parse_errors_name_the_field() {
        let cases: &[(&str, serde_json::Value, &str)] = &[
            ("/name", "Example.com/X".into(), "name"),
            ("/acVersion", "eight".into(), "acVersion"),
            ("/labels/1/name", "OS".into(), "labels[1].name"),
            ("/app/exec", 5.into(), "app.exec"),
            (
                "/app/mountPoints/0/name",
                "data_dir".into(),
                "app.mountPoints[0].name",
            ),
            (
                "/dependencies/0",
                serde_json::json!({"imageName": "a.b/c", "imageID": "sha512-xyz"}),
                "dependencies[0].imageID",
            ),
        ];
        for (pointer, value, field) in cases {
            let err = ImageManifest::from_json(&with(pointer, value.clone())).unwrap_err();
            assert_eq!(err.field(), *field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn missing_required_field_is_reported() {
        let mut doc: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        doc["app"].as_object_mut().unwrap().remove("user");
        let err = ImageManifest::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert_eq!(err.field(), "app");
        assert!(err.to_string().contains("user"), "{err}");
    }

    #[test]
    fn rule_errors_name_the_field() {
        let cases: &[(&str, serde_json::Value, &str)] = &[
            ("/acKind", "PodManifest".into(), "acKind"),
            ("/labels/0/name", "arch".into(), "labels[2].name"),
            (
                "/app/workingDirectory",
                "tmp".into(),
                "app.workingDirectory",
            ),
            (
                "/app/environment/0/name",
                "A=B".into(),
                "app.environment[0].name",
            ),
            (
                "/app/ports/0/protocol",
                "sctp".into(),
                "app.ports[0].protocol",
            ),
            ("/app/ports/0/port", 0.into(), "app.ports[0].port"),
            ("/app/user", "".into(), "app.user"),
            (
                "/app/mountPoints/0/path",
                "data".into(),
                "app.mountPoints[0].path",
            ),
            ("/pathWhitelist/0", "bin/sh".into(), "pathWhitelist[0]"),
            (
                "/app/isolators/0/value",
                serde_json::json!({"limit": "a lot"}),
                "app.isolators[0].value.limit",
            ),
        ];
        for (pointer, value, field) in cases {
            let err = ImageManifest::from_json(&with(pointer, value.clone())).unwrap_err();
            assert_eq!(err.field(), *field, "{pointer}: {err}");
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes.extend_from_slice(b" {}");
        assert!(ImageManifest::from_json(&bytes).is_err());
    }
}
