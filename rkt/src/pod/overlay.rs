//! Overlayfs for pod images, as rkt used it: the store's rendered tree is
//! the read-only lower layer, shared by every pod; each pod gets its own
//! upper and work directories (`overlay/<treeStoreID>/{upper,work}/<app>`),
//! so a pod starts instantly whatever the image size and writes never
//! touch the store.
//!
//! rkt prepared the bookkeeping at `prepare` (`overlay-prepared`,
//! `stage1TreeStoreID`, `appsinfo/<app>/treeStoreID`) and mounted at `run`,
//! in stage0, just before exec'ing stage1; mounts do not survive a reboot,
//! while a prepared pod should. [`mount_pod`] is that run-time step.

use std::fs::{self, DirBuilder};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::PodError;
use super::{layout, quota, safe_read};

/// Whether overlayfs works for pods under `data_dir`: root, and a test
/// mount in a scratch directory there succeeds (the file system below must
/// support it: not overlay-on-overlay without index, not ZFS, ...).
/// `Err` says why not, for the "disabling overlay" message.
pub fn check_support(data_dir: &Path) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("overlay mounts need root".to_string());
    }
    let scratch = tempfile::Builder::new()
        .prefix("overlay-check-")
        .tempdir_in(data_dir)
        .map_err(|err| format!("cannot make a scratch directory: {err}"))?;
    let dirs = ["lower", "upper", "work", "merged"].map(|d| scratch.path().join(d));
    for dir in &dirs {
        fs::create_dir(dir).map_err(|err| format!("cannot make {}: {err}", dir.display()))?;
    }
    let [lower, upper, work, merged] = &dirs;
    mount_overlay(lower, upper, work, merged).map_err(|err| err.to_string())?;
    let _ = umount2(merged, MntFlags::MNT_DETACH);
    Ok(())
}

fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<(), PodError> {
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        escape(lower),
        escape(upper),
        escape(work)
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|errno| {
        PodError::Invalid(format!(
            "mounting an overlay on {} (lower {}): {errno}; \
             prepare the pod with --no-overlay to copy images instead",
            target.display(),
            lower.display()
        ))
    })
}

/// Overlay options separate with `,` and `:`; escape them in paths.
fn escape(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

/// One overlay to mount: the store tree `lower` (its `rootfs/`) onto `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
    /// An app's root file system, which the guest writes (stage1's is the host's alone).
    pub guest_writes: bool,
}

/// The overlays of an overlay-prepared pod, in mount order: stage1's rootfs
/// first (at `stage1/rootfs`), then each app's (at
/// `stage1/rootfs/opt/stage2/<app>/rootfs`, inside stage1's). `tree_dir` is
/// the store's tree directory (`<dir>/cas/tree`).
pub fn planned_mounts(
    pod_dir: &Path,
    tree_dir: &Path,
    apps: &[String],
) -> Result<Vec<OverlayMount>, PodError> {
    // The IDs are pod files: read through the pod's descriptor, no links, capped.
    let dir = safe_read::open_host_dir(pod_dir)
        .map_err(PodError::io(format!("opening {}", pod_dir.display())))?;
    let read_id = |rel: PathBuf| -> Result<String, PodError> {
        let path = pod_dir.join(&rel);
        let bytes = safe_read::read(dir.as_fd(), &rel, safe_read::cap::LINE).map_err(|source| {
            PodError::PodFile {
                context: format!("reading a tree ID of {}", pod_dir.display()),
                source,
            }
        })?;
        let id = String::from_utf8_lossy(&bytes).trim().to_string();
        // It names a directory under the store: never a path.
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(PodError::BadFile {
                path,
                problem: format!("{id:?} is not a tree ID"),
            });
        }
        Ok(id)
    };
    let plan = |tree: &str, app: &str, target: PathBuf| OverlayMount {
        lower: tree_dir.join(tree).join("rootfs"),
        upper: layout::overlay_upper(pod_dir, tree, app),
        work: layout::overlay_work(pod_dir, tree, app),
        target,
        guest_writes: !app.is_empty(),
    };
    let stage1_tree = read_id(PathBuf::from(layout::STAGE1_TREE_STORE_ID))?;
    let mut mounts = vec![plan(&stage1_tree, "", layout::stage1_rootfs(pod_dir))];
    for app in apps {
        let tree = read_id(layout::app_tree_store_id(Path::new(""), app))?;
        mounts.push(plan(&tree, app, layout::app_rootfs(pod_dir, app)));
    }
    Ok(mounts)
}

/// Mounts every overlay of an overlay-prepared pod (see [`planned_mounts`])
/// and copies each app's image manifest next to its rootfs, where stage1
/// expects it (`opt/stage2/<app>/manifest`). If one mount fails, the ones
/// made are undone, so the pod is left as it was.
///
/// LEAD: call this from `rkt run`/`run-prepared` after `Pod::mark_running` and
/// before exec'ing stage1, when the pod has `overlay-prepared`.
pub fn mount_pod(pod_dir: &Path, tree_dir: &Path, apps: &[String]) -> Result<(), PodError> {
    let mut done: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for (index, planned) in planned_mounts(pod_dir, tree_dir, apps)?
            .into_iter()
            .enumerate()
        {
            if !planned.lower.is_dir() {
                return Err(PodError::Invalid(format!(
                    "the image tree {} this pod was prepared from is gone from the store \
                     (removed by `rkt image gc`?); prepare the pod again",
                    planned.lower.display()
                )));
            }
            let lower_mode = fs::metadata(&planned.lower)
                .map_err(PodError::io(format!("reading {}", planned.lower.display())))?
                .permissions()
                .mode();
            for dir in [&planned.upper, &planned.work, &planned.target] {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(PodError::io(format!("creating {}", dir.display())))?;
            }
            // `--disk-limit` binds what the guest writes. overlayfs writes to the upper
            // directory as its mounter minus CAP_SYS_RESOURCE, so even the host's own writes
            // through stage1's overlay (the apps' statuses) would stop at the limit once the
            // guest filled it: stage1's upper and work directories, which the guest cannot
            // reach, are left out of the pod's project.
            if !planned.guest_writes && quota::project_of(pod_dir).is_some() {
                for dir in [&planned.upper, &planned.work] {
                    quota::exclude(dir)?;
                }
            }
            // The merged root takes the image root's mode (e.g. 0755).
            fs::set_permissions(&planned.upper, fs::Permissions::from_mode(lower_mode)).map_err(
                PodError::io(format!("setting the mode of {}", planned.upper.display())),
            )?;
            mount_overlay(
                &planned.lower,
                &planned.upper,
                &planned.work,
                &planned.target,
            )?;
            done.push(planned.target.clone());
            if index > 0 {
                let app = &apps[index - 1];
                let manifest = layout::app_dir(pod_dir, app).join("manifest");
                // Read as every pod file is (safe_read: no links, capped), written whole.
                let dir = safe_read::open_host_dir(pod_dir)
                    .map_err(PodError::io(format!("opening {}", pod_dir.display())))?;
                let rel = layout::app_image_manifest(Path::new(""), app);
                let bytes = safe_read::read(dir.as_fd(), &rel, safe_read::cap::MANIFEST).map_err(
                    |source| PodError::PodFile {
                        context: format!("reading the image manifest of app {app}"),
                        source,
                    },
                )?;
                fs::write(&manifest, bytes)
                    .map_err(PodError::io(format!("writing {}", manifest.display())))?;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        for target in done.iter().rev() {
            let _ = umount2(target, MntFlags::MNT_DETACH);
        }
    }
    result
}
