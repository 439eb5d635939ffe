//! The pod share: what the guest may see and write of the pod, composed on the host
//! (layout: `pod_control::layout`; why: docs/security.md).
//!
//! The pod directory P holds the host's own state next to the apps' files: the stage1 image
//! (the entrypoints stage0 executes, the kernel), `pid`, the lock, the statuses, logs, network
//! state. None of it may be reachable from the guest. So the guest does not get P: it gets a
//! small tmpfs, built in the jailed VMM process's mount namespace and then made read-only,
//! that holds copies of what guest-init must read (pod manifest, image manifests, network and
//! DNS files) and bind mounts of what the apps may write (their root file systems and the empty
//! volumes). The guest can therefore write nothing but those bind mounts, cannot rename or
//! replace them (they are mount points), and can plant nothing where the host will look.
//!
//! The mount namespace belongs to the VMM process (`vmm_process`), which composes this in its
//! jail before it pivots into it:
//! the host's namespace never sees the tmpfs or the bind mounts, and they vanish with the
//! process however it ends, so nothing is left mounted after a crash or `stop --force`. The
//! thread's namespace is a slave of the host's (host unmounts still reach it; nothing of ours
//! goes back).

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use appc::{AcName, PodManifest, VolumeKind};
use nix::mount::{mount, MsFlags};
use pod_control::layout;
use serde::{Deserialize, Serialize};

use crate::error::Stage1Error;
use crate::pod::PodPaths;

/// Options of the view's tmpfs: small (it only holds manifests and a few text files), no
/// devices, set-id bits or executables of its own.
const TMPFS_OPTIONS: &str = "mode=0755,size=16m,nr_inodes=4096";
/// The largest file copied into the view (pod and image manifests, network and DNS files).
const MAX_COPIED_FILE: u64 = 8 << 20;

/// What of the pod manifest the share is made from: the apps, whose roots are bound in, and
/// the empty volumes. The stage1 takes it from the manifest it has read and checked, and
/// sends it with the VMM's request (`vmm_process::protocol`), so that the VMM process does not
/// read and parse the manifest a second time: in the emulated test host that cost 8-14 ms of
/// every VM's start, most of it faulting in the parsing code of a freshly started process.
/// The names are [`AcName`]s here too, checked again when the request is decoded, so a path
/// made from one stays inside the share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareContents {
    pub apps: Vec<AcName>,
    /// Each empty volume, and whether it is read-only.
    pub empty_volumes: Vec<(AcName, bool)>,
}

impl ShareContents {
    pub fn of(manifest: &PodManifest) -> ShareContents {
        ShareContents {
            apps: manifest.apps.iter().map(|app| app.name.clone()).collect(),
            empty_volumes: manifest
                .volumes
                .iter()
                .filter(|volume| volume.kind == VolumeKind::Empty)
                .map(|volume| (volume.name.clone(), volume.read_only.unwrap_or(false)))
                .collect(),
        }
    }
}

/// Builds the pod share at `root` (an empty directory the host made, outside every share):
/// must run in a mount namespace of its own (the jailed VMM process's, `vmm_process::child`).
pub fn compose(pod: &PodPaths, contents: &ShareContents, root: &Path) -> Result<(), Stage1Error> {
    let plain = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("rkt-pod"),
        root,
        Some("tmpfs"),
        plain,
        Some(TMPFS_OPTIONS),
    )
    .map_err(errno(format!(
        "mounting the pod share's tmpfs on {}",
        root.display()
    )))?;

    copy_into(&pod.manifest(), &root.join(layout::POD_MANIFEST), true)?;
    copy_into(
        &pod.guest_network_file(),
        &root.join(layout::NETWORK_FILE),
        false,
    )?;
    copy_into(&pod.hosts_file(), &root.join(layout::HOSTS_FILE), false)?;
    copy_into(&pod.resolv_file(), &root.join(layout::RESOLV_FILE), false)?;

    make_dir(&root.join(layout::APPS_DIR))?;
    make_dir(&root.join(layout::VOLUMES_DIR))?;
    for app in &contents.apps {
        let name = app.as_str();
        let dir = root.join(layout::app_dir(name));
        make_dir(&dir)?;
        copy_into(
            &pod.app_manifest(name),
            &root.join(layout::app_manifest(name)),
            true,
        )?;
        let target = root.join(layout::app_rootfs(name));
        make_dir(&target)?;
        bind(&pod.app_rootfs(name), &target, false)?;
    }
    for (volume, read_only) in &contents.empty_volumes {
        let name = volume.as_str();
        let target = root.join(layout::empty_volume(name));
        make_dir(&target)?;
        bind(&pod.empty_volume(name), &target, *read_only)?;
    }
    // Last: the skeleton itself becomes read-only (the bind mounts keep their own flags).
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | plain,
        None::<&str>,
    )
    .map_err(errno(format!("making {} read-only", root.display())))
}

