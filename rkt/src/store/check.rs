//! The store-wide consistency check (`rkt image verify --all`): what the
//! index names is on disk. The write order (files before rows, rows before
//! files on removal; see the module comment of `store`) keeps this true at
//! every instant and across any crash, so a problem found here is damage,
//! not a race.

use super::{ImageFormat, Store, StoreError};

impl Store {
    /// Every problem found: an image whose blobs are missing, a tree row
    /// without its directory or image, a pod record naming a missing image
    /// or tree. Files the index does not name are not problems (`image gc`
    /// removes them).
    pub fn check_consistency(&self) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let mut known = std::collections::HashSet::new();
        for image in self.images()? {
            known.insert(image.id.to_string());
            match image.format {
                ImageFormat::Aci => {
                    let blob = self.blob_path(&image.id);
                    if !blob.is_file() {
                        problems.push(format!(
                            "image {}: its blob {} is missing",
                            image.id,
                            blob.display()
                        ));
                    }
                }
                ImageFormat::Oci => {
                    for blob in self.index.blobs_of(image.id.as_str())? {
                        let path = self.sha256_blob_path(&blob.digest)?;
                        if !path.is_file() {
                            problems.push(format!(
                                "image {}: its {} blob {} is missing",
                                image.id, blob.role, blob.digest
                            ));
                        }
                    }
                }
            }
        }
        for (tree, image) in self.index.trees()? {
            if !known.contains(&image) {
                problems.push(format!(
                    "tree {tree}: its image {image} is not in the index"
                ));
            }
            if !self.tree_dir().join(&tree).join("rootfs").is_dir() {
                problems.push(format!(
                    "tree {tree} of image {image}: its directory is missing"
                ));
            }
        }
        for held in self.index.pod_refs()? {
            if !known.contains(&held.image_id) {
                problems.push(format!(
                    "pod {} uses image {}, which is not in the index",
                    held.pod_uuid, held.image_id
                ));
            }
            if !self.tree_dir().join(&held.tree_id).join("rootfs").is_dir() {
                problems.push(format!(
                    "pod {} uses tree {}, whose directory is missing",
                    held.pod_uuid, held.tree_id
                ));
            }
        }
        Ok(problems)
    }
}
