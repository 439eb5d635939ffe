//! Names of the files and directories inside one pod directory: rkt's
//! on-disk format (`common/common.go`), kept so that `rkt list`, `status`
//! and `gc` read any pod, and so a stage1 knows where to write.

use std::path::{Path, PathBuf};

/// The reified pod manifest (JSON).
pub const POD_MANIFEST: &str = "pod";
/// Empty file; its mtime is the pod's creation time.
pub const POD_CREATED: &str = "pod-created";
/// Empty file created at prepare; app add/rm would lock it (mutable pods).
pub const POD_MANIFEST_LOCK: &str = "pod.lck";
/// Written by stage1: the PID `rkt enter`/`stop` talk to. Its mtime is the
/// pod's start time.
pub const PID: &str = "pid";
/// The alternative to `pid` some stage1s write (the parent of that PID).
pub const PPID: &str = "ppid";
/// Marker: the apps' (and stage1's) rootfs are overlay mounts made at run.
pub const OVERLAY_PREPARED: &str = "overlay-prepared";
/// The tree (in the image store) the stage1 rootfs comes from.
pub const STAGE1_TREE_STORE_ID: &str = "stage1TreeStoreID";
/// Network results for list/status, written by stage1.
pub const NET_INFO: &str = "net-info.json";
/// The stage1 image: `stage1/manifest` and `stage1/rootfs/`.
pub const STAGE1_DIR: &str = "stage1";
/// Per-app image manifest copy and tree ID: `appsinfo/<app>/{manifest,treeStoreID}`.
pub const APPS_INFO_DIR: &str = "appsinfo";
/// Overlay upper and work dirs: `overlay/<treeStoreID>/{upper,work}/<app>`.
pub const OVERLAY_DIR: &str = "overlay";

pub fn stage1_manifest(pod: &Path) -> PathBuf {
    pod.join(STAGE1_DIR).join("manifest")
}

/// The stage1 rootfs as mounted (or copied) at `stage1/rootfs`.
pub fn stage1_rootfs(pod: &Path) -> PathBuf {
    pod.join(STAGE1_DIR).join("rootfs")
}

/// `stage1/rootfs/opt/stage2/<app>`: holds the app's `manifest` and `rootfs/`.
pub fn app_dir(pod: &Path, app: &str) -> PathBuf {
    stage1_rootfs(pod).join("opt/stage2").join(app)
}

pub fn app_rootfs(pod: &Path, app: &str) -> PathBuf {
    app_dir(pod, app).join("rootfs")
}

pub fn app_info_dir(pod: &Path, app: &str) -> PathBuf {
    pod.join(APPS_INFO_DIR).join(app)
}

pub fn app_image_manifest(pod: &Path, app: &str) -> PathBuf {
    app_info_dir(pod, app).join("manifest")
}

pub fn app_tree_store_id(pod: &Path, app: &str) -> PathBuf {
    app_info_dir(pod, app).join("treeStoreID")
}

/// `overlay/<treeStoreID>/upper/<app>` (stage1 uses `app = ""`, as rkt does).
pub fn overlay_upper(pod: &Path, tree: &str, app: &str) -> PathBuf {
    pod.join(OVERLAY_DIR).join(tree).join("upper").join(app)
}

pub fn overlay_work(pod: &Path, tree: &str, app: &str) -> PathBuf {
    pod.join(OVERLAY_DIR).join(tree).join("work").join(app)
}

/// Relative to the stage1 rootfs: the app's exit status (decimal), written
/// by stage1 (by guest-init, through the shared pod directory).
pub fn status_file(app: &str) -> PathBuf {
    Path::new("rkt/status").join(app)
}

/// Relative to the stage1 rootfs: a symlink to `ready` once the pod's
/// supervisor is up (`status --wait-ready`).
pub const SUPERVISOR_STATUS: &str = "rkt/supervisor-status";