/// Copies the host file `from` (a file the host wrote) to `to`; a missing optional file is
/// skipped. Read with a cap and without following a final symlink.
fn copy_into(from: &Path, to: &Path, required: bool) -> Result<(), Stage1Error> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(from)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => return Ok(()),
        Err(err) => return Err(Stage1Error::io(format!("reading {}", from.display()))(err)),
    };
    let context = || format!("reading {}", from.display());
    let meta = file.metadata().map_err(Stage1Error::io(context()))?;
    if !meta.is_file() || meta.len() > MAX_COPIED_FILE {
        return Err(Stage1Error::BadFile {
            path: from.to_path_buf(),
            problem: format!("not a regular file of at most {MAX_COPIED_FILE} bytes"),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_COPIED_FILE)
        .read_to_end(&mut bytes)
        .map_err(Stage1Error::io(context()))?;
    fs::write(to, bytes).map_err(Stage1Error::io(format!("writing {}", to.display())))
}

fn make_dir(dir: &Path) -> Result<(), Stage1Error> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(Stage1Error::io(format!("creating {}", dir.display()))(err)),
    }
}

/// Bind-mounts the directory `source` on `target`, read-only if asked. The source is opened
/// without following a final symlink and mounted through its descriptor, so what is mounted
/// is the directory we checked.
fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), Stage1Error> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(source)
        .map_err(Stage1Error::io(format!(
            "opening {} to share it with the guest",
            source.display()
        )))?;
    let by_fd = PathBuf::from(format!("/proc/thread-self/fd/{}", dir.as_raw_fd()));
    mount(
        Some(&by_fd),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(errno(format!(
        "bind-mounting {} on {}",
        source.display(),
        target.display()
    )))?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(errno(format!("making {} read-only", target.display())))?;
    }
    Ok(())
}

