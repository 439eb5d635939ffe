//! Reading the pod: the reified pod manifest on the `pod` share, and for each app what it runs
//! (the pod manifest's app section, else its image's) and which volumes it mounts where.
//!
//! Everything the manifest controls is checked here or by the appc crate; a problem becomes an
//! error naming the app and the field, never a panic.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use appc::{App, ImageManifest, PodApp, PodManifest, Volume, VolumeKind};
use thiserror::Error;

/// The reified pod manifest, relative to the share root (`pod_control::layout`).
pub const POD_MANIFEST: &str = pod_control::layout::POD_MANIFEST;
/// Each app's image: `<this>/<app>/rootfs` and `<this>/<app>/manifest`.
pub const STAGE2_DIR: &str = pod_control::layout::APPS_DIR;
/// The directories of `empty` volumes.
pub const EMPTY_VOLUMES_DIR: &str = pod_control::layout::VOLUMES_DIR;
/// Manifests are small; anything bigger than this is not one.
const MANIFEST_LIMIT: u64 = 16 << 20;
/// Mode of an empty volume's directory when the volume gives none (appc's default).
const DEFAULT_EMPTY_MODE: u32 = 0o755;

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error(
        "cannot read the pod manifest {}: {source}; the host must share the pod view \
         (holding the reified `pod` file) with tag `pod`",
        path.display()
    )]
    PodUnreadable { path: PathBuf, source: io::Error },

    #[error("the pod manifest {} is invalid: {source}; fix it or prepare the pod again", path.display())]
    PodInvalid {
        path: PathBuf,
        source: appc::ManifestError,
    },

    #[error(
        "app {app}: no app section in the pod manifest and the image manifest {} is \
         unusable ({reason}); prepare the pod again",
        path.display()
    )]
    ImageManifest {
        app: String,
        path: PathBuf,
        reason: String,
    },

    #[error("app {app}: its image says nothing to run; give the app an exec (rkt run --exec)")]
    NothingToRun { app: String },

    #[error(
        "app {app}: the mount at {target} uses volume {volume}, which the pod does not define; \
         add the volume (--volume) or drop the mount"
    )]
    UnknownVolume {
        app: String,
        volume: String,
        target: String,
    },

    #[error(
        "app {app}: the mount at {target} defines its own host volume, which cannot be shared \
         into the VM; define the volume for the pod (--volume) instead"
    )]
    AppHostVolume { app: String, target: String },

    #[error("app {app}: volume {volume} has mode {mode:?}, which is not octal; use e.g. \"0755\"")]
    BadMode {
        app: String,
        volume: String,
        mode: String,
    },
}

/// One app, ready to be set up: what to run and where its volumes go.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// Position in the manifest: decides the vsock ports and the `vol<i>` numbering is the
    /// volumes' own.
    pub index: usize,
    pub name: String,
    /// The effective app section: the pod manifest's (stage0's overrides already applied),
    /// else the image's.
    pub app: App,
    pub read_only_root_fs: bool,
    pub volumes: Vec<VolumeMount>,
}

