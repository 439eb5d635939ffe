//! The store-wide consistency check (`rkt image verify --all`): what the
//! index names is on disk. The write order (files before rows, rows before
//! files on removal; see the module comment of `store`) keeps this true at
//! every instant and across any crash, so a problem found here is damage,
//! not a race.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::{ImageFormat, Store, StoreError};

impl Store {
    /// Every problem found: an image whose blobs are missing, a tree row
    /// without its directory or image, a pod record naming a missing image
    /// or tree. Files the index does not name are not problems (`image gc`
    /// removes them).
    pub fn check_consistency(&self) -> Result<Vec<String>, StoreError> {
        // The rows from one snapshot, so a fetch or prepare committing
        // meanwhile is seen whole or not at all; then the files they name,
        // which were in place before the rows were committed.
        let mut problems = Vec::new();
        let (images, trees, held) = self.index.snapshot(|| {
            let mut images = Vec::new();
            for record in self.image_records()? {
                // A row that cannot be read is reported; the rest are still checked, and its
                // trees and pods are not reported again as naming an image not in the index.
                let image = match record {
                    Ok(image) => image,
                    Err(err) => {
                        if let StoreError::Damaged { id, .. } = &err {
                            images.push((id.clone(), Vec::new()));
                        }
                        problems.push(err.to_string());
                        continue;
                    }
                };
                let blobs = match image.format {
                    ImageFormat::Aci => vec![("blob".to_string(), self.blob_path(&image.id))],
                    ImageFormat::Oci => {
                        let mut paths = Vec::new();
                        for blob in self.index.blobs_of(image.id.as_str())? {
                            let path = self.sha256_blob_path(&blob.digest)?;
                            paths.push((format!("{} blob {}", blob.role, blob.digest), path));
                        }
                        paths
                    }
                };
                images.push((image.id.to_string(), blobs));
            }
            Ok::<_, StoreError>((images, self.index.trees()?, self.index.pod_refs()?))
        })?;

        let mut known = HashSet::new();
        for (id, blobs) in images {
            for (what, path) in blobs {
                if !is_regular_file(&path) {
                    problems.push(format!(
                        "image {id}: its {what} ({}) is missing",
                        path.display()
                    ));
                }
            }
            known.insert(id);
        }
        for (tree, image) in trees {
            if !known.contains(&image) {
                problems.push(format!(
                    "tree {tree}: its image {image} is not in the index"
                ));
            }
            if !self.is_tree(&tree) {
                problems.push(format!(
                    "tree {tree} of image {image}: its directory is missing"
                ));
            }
        }
        for held in held {
            if !known.contains(&held.image_id) {
                problems.push(format!(
                    "pod {} uses image {}, which is not in the index",
                    held.pod_uuid, held.image_id
                ));
            }
            if !self.is_tree(&held.tree_id) {
                problems.push(format!(
                    "pod {} uses tree {}, whose directory is missing",
                    held.pod_uuid, held.tree_id
                ));
            }
        }
        Ok(problems)
    }

    /// `cas/tree/<tree_id>/rootfs` is a directory (not a link to one).
    fn is_tree(&self, tree_id: &str) -> bool {
        let plain = !tree_id.is_empty() && !tree_id.contains('/') && !tree_id.starts_with('.');
        plain
            && [
                self.tree_dir().join(tree_id),
                self.tree_dir().join(tree_id).join("rootfs"),
            ]
            .iter()
            .all(|path| fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()))
    }
}

/// A regular file, not a link to one.
fn is_regular_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file())
}
