//! The pod manifest (appc `pods.md`): what stage0 hands to stage1. It must be
//! reified before a run: every image pinned by ID.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{parse_json, ManifestError};
use crate::image::{check_absolute, check_unique, is_empty_labels, Annotation, App, Port};
use crate::isolator::Isolator;
use crate::types::{AcIdentifier, AcName, AcVersion, ImageId, Labels};

pub const POD_MANIFEST_KIND: &str = "PodManifest";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodManifest {
    pub ac_version: AcVersion,
    pub ac_kind: String,
    #[serde(default)]
    pub apps: Vec<PodApp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolators: Vec<Isolator>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PodPort>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodApp {
    pub name: AcName,
    pub image: ImageRef,
    /// Overrides the image's own `app` section when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    #[serde(default, rename = "readOnlyRootFS")]
    pub read_only_root_fs: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<AcIdentifier>,
    pub id: ImageId,
    #[serde(default, skip_serializing_if = "is_empty_labels")]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub volume: AcName,
    pub path: String,
    /// A volume defined inline for this app only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_volume: Option<Volume>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    Empty,
    Host,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: AcName,
    pub kind: VolumeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
    /// Octal permission string for `empty` volumes, e.g. `"0755"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPort {
    pub name: AcName,
    pub host_port: u16,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_port: Option<Port>,
}

impl PodManifest {
    pub fn from_json(bytes: &[u8]) -> Result<PodManifest, ManifestError> {
        let manifest: PodManifest = parse_json(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.ac_kind != POD_MANIFEST_KIND {
            return Err(ManifestError::invalid(
                "acKind",
                format!(
                    "is {:?}; a pod manifest must say \"{POD_MANIFEST_KIND}\"",
                    self.ac_kind
                ),
            ));
        }
        check_unique(self.apps.iter().map(|a| a.name.as_str()), "apps", "name")?;
        check_unique(
            self.volumes.iter().map(|v| v.name.as_str()),
            "volumes",
            "name",
        )?;
        for (index, volume) in self.volumes.iter().enumerate() {
            volume.validate(&format!("volumes[{index}]"))?;
        }
        for (index, app) in self.apps.iter().enumerate() {
            let at = format!("apps[{index}]");
            app.image.labels.validate(&format!("{at}.image.labels"))?;
            if let Some(overrides) = &app.app {
                overrides.validate(&format!("{at}.app"))?;
            }
            for (m, mount) in app.mounts.iter().enumerate() {
                let mount_at = format!("{at}.mounts[{m}]");
                check_absolute(&mount.path, &format!("{mount_at}.path"))?;
                match &mount.app_volume {
                    Some(volume) => volume.validate(&format!("{mount_at}.appVolume"))?,
                    None if !self.volumes.iter().any(|v| v.name == mount.volume) => {
                        return Err(ManifestError::invalid(
                            format!("{mount_at}.volume"),
                            format!(
                                "no volume named {:?}; add it to \"volumes\"",
                                mount.volume.as_str()
                            ),
                        ))
                    }
                    None => {}
                }
            }
        }
        for (index, isolator) in self.isolators.iter().enumerate() {
            isolator.validate(&format!("isolators[{index}]"))?;
        }
        check_unique(self.ports.iter().map(|p| p.name.as_str()), "ports", "name")?;
        Ok(())
    }
}

impl Volume {
    fn validate(&self, field: &str) -> Result<(), ManifestError> {
        match (self.kind, &self.source) {
            (VolumeKind::Host, Some(source)) => check_absolute(source, &format!("{field}.source"))?,
            (VolumeKind::Host, None) => {
                return Err(ManifestError::invalid(
                    format!("{field}.source"),
                    "a host volume needs a source path",
                ))
            }
            (VolumeKind::Empty, Some(_)) => {
                return Err(ManifestError::invalid(
                    format!("{field}.source"),
                    "an empty volume has no source; drop it or use kind \"host\"",
                ))
            }
            (VolumeKind::Empty, None) => {}
        }
        if let Some(mode) = &self.mode {
            if mode.is_empty() || u32::from_str_radix(mode, 8).map_or(true, |m| m > 0o7777) {
                return Err(ManifestError::invalid(
                    format!("{field}.mode"),
                    format!("{mode:?} is not an octal mode like \"0755\""),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(volumes: serde_json::Value, mounts: serde_json::Value) -> Vec<u8> {
        let id = format!("sha512-{}", "0".repeat(128));
        serde_json::to_vec(&serde_json::json!({
            "acVersion": "0.8.11",
            "acKind": "PodManifest",
            "apps": [{
                "name": "web",
                "image": {"name": "example.com/web", "id": id},
                "readOnlyRootFS": true,
                "mounts": mounts
            }],
            "volumes": volumes,
            "ports": [{"name": "80-tcp", "hostPort": 8080}]
        }))
        .unwrap()
    }

    #[test]
    fn parses_a_pod() {
        let bytes = pod(
            serde_json::json!([{"name": "data", "kind": "host", "source": "/srv", "readOnly": true}]),
            serde_json::json!([{"volume": "data", "path": "/data"}]),
        );
        let pod = PodManifest::from_json(&bytes).unwrap();
        assert!(pod.apps[0].read_only_root_fs);
        assert_eq!(pod.volumes[0].kind, VolumeKind::Host);
        let json = serde_json::to_string(&pod).unwrap();
        assert!(json.contains("\"readOnlyRootFS\":true"));
        assert!(json.contains("\"hostPort\":8080"));
    }

    #[test]
    fn mount_of_unknown_volume_is_named() {
        let bytes = pod(
            serde_json::json!([]),
            serde_json::json!([{"volume": "data", "path": "/data"}]),
        );
        let err = PodManifest::from_json(&bytes).unwrap_err();
        assert_eq!(err.field(), "apps[0].mounts[0].volume");
    }

    #[test]
    fn host_volume_needs_absolute_source_and_mode_is_octal() {
        let no_source = pod(
            serde_json::json!([{"name": "d", "kind": "host"}]),
            serde_json::json!([]),
        );
        assert_eq!(
            PodManifest::from_json(&no_source).unwrap_err().field(),
            "volumes[0].source"
        );
        let bad_mode = pod(
            serde_json::json!([{"name": "d", "kind": "empty", "mode": "0999"}]),
            serde_json::json!([]),
        );
        assert_eq!(
            PodManifest::from_json(&bad_mode).unwrap_err().field(),
            "volumes[0].mode"
        );
        let bad_kind = pod(
            serde_json::json!([{"name": "d", "kind": "tmpfs"}]),
            serde_json::json!([]),
        );
        assert_eq!(
            PodManifest::from_json(&bad_kind).unwrap_err().field(),
            "volumes[0].kind"
        );
    }

    #[test]
    fn image_id_must_be_full() {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "acVersion": "0.8.11", "acKind": "PodManifest",
            "apps": [{"name": "a", "image": {"id": "sha512-abc"}}]
        }))
        .unwrap();
        assert_eq!(
            PodManifest::from_json(&bytes).unwrap_err().field(),
            "apps[0].image.id"
        );
    }
}
