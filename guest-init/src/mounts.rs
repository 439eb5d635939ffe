//! The file systems every guest needs before anything runs: /proc, /sys, /dev and friends.
//!
//! Each mount is tolerant of being done already (a mount point that is on a different device
//! than its parent is left alone), so guest-init can be restarted or run on a root that someone
//! else prepared. The same set is mounted again inside a directory that becomes the command's
//! root (see the share module), so a chrooted command finds the system it expects.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use thiserror::Error;

/// One file system guest-init mounts.
#[derive(Debug, Clone, Copy)]
pub struct SystemMount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub options: Option<&'static str>,
    /// The guest kernel option that provides this file system, named when it is missing.
    pub kernel_option: &'static str,
}

/// In order: a parent before the mounts below it (/dev before /dev/pts).
pub const SYSTEM_MOUNTS: [SystemMount; 6] = [
    SystemMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        options: None,
        kernel_option: "CONFIG_PROC_FS=y",
    },
    SystemMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        options: None,
        kernel_option: "CONFIG_SYSFS=y",
    },
    SystemMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        options: Some("mode=0755"),
        kernel_option: "CONFIG_DEVTMPFS=y",
    },
    SystemMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        // A private instance whose ptmx anyone may open, so /dev/ptmx (which the kernel
        // resolves through the sibling `pts` directory) works for every user.
        options: Some("newinstance,ptmxmode=0666,mode=0620"),
        kernel_option: "CONFIG_UNIX98_PTYS=y",
    },
    SystemMount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        options: Some("mode=1777"),
        kernel_option: "CONFIG_TMPFS=y",
    },
    SystemMount {
        source: "run",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        options: Some("mode=0755"),
        kernel_option: "CONFIG_TMPFS=y",
    },
];

/// The links that programs expect in /dev but devtmpfs does not create (bash process
/// substitution uses /dev/fd, many scripts write to /dev/stderr).
pub const DEV_LINKS: [(&str, &str); 4] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

#[derive(Debug, Error)]
pub enum MountError {
    #[error(
        "cannot create mount point {}: {source}; the root it is in must be writable",
        target.display()
    )]
    MountPoint { target: PathBuf, source: io::Error },

    #[error(
        "cannot mount {fstype} on {}: the guest kernel has no {fstype} file system; \
         build the guest kernel with {kernel_option}",
        target.display()
    )]
    FilesystemMissing {
        fstype: &'static str,
        target: PathBuf,
        kernel_option: &'static str,
    },

    #[error(
        "cannot mount {fstype} on {}: {errno}; check the guest kernel's {kernel_option} \
         and that guest-init runs as PID 1 with all capabilities",
        target.display()
    )]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        kernel_option: &'static str,
        errno: Errno,
    },

    #[error(
        "cannot create the symlink {} -> {target}: {source}; the /dev mount is not writable",
        link.display()
    )]
    Link {
        link: PathBuf,
        target: &'static str,
        source: io::Error,
    },
}

/// Mounts every system file system and creates the /dev links.
pub fn mount_system() -> Result<(), MountError> {
    mount_system_under(Path::new("/"))
}

/// The same as `mount_system`, inside the directory `root` (which is going to become a root):
/// `/proc` is mounted on `root/proc`, and so on. Missing mount points are created.
pub fn mount_system_under(root: &Path) -> Result<(), MountError> {
    for mount in &SYSTEM_MOUNTS {
        mount_one(mount, &under(root, mount.target))?;
    }
    create_dev_links(root)
}

/// `path` (absolute) re-rooted at `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn mount_one(mount: &SystemMount, target: &Path) -> Result<(), MountError> {
    fs::create_dir_all(target).map_err(|source| MountError::MountPoint {
        target: target.to_path_buf(),
        source,
    })?;
    if is_mount_point(target) {
        return Ok(());
    }
    nix::mount::mount(
        Some(mount.source),
        target,
        Some(mount.fstype),
        mount.flags,
        mount.options,
    )
    .map_err(|errno| mount_error(mount, target, errno))
}

fn mount_error(mount: &SystemMount, target: &Path, errno: Errno) -> MountError {
    if errno == Errno::ENODEV {
        MountError::FilesystemMissing {
            fstype: mount.fstype,
            target: target.to_path_buf(),
            kernel_option: mount.kernel_option,
        }
    } else {
        MountError::Mount {
            fstype: mount.fstype,
            target: target.to_path_buf(),
            kernel_option: mount.kernel_option,
            errno,
        }
    }
}

/// A directory is a mount point when it lives on another device than its parent. An error
/// (say, no parent) counts as "not mounted": mounting then reports the real problem.
pub fn is_mount_point(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return false;
    };
    match (fs::metadata(path), fs::metadata(parent)) {
        (Ok(dir), Ok(parent)) => dir.dev() != parent.dev(),
        _ => false,
    }
}

