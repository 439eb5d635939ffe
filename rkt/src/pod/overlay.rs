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

/// Where a positive [`check_support`] is remembered, in the data directory.
const SUPPORT_MARKER: &str = "overlay-supported";

/// Whether overlayfs works for pods under `data_dir`: root, and a test
/// mount in a scratch directory there succeeds (the file system below must
/// support it: not overlay-on-overlay without index, not ZFS, ...).
/// `Err` says why not, for the "disabling overlay" message.
///
/// A success is remembered in `data_dir/overlay-supported` for this boot of
/// the kernel and this file system (see [`SupportKey`]), and not tested
/// again while both stay the same: the test mount's unmount alone took about
/// 80 ms of every `rkt run` in the emulated KVM host (issue 15). A failure is
/// never remembered. A pod whose overlays then fail to mount forgets the
/// success ([`forget_support`]), so the next `prepare` tests again.
pub fn check_support(data_dir: &Path) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("overlay mounts need root".to_string());
    }
    // Opened once: the key's stat and the marker's read both go through it.
    let dir = safe_read::open_host_dir(data_dir).ok();
    let key = dir.as_ref().and_then(SupportKey::of);
    let line = dir.as_ref().and_then(remembered);
    if !needs_test(line.as_deref(), key.as_ref()) {
        return Ok(());
    }
    test_mount(data_dir)?;
    if let Some(key) = key {
        // A success that cannot be written down is only tested again next time.
        let _ = remember(data_dir, &key.to_line());
    }
    Ok(())
}

/// Drops a remembered success (after a pod's overlays failed to mount).
pub fn forget_support(data_dir: &Path) {
    let _ = fs::remove_file(data_dir.join(SUPPORT_MARKER));
}

/// Whether the test mount has to be made: unless `remembered` is the line of
/// `key` exactly (no key: nothing can be trusted).
fn needs_test(remembered: Option<&str>, key: Option<&SupportKey>) -> bool {
    match (remembered, key) {
        (Some(line), Some(key)) => line != key.to_line(),
        _ => true,
    }
}

/// What a remembered test result holds for: the kernel's boot (a reboot may
/// bring another kernel, or one without overlayfs) and the data directory's
/// file system (device, the directory's inode, file system type: another file
/// system mounted there differs in at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SupportKey {
    boot_id: String,
    dev: u64,
    ino: u64,
    fs_type: i64,
}

impl SupportKey {
    /// None when any part cannot be read: then nothing is remembered.
    fn of(dir: &fs::File) -> Option<SupportKey> {
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let boot_id = boot_id.trim();
        if boot_id.is_empty() || boot_id.contains(char::is_whitespace) {
            return None;
        }
        let meta = dir.metadata().ok()?;
        let fs = nix::sys::statfs::fstatfs(dir).ok()?;
        Some(SupportKey {
            boot_id: boot_id.to_string(),
            dev: std::os::unix::fs::MetadataExt::dev(&meta),
            ino: std::os::unix::fs::MetadataExt::ino(&meta),
            #[allow(clippy::unnecessary_cast)] // the type of f_type differs between libcs
            fs_type: fs.filesystem_type().0 as i64,
        })
    }

    fn to_line(&self) -> String {
        format!(
            "{} {} {} {:x}\n",
            self.boot_id, self.dev, self.ino, self.fs_type
        )
    }
}

/// The remembered line, if there is one (read as every host file rkt did not
/// just write: no links followed, capped).
fn remembered(dir: &fs::File) -> Option<String> {
    let bytes =
        safe_read::read(dir.as_fd(), Path::new(SUPPORT_MARKER), safe_read::cap::LINE).ok()?;
    String::from_utf8(bytes).ok()
}

/// Writes the marker whole: a temporary file renamed over it.
fn remember(data_dir: &Path, line: &str) -> std::io::Result<()> {
    let mut file = tempfile::Builder::new()
        .prefix(".overlay-supported-")
        .tempfile_in(data_dir)?;
    std::io::Write::write_all(&mut file, line.as_bytes())?;
    file.persist(data_dir.join(SUPPORT_MARKER))
        .map_err(|err| err.error)?;
    Ok(())
}

/// The test itself: an overlay mounted and unmounted in a scratch directory.
fn test_mount(data_dir: &Path) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn open(dir: &Path) -> fs::File {
        safe_read::open_host_dir(dir).unwrap()
    }

    fn key() -> SupportKey {
        SupportKey {
            boot_id: "0b3c5e0e-7d4c-4b8e-9a65-2f6a0c1d2e3f".to_string(),
            dev: 2049,
            ino: 131_073,
            fs_type: 0xef53,
        }
    }

    #[test]
    fn only_the_same_boot_and_file_system_skip_the_test_mount() {
        let line = key().to_line();
        assert_eq!(
            line,
            "0b3c5e0e-7d4c-4b8e-9a65-2f6a0c1d2e3f 2049 131073 ef53\n"
        );
        assert!(!needs_test(Some(&line), Some(&key())));
        for other in [
            SupportKey {
                boot_id: "another-boot".to_string(),
                ..key()
            },
            SupportKey { dev: 2050, ..key() },
            SupportKey { ino: 2, ..key() },
            SupportKey {
                fs_type: 0x794c7630,
                ..key()
            },
        ] {
            assert!(needs_test(Some(&line), Some(&other)), "{other:?}");
        }
        assert!(needs_test(None, Some(&key())));
        assert!(needs_test(Some(""), Some(&key())));
        assert!(needs_test(Some(line.trim_end()), Some(&key())));
        // Without a key (no boot id readable), nothing remembered is trusted.
        assert!(needs_test(Some(&line), None));
    }

    #[test]
    fn a_success_is_remembered_for_this_boot_and_forgotten_on_request() {
        if !nix::unistd::geteuid().is_root() {
            return; // the test mount needs root
        }
        let data = tempfile::tempdir().unwrap();
        check_support(data.path()).unwrap();
        let key = SupportKey::of(&open(data.path())).unwrap();
        assert_eq!(remembered(&open(data.path())).unwrap(), key.to_line());
        // Nothing else is left in the data directory (no scratch, no temporary file).
        let names: Vec<_> = fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [SUPPORT_MARKER]);
        check_support(data.path()).unwrap();
        forget_support(data.path());
        assert!(remembered(&open(data.path())).is_none());
        assert_eq!(fs::read_dir(data.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_planted_link_is_neither_trusted_nor_written_through() {
        if !nix::unistd::geteuid().is_root() {
            return; // the test mount needs root
        }
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("target");
        let line = SupportKey::of(&open(data.path())).unwrap().to_line();
        fs::write(&target, &line).unwrap();
        symlink(&target, data.path().join(SUPPORT_MARKER)).unwrap();
        assert!(
            remembered(&open(data.path())).is_none(),
            "a link is not read"
        );
        check_support(data.path()).unwrap();
        // The link was replaced by rkt's own file; its target is untouched.
        let marker = data.path().join(SUPPORT_MARKER);
        assert!(fs::symlink_metadata(&marker).unwrap().file_type().is_file());
        assert_eq!(fs::read_to_string(&target).unwrap(), line);
        fs::write(&target, "changed").unwrap();
        assert_eq!(remembered(&open(data.path())).unwrap(), line);
    }
}
