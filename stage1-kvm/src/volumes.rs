//! What the guest gets to see (docs/stage1-kvm.md, contract item 1): the pod share `pod` (the
//! view `guest_view` composes: manifests, the apps' root file systems, the empty volumes);
//! each `host` volume as share `vol<i>` (i: its index among all the pod's volumes), read-only
//! in the VMM when the volume says so. Each `empty` volume is a directory under
//! `stage1-kvm/volumes/` in the pod directory (`PodPaths::empty_volume`) that the pod share
//! carries as `volumes/<name>`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use appc::{PodManifest, Volume, VolumeKind};
use pod_control::layout::{volume_share_tag, POD_SHARE_TAG};
use vmm::ShareConfig;

use crate::error::Stage1Error;
use crate::pod::PodPaths;

/// The VM's virtio-fs shares: `pod` (the view at `view`, read-write in the VMM: the view's
/// own read-only tmpfs and bind-mount flags decide what is writable) first, then one per host
/// volume, in manifest order.
pub fn shares(view: &Path, manifest: &PodManifest) -> Result<Vec<ShareConfig>, Stage1Error> {
    // Nothing but the guest changes the pod share while the VM runs (the host writes its
    // files before the VM starts and reads the statuses after), so the guest may keep its
    // cache across opens; host volumes may be changed by the host or other pods meanwhile.
    let mut shares = vec![ShareConfig::new(POD_SHARE_TAG, view, false).guest_only()];
    for (index, volume) in manifest.volumes.iter().enumerate() {
        if volume.kind == VolumeKind::Host {
            shares.push(ShareConfig::new(
                volume_share_tag(index),
                host_source(volume)?,
                volume.read_only.unwrap_or(false),
            ));
        }
    }
    Ok(shares)
}

/// A host volume's source: an absolute path to an existing directory (virtio-fs shares
/// directories; a single file cannot be a share).
fn host_source(volume: &Volume) -> Result<PathBuf, Stage1Error> {
    let name = volume.name.as_str();
    let source = volume.source.as_deref().unwrap_or_default();
    let path = Path::new(source);
    if !path.is_absolute() {
        return Err(Stage1Error::Unsupported(format!(
            "volume {name}: its source {source:?} is not an absolute path; fix --volume"
        )));
    }
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(path.to_path_buf()),
        Ok(_) => Err(Stage1Error::Unsupported(format!(
            "volume {name}: its source {source} is not a directory; the kvm stage1 shares \
             directories only: mount its parent directory instead"
        ))),
        Err(err) => Err(Stage1Error::Unsupported(format!(
            "volume {name}: its source {source} cannot be used ({err}); create it or fix --volume"
        ))),
    }
}

/// Creates every empty volume's directory with its mode, uid and gid (defaults 0755, 0, 0).
pub fn create_empty_volumes(pod: &PodPaths, manifest: &PodManifest) -> Result<(), Stage1Error> {
    for volume in manifest
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Empty)
    {
        let name = volume.name.as_str();
        let dir = pod.empty_volume(name);
        let mode = match volume.mode.as_deref() {
            None => 0o755,
            Some(text) => u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    Stage1Error::Unsupported(format!(
                        "volume {name}: mode {text:?} is not an octal mode like 0755"
                    ))
                })?,
        };
        let context = format!("creating empty volume {name} at {}", dir.display());
        fs::create_dir_all(&dir).map_err(Stage1Error::io(context.clone()))?;
        std::os::unix::fs::chown(
            &dir,
            Some(volume.uid.unwrap_or(0)),
            Some(volume.gid.unwrap_or(0)),
        )
        .map_err(Stage1Error::io(context.clone()))?;
        // After chown, which clears set-id bits.
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(Stage1Error::io(context))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn manifest(volumes: &str) -> PodManifest {
        let json = format!(
            r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[],"volumes":[{volumes}]}}"#
        );
        PodManifest::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn pod_first_then_host_volumes_by_their_index() {
        let host = tempfile::tempdir().unwrap();
        let src = host.path().display();
        let m = manifest(&format!(
            r#"{{"name":"scratch","kind":"empty"}},
               {{"name":"data","kind":"host","source":"{src}","readOnly":true}},
               {{"name":"logs","kind":"host","source":"{src}"}}"#
        ));
        let shares = shares(Path::new("/pods/u"), &m).unwrap();
        let seen: Vec<_> = shares
            .iter()
            .map(|s| (s.tag.as_str(), s.host_dir.clone(), s.read_only))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("pod", PathBuf::from("/pods/u"), false),
                ("vol1", host.path().to_path_buf(), true),
                ("vol2", host.path().to_path_buf(), false),
            ]
        );
    }

    #[test]
    fn host_sources_must_be_existing_directories() {
        let host = tempfile::tempdir().unwrap();
        let file = host.path().join("f");
        fs::write(&file, "x").unwrap();
        let view = Path::new("/pods/u");
        for (source, says) in [
            (file.display().to_string(), "not a directory"),
            ("/nonexistent/x".to_string(), "create it"),
            // appc refuses this when parsing; checked again in case a manifest skips that.
            ("relative".to_string(), "not an absolute path"),
        ] {
            let mut m = manifest(r#"{"name":"v","kind":"host","source":"/"}"#);
            m.volumes[0].source = Some(source);
            let err = shares(view, &m).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn empty_volumes_get_their_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodPaths::new(dir.path().to_path_buf());
        let m = manifest(
            r#"{"name":"plain","kind":"empty"},
               {"name":"shared","kind":"empty","mode":"1777","uid":1000,"gid":100}"#,
        );
        create_empty_volumes(&pod, &m).unwrap();
        let plain = fs::metadata(pod.empty_volume("plain")).unwrap();
        assert_eq!(plain.mode() & 0o7777, 0o755);
        let shared = fs::metadata(pod.empty_volume("shared")).unwrap();
        assert_eq!(shared.mode() & 0o7777, 0o1777);
        if nix::unistd::geteuid().is_root() {
            assert_eq!((shared.uid(), shared.gid()), (1000, 100));
        }
        let mut bad = manifest(r#"{"name":"b","kind":"empty"}"#);
        bad.volumes[0].mode = Some("rwx".to_string());
        assert!(create_empty_volumes(&pod, &bad)
            .unwrap_err()
            .to_string()
            .contains("octal"));
    }
}
