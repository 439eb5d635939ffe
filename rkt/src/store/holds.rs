//! What pods hold in the store: the trees they were prepared from and every
//! image those trees were rendered from. `prepare` records them
//! ([`Store::hold_for_pod`]); `image rm` and `image gc` read them under the
//! exclusive lock ([`Store::holds`]) and leave alone whatever a pod that
//! still exists on disk uses. The order that makes this race-free is in the
//! store's module comment.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use appc::ImageId;

use super::{LockMode, RenderedTree, Store, StoreError};

/// What the pods that still exist use, read under the exclusive lock.
#[derive(Debug, Default)]
pub struct Holds {
    /// Image ID -> the UUIDs of the pods using it, sorted.
    images: BTreeMap<String, Vec<String>>,
    trees: HashSet<String>,
}

impl Holds {
    /// The pods using image `id`, if any.
    pub fn pods_using(&self, id: &ImageId) -> Option<&[String]> {
        self.images.get(id.as_str()).map(Vec::as_slice)
    }

    pub fn holds_tree(&self, tree_id: &str) -> bool {
        self.trees.contains(tree_id)
    }
}

/// "pod U" or "pods U1, U2".
pub fn pods_phrase(pods: &[String]) -> String {
    match pods {
        [one] => format!("pod {one}"),
        many => format!("pods {}", many.join(", ")),
    }
}

impl Store {
    /// Records that pod `pod_uuid` uses `trees` (and so the images they were
    /// rendered from). Call it with the store lock still held from rendering
    /// the trees, after the pod's directory exists and before the pod uses
    /// them: then no `image rm`/`gc` can run in between.
    pub fn hold_for_pod(&self, pod_uuid: &str, trees: &[RenderedTree]) -> Result<(), StoreError> {
        let rows: Vec<(String, Vec<String>)> = trees
            .iter()
            .map(|tree| {
                let images = tree.images.iter().map(|id| id.to_string()).collect();
                (tree.tree_id.clone(), images)
            })
            .collect();
        Ok(self.index.add_pod_refs(pod_uuid, &rows)?)
    }

    /// What the pods that still exist hold. `pod_exists(uuid)` says whether
    /// a pod's directory is still on disk (in any state); the records of
    /// pods that are gone are dropped here. Needs the exclusive lock, so no
    /// prepare is between rendering a tree and recording it.
    pub fn holds(&mut self, pod_exists: impl Fn(&str) -> bool) -> Result<Holds, StoreError> {
        debug_assert_eq!(
            self.mode,
            LockMode::Exclusive,
            "reading what pods hold needs the exclusive lock"
        );
        let mut holds = Holds::default();
        let mut by_image: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // Each pod's directory is looked up once.
        let mut exists: BTreeMap<String, bool> = BTreeMap::new();
        for record in self.index.pod_refs()? {
            let alive = *exists
                .entry(record.pod_uuid.clone())
                .or_insert_with(|| pod_exists(&record.pod_uuid));
            if !alive {
                continue;
            }
            holds.trees.insert(record.tree_id);
            by_image
                .entry(record.image_id)
                .or_default()
                .insert(record.pod_uuid);
        }
        holds.images = by_image
            .into_iter()
            .map(|(image, pods)| (image, pods.into_iter().collect()))
            .collect();
        let gone: Vec<String> = exists
            .into_iter()
            .filter_map(|(pod, alive)| (!alive).then_some(pod))
            .collect();
        self.index.forget_pods(&gone)?;
        Ok(holds)
    }
}