fn errno(context: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> Stage1Error {
    let context = context.into();
    move |errno| Stage1Error::io(context)(std::io::Error::from(errno))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Moves the calling thread into a mount namespace of its own whose mounts do not propagate
    /// to the host. Threads it starts afterwards (the VMM's) share it.
    /// Runs `body` in a thread with a private mount namespace (needs root, as rkt does).
    fn in_own_namespace(body: impl FnOnce() + Send) {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // The jail's own namespace set-up, per thread here (each test its own).
                    jail::root::unshare_namespaces().unwrap();
                    body();
                })
                .join()
                .unwrap();
        });
    }

    #[test]
    fn the_guest_gets_copies_and_writable_app_roots_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root (mounts); rkt and its tests run as root");
            return;
        }
        let p = tempfile::tempdir().unwrap();
        let pod = PodPaths::new(p.path().to_path_buf());
        fs::write(pod.manifest(), "{}").unwrap();
        fs::create_dir_all(pod.app_rootfs("web")).unwrap();
        fs::write(pod.app_manifest("web"), "{\"name\":\"web\"}").unwrap();
        fs::write(pod.app_rootfs("web").join("hello"), "hi").unwrap();
        fs::create_dir_all(pod.empty_volume("cache")).unwrap();
        fs::create_dir_all(pod.empty_volume("ro")).unwrap();
        let manifest = PodManifest::from_json(
            format!(
                r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[
                    {{"name":"web","image":{{"id":"sha512-{}"}}}}],
                    "volumes":[{{"name":"cache","kind":"empty"}},
                               {{"name":"ro","kind":"empty","readOnly":true}}]}}"#,
                "0".repeat(128)
            )
            .as_bytes(),
        )
        .unwrap();
        let root = p.path().join("view");
        fs::create_dir(&root).unwrap();
        in_own_namespace(|| {
            compose(&pod, &ShareContents::of(&manifest), &root).unwrap();
            assert_eq!(fs::read_to_string(root.join("pod")).unwrap(), "{}");
            assert_eq!(
                fs::read_to_string(root.join("apps/web/rootfs/hello")).unwrap(),
                "hi"
            );
            // Writable where the apps write, nowhere else.
            fs::write(root.join("apps/web/rootfs/new"), "x").unwrap();
            fs::write(root.join("volumes/cache/f"), "x").unwrap();
            assert!(fs::write(root.join("volumes/ro/f"), "x").is_err());
            assert!(fs::write(root.join("planted"), "x").is_err());
            assert!(fs::write(root.join("pod"), "{}").is_err());
            assert!(fs::remove_file(root.join("apps/web/manifest")).is_err());
            // A mount point cannot be renamed away and replaced by a link.
            assert!(fs::rename(root.join("apps/web/rootfs"), root.join("apps/web/x")).is_err());
            // No copy of the host's own files.
            assert!(!root.join("pid").exists() && !root.join("stage1").exists());
        });
        // The host's namespace never saw the tmpfs: the directory is empty and removable.
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        assert!(pod.app_rootfs("web").join("new").exists());
        fs::remove_dir(&root).unwrap();
    }

    /// The share's contents come from the manifest, and a name in them that is not an AC
    /// name (one that would make a path leave the share) does not decode.
    #[test]
    fn share_contents_are_the_apps_and_empty_volumes_and_only_ac_names_decode() {
        let manifest = PodManifest::from_json(
            format!(
                r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[
                    {{"name":"web","image":{{"id":"sha512-{0}"}}}},
                    {{"name":"db","image":{{"id":"sha512-{0}"}}}}],
                    "volumes":[{{"name":"cache","kind":"empty"}},
                               {{"name":"data","kind":"host","source":"/srv"}},
                               {{"name":"ro","kind":"empty","readOnly":true}}]}}"#,
                "0".repeat(128)
            )
            .as_bytes(),
        )
        .unwrap();
        let contents = ShareContents::of(&manifest);
        let names = |list: &[AcName]| {
            list.iter()
                .map(|n| n.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&contents.apps), ["web", "db"]);
        let volumes: Vec<(&str, bool)> = contents
            .empty_volumes
            .iter()
            .map(|(name, read_only)| (name.as_str(), *read_only))
            .collect();
        assert_eq!(volumes, [("cache", false), ("ro", true)]);

        let json = serde_json::to_string(&contents).unwrap();
        let back: ShareContents = serde_json::from_str(&json).unwrap();
        assert_eq!(back, contents);
        for bad in ["../../etc", "a/b", "UPPER", ""] {
            let text = json.replace("\"web\"", &format!("{bad:?}"));
            assert!(
                serde_json::from_str::<ShareContents>(&text).is_err(),
                "{bad:?} decoded"
            );
        }
    }

    #[test]
    fn a_planted_link_is_not_mounted() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let p = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let link = p.path().join("link");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let target = p.path().join("t");
        fs::create_dir(&target).unwrap();
        in_own_namespace(|| {
            let err = bind(&link, &target, false).unwrap_err().to_string();
            assert!(err.contains("opening"), "{err}");
        });
    }
}