/// The read-ahead window given to a virtio-fs mount, in KiB: a whole 2 MiB static binary in
/// one window. The kernel's default of 128 KiB makes an exec through virtio-fs fault its
/// pages in over many small requests, each a round trip to the VMM; measured in the
/// emulated KVM host (issue 15), the first exec of a 2 MiB busybox took 52-75 ms with 128 KiB
/// and 40-50 ms with 2048 KiB. Requests stay at most 1 MiB each (the VMM's max_pages).
pub const VIRTIOFS_READ_AHEAD_KB: u32 = 2048;

/// Widens the read-ahead of the virtio-fs mount at `mount_point` to
/// [`VIRTIOFS_READ_AHEAD_KB`], through its backing device's `/sys/class/bdi/MAJOR:MINOR/
/// read_ahead_kb`. Best effort: a share works the same without it, only slower.
pub fn widen_read_ahead(mount_point: &Path) {
    if let Ok(meta) = fs::metadata(mount_point) {
        let _ = fs::write(
            read_ahead_file(meta.dev()),
            VIRTIOFS_READ_AHEAD_KB.to_string(),
        );
    }
}

/// The read-ahead knob of the backing device `dev` (a FUSE mount's bdi is named after its
/// anonymous device, `0:N`).
fn read_ahead_file(dev: u64) -> String {
    format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    )
}

/// The links go into devtmpfs, which is one instance however often it is mounted, so under a
/// new root they usually exist already.
fn create_dev_links(root: &Path) -> Result<(), MountError> {
    for (link, target) in DEV_LINKS {
        let link = under(root, link);
        match std::os::unix::fs::symlink(target, &link) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(MountError::Link {
                    link,
                    target,
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_ahead_knob_is_named_after_the_device() {
        assert_eq!(
            read_ahead_file(nix::sys::stat::makedev(0, 18)),
            "/sys/class/bdi/0:18/read_ahead_kb"
        );
        assert_eq!(
            read_ahead_file(nix::sys::stat::makedev(259, 3)),
            "/sys/class/bdi/259:3/read_ahead_kb"
        );
    }

    #[test]
    fn parents_are_mounted_before_children() {
        for (index, mount) in SYSTEM_MOUNTS.iter().enumerate() {
            let mut parent = Path::new(mount.target).parent();
            while let Some(dir) = parent {
                if let Some(parent_index) = SYSTEM_MOUNTS
                    .iter()
                    .position(|m| Path::new(m.target) == dir)
                {
                    assert!(parent_index < index, "{} before its parent", mount.target);
                }
                parent = dir.parent();
            }
        }
    }

    #[test]
    fn the_documented_set_is_mounted() {
        let targets: Vec<_> = SYSTEM_MOUNTS.iter().map(|m| m.target).collect();
        for wanted in ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run"] {
            assert!(targets.contains(&wanted), "{wanted} missing");
        }
        let devpts = SYSTEM_MOUNTS.iter().find(|m| m.fstype == "devpts");
        let options = devpts.and_then(|m| m.options).unwrap_or_default();
        assert!(options.contains("newinstance") && options.contains("ptmxmode=0666"));
    }

    #[test]
    fn missing_filesystem_names_the_kernel_option() {
        let message =
            mount_error(&SYSTEM_MOUNTS[3], Path::new("/dev/pts"), Errno::ENODEV).to_string();
        assert!(message.contains("/dev/pts"), "{message}");
        assert!(message.contains("CONFIG_UNIX98_PTYS=y"), "{message}");
        let other = mount_error(&SYSTEM_MOUNTS[0], Path::new("/proc"), Errno::EPERM).to_string();
        assert!(
            other.contains("/proc") && other.contains("EPERM"),
            "{other}"
        );
        assert!(!other.contains('\n'));
    }

    #[test]
    fn mounts_under_a_new_root_go_below_it() {
        assert_eq!(under(Path::new("/"), "/dev/pts"), PathBuf::from("/dev/pts"));
        assert_eq!(
            under(Path::new("/rkt/share/root"), "/dev/pts"),
            PathBuf::from("/rkt/share/root/dev/pts")
        );
        let message = mount_error(
            &SYSTEM_MOUNTS[0],
            Path::new("/rkt/share/root/proc"),
            Errno::EBUSY,
        )
        .to_string();
        assert!(message.contains("/rkt/share/root/proc"), "{message}");
    }

    #[test]
    fn detects_mount_points() {
        // On any Linux host /proc is its own file system and a fresh temporary directory is not.
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
        assert!(!is_mount_point(Path::new("/")));
        assert!(!is_mount_point(&dir.path().join("missing")));
    }
}
