//! The prepare step shared by `rkt prepare` and `rkt run`: from resolved
//! images and the user's flags to a complete pod directory, left locked in
//! `prepare/` for the caller to move on (`mark_prepared` or `mark_running`).
//!
//! Everything that can be checked without a pod directory (the manifest,
//! the images' platform, rendering the store trees, each app's program and
//! working directory in its image) happens first, so most
//! errors leave nothing behind. After the directory exists, an error (or a
//! crash) leaves it in `prepare/`, unlocked once this process lets go: an
//! "aborted prepare", which `rkt gc` removes.

use std::fs::File;
use std::path::Path;

use appc::{ImageId, ImageManifest, PodManifest};

use super::checks;
use super::manifest::{self, PodRequest};
use super::render::{self, TreeImage};
use super::state::Pod;
use super::{layout, PodError, PodsDir};
use crate::store::{RenderedTree, Store};

/// What the user asked for, with every image already in the store.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    pub stage1: ImageId,
    pub pod: PodSource,
    /// Use overlay mounts at run time rather than copying the images.
    pub overlay: bool,
    /// `--disk-limit`: bytes the pod directory may hold (a project quota, `quota`).
    pub disk_limit: Option<u64>,
}

/// Where the pod manifest comes from.
#[derive(Debug, Clone)]
pub enum PodSource {
    /// Built from images and flags (the usual case).
    Flags(PodRequest),
    /// `--pod-manifest FILE`: the user's complete manifest, already parsed
    /// and validated, kept byte for byte as rkt kept it.
    Manifest {
        manifest: PodManifest,
        bytes: Vec<u8>,
    },
}

/// A pod prepared and still locked in `prepare/`, plus the warnings to show.
#[derive(Debug)]
pub struct PreparedPod {
    pub pod: Pod,
    pub warnings: Vec<String>,
}

/// The platform our VMs run (x86_64 guests).
const OS: &str = "linux";
const ARCH: &str = "amd64";

fn check_platform(image: &ImageManifest) -> Result<(), PodError> {
    let os = image.labels.get("os");
    let arch = image.labels.get("arch");
    match (os, arch) {
        (Some(OS), Some(ARCH)) => Ok(()),
        (None, _) | (_, None) => Err(PodError::Invalid(format!(
            "image {} has no os and arch labels; rkt runs only images labelled os={OS}, arch={ARCH}",
            image.name
        ))),
        (Some(os), Some(arch)) => Err(PodError::Invalid(format!(
            "image {} is built for {os}/{arch}; this engine runs {OS}/{ARCH} images",
            image.name
        ))),
    }
}

/// Renders (or finds) image `id`'s tree; `used` collects it, for the pod to
/// record (see `prepare_pod`).
fn tree_image(
    store: &Store,
    id: &ImageId,
    used: &mut Vec<RenderedTree>,
    warnings: &mut Vec<String>,
) -> Result<TreeImage, PodError> {
    let record = store
        .image(id)
        .map_err(|err| PodError::Invalid(err.to_string()))?;
    let rendered = store
        .rendered(id)
        .map_err(|err| PodError::Invalid(err.to_string()))?;
    // Rendered now (an image fetched before its layers were applied at
    // fetch): the device nodes it left out get their warning here.
    if let Some(warning) = rendered.skipped_devices.warning(id.as_str()) {
        warnings.push(warning);
    }
    let tree = rendered.path.clone();
    used.push(rendered);
    Ok(TreeImage {
        tree,
        manifest_bytes: record.manifest_bytes,
    })
}

pub fn prepare_pod(
    store: &Store,
    pods: &PodsDir,
    request: &PrepareRequest,
) -> Result<PreparedPod, PodError> {
    let (manifest, manifest_json, mut warnings) = match &request.pod {
        PodSource::Flags(pod) => {
            for app in &pod.apps {
                check_platform(&app.image)?;
            }
            let built = manifest::build(pod)?;
            let json = serde_json::to_vec(&built.manifest)
                .map_err(|err| PodError::Invalid(format!("encoding the pod manifest: {err}")))?;
            (built.manifest, json, built.warnings)
        }
        PodSource::Manifest { manifest, bytes } => (manifest.clone(), bytes.clone(), Vec::new()),
    };
    let mut used = Vec::new();
    let stage1 = tree_image(store, &request.stage1, &mut used, &mut warnings)?;
    let mut apps = Vec::new();
    for app in &manifest.apps {
        let name = app.name.as_str();
        let record = store.image(&app.image.id).map_err(|_| {
            PodError::Invalid(format!(
                "app {name}: image {} is not in the store; fetch it first",
                app.image.id
            ))
        })?;
        check_platform(&record.manifest)?;
        // The app section the guest will use: the pod's, else the image's.
        let mut effective = app.clone();
        if effective.app.is_none() {
            effective.app = record.manifest.app.clone();
        }
        if effective.app.is_none() {
            return Err(PodError::Invalid(format!(
                "app {name}: neither the pod manifest nor image {} says what to run",
                record.manifest.name
            )));
        }
        let image = tree_image(store, &app.image.id, &mut used, &mut warnings)?;
        checks::check_app(
            &effective,
            record.manifest.name.as_str(),
            &image.tree.join("rootfs"),
        )?;
        apps.push((name.to_string(), image));
    }

    // Refused before the pod directory exists: nothing is left behind.
    if request.disk_limit.is_some() {
        super::quota::check(&pods.state_dir(super::dir::StateDir::Prepare))?;
    }
    let pod = Pod::create(pods)?;
    // Before the pod uses its trees and while `store` still holds the lock
    // they were rendered under: `image rm`/`gc` (exclusive lock) then either
    // ran before the rendering or will see this record, and the pod's
    // directory, from now until `rkt rm`/`gc` deletes it.
    store
        .hold_for_pod(pod.uuid.as_str(), &used)
        .map_err(|err| PodError::Invalid(err.to_string()))?;
    let dir = pod.path();
    // Before anything is rendered into it: a copied image counts against the limit too.
    if let Some(bytes) = request.disk_limit {
        super::quota::limit(&dir, pod.uuid.as_str(), bytes)?;
    }
    render::stage1(&dir, &stage1, request.overlay)?;
    for (name, image) in &apps {
        render::app(&dir, name, image, request.overlay)?;
    }
    write_new(&dir.join(layout::POD_MANIFEST_LOCK), b"")?;
    write_new(&dir.join(layout::POD_MANIFEST), &manifest_json)?;
    write_new(&dir.join(layout::POD_CREATED), b"")?;
    if request.overlay {
        render::mark_overlay(&dir)?;
    }
    sync_filesystem(&dir)?;
    Ok(PreparedPod { pod, warnings })
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), PodError> {
    std::fs::write(path, bytes).map_err(PodError::io(format!("writing {}", path.display())))
}

/// One `syncfs` for the whole pod (a copied rootfs can be thousands of
/// files), so a prepared pod survives a crash intact.
fn sync_filesystem(path: &Path) -> Result<(), PodError> {
    let file = File::open(path).map_err(PodError::io(format!("opening {}", path.display())))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&file))
        .map_err(|errno| PodError::io(format!("syncing {}", path.display()))(errno.into()))
}