/// One volume mounted into an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// Absolute path inside the app's root.
    pub target: String,
    pub source: VolumeSource,
    /// Read-only for this app (the volume's `readOnly`, else the image mount point's).
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A `host` volume: the VMM shares it under this virtio-fs tag (`vol<index>`).
    HostShare { tag: String, read_only: bool },
    /// An `empty` volume: a directory in the pod share, shared by every app mounting it.
    Empty {
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Reads and validates `share/pod`.
pub fn read_pod_manifest(share: &Path) -> Result<PodManifest, ManifestError> {
    let path = share.join(POD_MANIFEST);
    let bytes = read_limited(&path).map_err(|source| ManifestError::PodUnreadable {
        path: path.clone(),
        source,
    })?;
    PodManifest::from_json(&bytes).map_err(|source| ManifestError::PodInvalid { path, source })
}

/// The guest path of app `name`'s root file system.
pub fn app_rootfs(share: &Path, name: &str) -> PathBuf {
    share.join(STAGE2_DIR).join(name).join("rootfs")
}

/// The guest path of an empty volume's directory.
pub fn empty_volume_dir(share: &Path, name: &str) -> PathBuf {
    share.join(EMPTY_VOLUMES_DIR).join(name)
}

/// Everything about app `index` of `pod` that does not need its root file system.
pub fn app_spec(
    share: &Path,
    pod: &PodManifest,
    index: usize,
    pod_app: &PodApp,
) -> Result<AppSpec, ManifestError> {
    let name = pod_app.name.as_str().to_owned();
    let app = match &pod_app.app {
        Some(app) => app.clone(),
        None => image_app(share, &name)?,
    };
    if app.exec.is_empty() {
        return Err(ManifestError::NothingToRun { app: name });
    }
    let volumes = pod_app
        .mounts
        .iter()
        .map(|mount| {
            let (volume, volume_index) = match &mount.app_volume {
                Some(volume) => (volume, None),
                None => pod
                    .volumes
                    .iter()
                    .enumerate()
                    .find(|(_, volume)| volume.name == mount.volume)
                    .map(|(i, volume)| (volume, Some(i)))
                    .ok_or_else(|| ManifestError::UnknownVolume {
                        app: name.clone(),
                        volume: mount.volume.as_str().to_owned(),
                        target: mount.path.clone(),
                    })?,
            };
            volume_mount(&name, &app, volume, volume_index, &mount.path)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppSpec {
        index,
        name,
        app,
        read_only_root_fs: pod_app.read_only_root_fs,
        volumes,
    })
}

fn image_app(share: &Path, name: &str) -> Result<App, ManifestError> {
    let path = share.join(STAGE2_DIR).join(name).join("manifest");
    let unusable = |reason: String| ManifestError::ImageManifest {
        app: name.to_owned(),
        path: path.clone(),
        reason,
    };
    let bytes = read_limited(&path).map_err(|e| unusable(e.to_string()))?;
    let image = ImageManifest::from_json(&bytes).map_err(|e| unusable(e.to_string()))?;
    image
        .app
        .ok_or_else(|| unusable("it has no app section either".to_owned()))
}

/// rkt's rule for read-only: the volume's `readOnly` when it says, else the image mount point
/// of the same name's.
fn volume_mount(
    app_name: &str,
    app: &App,
    volume: &Volume,
    volume_index: Option<usize>,
    target: &str,
) -> Result<VolumeMount, ManifestError> {
    let read_only = volume.read_only.unwrap_or_else(|| {
        app.mount_points
            .iter()
            .find(|point| point.name == volume.name)
            .is_some_and(|point| point.read_only)
    });
    let source = match (volume.kind, volume_index) {
        (VolumeKind::Host, Some(index)) => VolumeSource::HostShare {
            tag: format!("vol{index}"),
            read_only: volume.read_only.unwrap_or(false),
        },
        (VolumeKind::Host, None) => {
            return Err(ManifestError::AppHostVolume {
                app: app_name.to_owned(),
                target: target.to_owned(),
            })
        }
        (VolumeKind::Empty, _) => VolumeSource::Empty {
            name: volume.name.as_str().to_owned(),
            mode: match &volume.mode {
                None => DEFAULT_EMPTY_MODE,
                Some(mode) => u32::from_str_radix(mode, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o7777)
                    .ok_or_else(|| ManifestError::BadMode {
                        app: app_name.to_owned(),
                        volume: volume.name.as_str().to_owned(),
                        mode: mode.clone(),
                    })?,
            },
            uid: volume.uid.unwrap_or(0),
            gid: volume.gid.unwrap_or(0),
        },
    };
    Ok(VolumeMount {
        target: target.to_owned(),
        source,
        read_only,
    })
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let metadata = fs::metadata(path)?;
    if metadata.len() > MANIFEST_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MANIFEST_LIMIT} bytes"),
        ));
    }
    fs::read(path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub fn image_id() -> String {
        format!("sha512-{}", "0".repeat(128))
    }

    pub fn pod_json(apps: Value, volumes: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "acVersion": "0.8.11",
            "acKind": "PodManifest",
            "apps": apps,
            "volumes": volumes,
        }))
        .unwrap()
    }

    fn write_pod(share: &Path, apps: Value, volumes: Value) {
        fs::write(share.join(POD_MANIFEST), pod_json(apps, volumes)).unwrap();
    }

    #[test]
    fn apps_with_volumes_of_both_kinds() {
        let share = tempfile::tempdir().unwrap();
        write_pod(
            share.path(),
            json!([{
                "name": "web",
                "image": {"id": image_id()},
                "app": {
                    "exec": ["/bin/sh", "-c", "true"], "user": "0", "group": "0",
                    "mountPoints": [{"name": "logs", "path": "/logs", "readOnly": true}]
                },
                "readOnlyRootFS": true,
                "mounts": [
                    {"volume": "data", "path": "/data"},
                    {"volume": "cache", "path": "/cache"},
                    {"volume": "logs", "path": "/logs"},
                    {"volume": "inline", "path": "/inline",
                     "appVolume": {"name": "inline", "kind": "empty"}}
                ]
            }]),
            json!([
                {"name": "cache", "kind": "empty", "mode": "0700", "uid": 7, "gid": 8},
                {"name": "data", "kind": "host", "source": "/srv", "readOnly": true},
                {"name": "logs", "kind": "host", "source": "/var/log"}
            ]),
        );
        let pod = read_pod_manifest(share.path()).unwrap();
        let spec = app_spec(share.path(), &pod, 0, &pod.apps[0]).unwrap();
        assert_eq!(spec.name, "web");
        assert!(spec.read_only_root_fs);
        assert_eq!(
            spec.volumes,
            vec![
                VolumeMount {
                    target: "/data".into(),
                    source: VolumeSource::HostShare {
                        tag: "vol1".into(),
                        read_only: true
                    },
                    read_only: true,
                },
                VolumeMount {
                    target: "/cache".into(),
                    source: VolumeSource::Empty {
                        name: "cache".into(),
                        mode: 0o700,
                        uid: 7,
                        gid: 8
                    },
                    read_only: false,
                },
                // The volume says nothing: the image's mount point makes it read-only.
                VolumeMount {
                    target: "/logs".into(),
                    source: VolumeSource::HostShare {
                        tag: "vol2".into(),
                        read_only: false
                    },
                    read_only: true,
                },
                VolumeMount {
                    target: "/inline".into(),
                    source: VolumeSource::Empty {
                        name: "inline".into(),
                        mode: 0o755,
                        uid: 0,
                        gid: 0
                    },
                    read_only: false,
                },
            ]
        );
    }

    #[test]
    fn image_manifest_is_used_without_an_app_section() {
        let share = tempfile::tempdir().unwrap();
        write_pod(
            share.path(),
            json!([{"name": "db", "image": {"id": image_id()}}]),
            json!([]),
        );
        let pod = read_pod_manifest(share.path()).unwrap();
        // No image manifest yet: a clear error naming the app.
        let message = app_spec(share.path(), &pod, 0, &pod.apps[0])
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("app db:"), "{message}");

        let dir = share.path().join(STAGE2_DIR).join("db");
        fs::create_dir_all(&dir).unwrap();
        let image = json!({
            "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/db",
            "app": {"exec": ["/db"], "user": "daemon", "group": "daemon",
                    "eventHandlers": [{"name": "pre-start", "exec": ["/prep"]}]}
        });
        fs::write(dir.join("manifest"), serde_json::to_vec(&image).unwrap()).unwrap();
        let spec = app_spec(share.path(), &pod, 0, &pod.apps[0]).unwrap();
        assert_eq!(spec.app.exec, ["/db"]);
        assert_eq!(spec.app.user, "daemon");
        assert_eq!(spec.app.event_handlers.len(), 1);
    }

    #[test]
    fn bad_manifests_are_errors_not_panics() {
        let share = tempfile::tempdir().unwrap();
        let message = read_pod_manifest(share.path()).unwrap_err().to_string();
        assert!(message.contains("tag `pod`"), "{message}");
        fs::write(share.path().join(POD_MANIFEST), b"{not json").unwrap();
        assert!(matches!(
            read_pod_manifest(share.path()),
            Err(ManifestError::PodInvalid { .. })
        ));
        write_pod(
            share.path(),
            json!([{"name": "a", "image": {"id": image_id()},
                    "app": {"exec": [], "user": "0", "group": "0"}}]),
            json!([]),
        );
        let pod = read_pod_manifest(share.path()).unwrap();
        assert!(matches!(
            app_spec(share.path(), &pod, 0, &pod.apps[0]),
            Err(ManifestError::NothingToRun { .. })
        ));
    }

    #[test]
    fn app_level_host_volumes_are_refused() {
        let share = tempfile::tempdir().unwrap();
        write_pod(
            share.path(),
            json!([{"name": "a", "image": {"id": image_id()},
                    "app": {"exec": ["/x"], "user": "0", "group": "0"},
                    "mounts": [{"volume": "v", "path": "/v",
                                "appVolume": {"name": "v", "kind": "host", "source": "/srv"}}]}]),
            json!([]),
        );
        let pod = read_pod_manifest(share.path()).unwrap();
        assert!(matches!(
            app_spec(share.path(), &pod, 0, &pod.apps[0]),
            Err(ManifestError::AppHostVolume { .. })
        ));
    }
}
