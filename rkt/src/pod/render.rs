//! Putting images into a pod directory at prepare time.
//!
//! Two modes, chosen per pod:
//! - overlay (default when available): nothing is copied. The pod records
//!   which store tree each rootfs comes from (`stage1TreeStoreID`,
//!   `appsinfo/<app>/treeStoreID`) and is marked `overlay-prepared`; the
//!   mounts are made at run time by `overlay::mount_pod`.
//! - copy (`--no-overlay`, or no overlay support): the stage1 tree is copied
//!   to `stage1/rootfs` and each app's to `stage1/rootfs/opt/stage2/<app>/
//!   rootfs`, with the image manifest beside it. Slower and bigger, but the
//!   pod then owns plain files: nothing to mount, nothing shared.
//!
//! Either way `appsinfo/<app>/manifest` keeps each app's image manifest
//! (what `rkt list` shows as IMAGE NAME) and `stage1/manifest` the stage1's.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::layout;
use super::PodError;
use crate::store::copy_tree;

/// A store tree (`cas/tree/<id>/` holding `rootfs/`) and the image manifest
/// it was rendered from, exactly as stored.
#[derive(Debug, Clone)]
pub struct TreeImage {
    pub tree: PathBuf,
    pub manifest_bytes: Vec<u8>,
}

impl TreeImage {
    /// The tree's ID: its directory name in the store.
    pub fn tree_id(&self) -> Result<String, PodError> {
        self.tree
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                PodError::Invalid(format!("{} is not a store tree", self.tree.display()))
            })
    }
}

fn mkdir_all(path: &Path) -> Result<(), PodError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(PodError::io(format!("creating {}", path.display())))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PodError> {
    fs::write(path, bytes).map_err(PodError::io(format!("writing {}", path.display())))
}

fn copy_rootfs(image: &TreeImage, to: &Path) -> Result<(), PodError> {
    mkdir_all(to)?;
    let from = image.tree.join("rootfs");
    copy_tree(&from, to).map_err(PodError::io(format!(
        "copying {} to {}",
        from.display(),
        to.display()
    )))
}

/// Puts the stage1 image into the pod.
pub fn stage1(pod_dir: &Path, image: &TreeImage, overlay: bool) -> Result<(), PodError> {
    let rootfs = layout::stage1_rootfs(pod_dir);
    mkdir_all(&rootfs)?;
    write(&layout::stage1_manifest(pod_dir), &image.manifest_bytes)?;
    write(
        &pod_dir.join(layout::STAGE1_TREE_STORE_ID),
        image.tree_id()?.as_bytes(),
    )?;
    if !overlay {
        copy_rootfs(image, &rootfs)?;
    }
    Ok(())
}

/// Puts app `app`'s image into the pod.
pub fn app(pod_dir: &Path, app: &str, image: &TreeImage, overlay: bool) -> Result<(), PodError> {
    let info = layout::app_info_dir(pod_dir, app);
    mkdir_all(&info)?;
    write(
        &layout::app_image_manifest(pod_dir, app),
        &image.manifest_bytes,
    )?;
    if overlay {
        write(
            &layout::app_tree_store_id(pod_dir, app),
            image.tree_id()?.as_bytes(),
        )
    } else {
        copy_rootfs(image, &layout::app_rootfs(pod_dir, app))?;
        write(
            &layout::app_dir(pod_dir, app).join("manifest"),
            &image.manifest_bytes,
        )
    }
}

/// Marks the pod as overlay-prepared (read by status and by `run`).
pub fn mark_overlay(pod_dir: &Path) -> Result<(), PodError> {
    write(&pod_dir.join(layout::OVERLAY_PREPARED), b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, id: &str) -> TreeImage {
        let tree = root.join(id);
        fs::create_dir_all(tree.join("rootfs/bin")).unwrap();
        fs::write(tree.join("rootfs/bin/tool"), b"#!x").unwrap();
        TreeImage {
            tree,
            manifest_bytes: format!("{{\"name\":\"{id}\"}}").into_bytes(),
        }
    }

    #[test]
    fn copy_mode_copies_and_overlay_mode_records_tree_ids() {
        let root = tempfile::tempdir().unwrap();
        let s1 = tree(root.path(), "deps-sha512-s1");
        let web = tree(root.path(), "deps-sha512-web");

        let copied = root.path().join("copied");
        stage1(&copied, &s1, false).unwrap();
        app(&copied, "web", &web, false).unwrap();
        assert!(copied.join("stage1/rootfs/bin/tool").is_file());
        assert!(copied
            .join("stage1/rootfs/opt/stage2/web/rootfs/bin/tool")
            .is_file());
        assert!(copied
            .join("stage1/rootfs/opt/stage2/web/manifest")
            .is_file());
        assert!(copied.join("appsinfo/web/manifest").is_file());
        assert!(!copied.join("appsinfo/web/treeStoreID").exists());
        assert_eq!(
            fs::read_to_string(copied.join("stage1TreeStoreID")).unwrap(),
            "deps-sha512-s1"
        );

        let overlaid = root.path().join("overlaid");
        stage1(&overlaid, &s1, true).unwrap();
        app(&overlaid, "web", &web, true).unwrap();
        mark_overlay(&overlaid).unwrap();
        assert!(!overlaid.join("stage1/rootfs/bin").exists());
        assert!(!overlaid.join("stage1/rootfs/opt").exists());
        assert_eq!(
            fs::read_to_string(overlaid.join("appsinfo/web/treeStoreID")).unwrap(),
            "deps-sha512-web"
        );
        assert!(overlaid.join("overlay-prepared").is_file());

        let planned =
            super::super::overlay::planned_mounts(&overlaid, root.path(), &["web".to_string()])
                .unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[0].lower, root.path().join("deps-sha512-s1/rootfs"));
        assert_eq!(planned[0].target, overlaid.join("stage1/rootfs"));
        assert_eq!(
            planned[1].upper,
            overlaid.join("overlay/deps-sha512-web/upper/web")
        );
        assert_eq!(
            planned[1].target,
            overlaid.join("stage1/rootfs/opt/stage2/web/rootfs")
        );
    }
}
