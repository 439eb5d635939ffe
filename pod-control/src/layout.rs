//! The pod share as guest-init sees it (share tag [`POD_SHARE_TAG`]): a view the kvm stage1
//! composes for the guest on a read-only tmpfs in its own mount namespace, so the guest can
//! write only where bind mounts make it writable: each app's root file system and each empty
//! volume. Everything the host keeps for itself (the stage1 image, `pid`, the lock, the
//! statuses, logs, network state, sockets) is outside it. Paths are relative to the share.
//!
//! ```text
//! pod                     the reified pod manifest (a copy; read-only)
//! network.json            the guest's network description (read-only; absent: no network)
//! hosts, resolv.conf      /etc/hosts and /etc/resolv.conf for the apps, when stage0/stage1 made them
//! apps/<app>/manifest     the app's image manifest (a copy; read-only)
//! apps/<app>/rootfs       the app's root file system (read-write bind mount)
//! volumes/<name>          an `empty` volume (read-write bind mount; read-only if the volume is)
//! ```
//! Host volumes are shares of their own, tag [`volume_share_tag`]`(i)`.

use std::path::PathBuf;

/// The share tag of the pod view.
pub const POD_SHARE_TAG: &str = "pod";
/// The reified pod manifest.
pub const POD_MANIFEST: &str = "pod";
/// The guest's network description (docs/networking.md).
pub const NETWORK_FILE: &str = "network.json";
/// The apps' /etc/hosts, when stage0 or stage1 wrote one (`--hosts-entry`, `--dns-conf-mode`).
pub const HOSTS_FILE: &str = "hosts";
/// The apps' /etc/resolv.conf, when stage0 or stage1 wrote one (`--dns`, `--dns-conf-mode`).
pub const RESOLV_FILE: &str = "resolv.conf";
/// One directory per app.
pub const APPS_DIR: &str = "apps";
/// One directory per empty volume.
pub const VOLUMES_DIR: &str = "volumes";

/// App `name`'s directory.
pub fn app_dir(name: &str) -> PathBuf {
    PathBuf::from(APPS_DIR).join(name)
}

/// App `name`'s root file system.
pub fn app_rootfs(name: &str) -> PathBuf {
    app_dir(name).join("rootfs")
}

/// App `name`'s image manifest.
pub fn app_manifest(name: &str) -> PathBuf {
    app_dir(name).join("manifest")
}

/// Empty volume `name`.
pub fn empty_volume(name: &str) -> PathBuf {
    PathBuf::from(VOLUMES_DIR).join(name)
}

/// The share tag of the pod volume at `index` in the manifest's `volumes` (host volumes).
pub fn volume_share_tag(index: usize) -> String {
    format!("vol{index}")
}
