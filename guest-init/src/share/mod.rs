//! Running the command inside a virtio-fs share.
//!
//! The kernel command line names the share and what to do with it (see `request` and
//! docs/foundation.md, "guest-init: running a command inside a virtio-fs share"):
//! `rkt.share=TAG` mounts the share at /rkt/share, `rkt.root=DIR` makes a directory of it the
//! command's root, `rkt.status=FILE` receives the exit status. guest-init chroots itself (not
//! only the command): PATH lookup then happens in the new root, and the rootfs of an initramfs
//! cannot be pivot_root'ed away anyway.

mod request;
mod status_file;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use thiserror::Error;

use crate::cmdline;
use crate::error::STATUS_SETUP_FAILED;
use crate::mounts::{self, MountError};

pub use request::{SharePath, ShareRequest, PARAM_ROOT, PARAM_SHARE, PARAM_STATUS};
pub use status_file::StatusFile;

/// Where the share is mounted, in the initramfs root.
pub const SHARE_MOUNT_POINT: &str = "/rkt/share";
const VIRTIOFS: &str = "virtiofs";

#[derive(Debug, Error)]
pub enum ShareError {
    #[error("cannot read /proc/cmdline: {0}; the guest kernel needs CONFIG_PROC_FS=y")]
    CmdlineUnreadable(io::Error),

    #[error(
        "{param} is set but rkt.share is not; add rkt.share=TAG naming the virtio-fs share \
         that {param} refers to"
    )]
    NeedsShare { param: &'static str },

    #[error(
        "rkt.share={tag:?} is not a valid virtio-fs tag: {reason}; use the tag the VMM gives \
         the share"
    )]
    InvalidTag { tag: String, reason: &'static str },

    #[error(
        "{param}={value} is not allowed: {reason}; give a path relative to the share's root, \
         without `..` components"
    )]
    InvalidPath {
        param: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error(
        "cannot create the mount point {SHARE_MOUNT_POINT}: {0}; the initramfs root must be \
         writable"
    )]
    MountPoint(io::Error),

    #[error(
        "cannot mount the virtio-fs share {tag:?}: the guest kernel has no virtiofs file \
         system; build the guest kernel with CONFIG_VIRTIO_FS=y"
    )]
    NoVirtiofs { tag: String },

    #[error(
        "cannot mount the virtio-fs share {tag:?}: no virtio-fs device has that tag ({errno}); \
         give the VMM a share with tag {tag:?} or fix rkt.share="
    )]
    NoSuchTag { tag: String, errno: Errno },

    #[error(
        "cannot mount the virtio-fs share {tag:?} on {SHARE_MOUNT_POINT}: {errno}; check the \
         VMM's virtio-fs device and the guest kernel's log"
    )]
    Mount { tag: String, errno: Errno },

    #[error(
        "rkt.root={value}: {} is not a usable directory on the share {tag:?} ({reason}); \
         create it in the shared host directory with the command's files (for example busybox)",
        path.display()
    )]
    RootMissing {
        value: String,
        tag: String,
        path: PathBuf,
        reason: String,
    },

    #[error("cannot set up the system mounts of rkt.root: {0}")]
    RootMounts(#[from] MountError),

    #[error(
        "cannot change the root to {}: {errno}; guest-init must run as PID 1 with all \
         capabilities",
        path.display()
    )]
    ChangeRoot { path: PathBuf, errno: Errno },

    #[error(
        "rkt.status={param_value}: cannot open its directory {}: {source}; create the \
         directory in the shared host directory before the VM starts",
        directory.display()
    )]
    StatusDirectory {
        param_value: String,
        directory: PathBuf,
        source: io::Error,
    },

    #[error(
        "rkt.status={param_value}: cannot write the exit status: {source}; the share must be \
         writable (not read-only) and the directory must not hold a symlink at the temporary \
         name"
    )]
    StatusWrite {
        param_value: String,
        source: io::Error,
    },
}

impl ShareError {
    /// Every share problem is a set-up failure: the command never ran because of it.
    pub fn exit_status(&self) -> u8 {
        STATUS_SETUP_FAILED
    }
}

/// Carries out the share parameters among `params` (the kernel's, from /proc/cmdline): mounts
/// the share, opens the status file's directory, enters the root. Without share parameters it
/// does nothing.
///
/// The status file is handed out through `status_file` as soon as it is open, before the
/// remaining steps, because a later failure must still be reported in it.
pub fn set_up_from_params(
    params: &[cmdline::KernelParam],
    status_file: &mut Option<StatusFile>,
) -> Result<(), ShareError> {
    match ShareRequest::from_params(params)? {
        Some(request) => set_up(&request, status_file),
        None => Ok(()),
    }
}

fn set_up(request: &ShareRequest, status_file: &mut Option<StatusFile>) -> Result<(), ShareError> {
    let share = Path::new(SHARE_MOUNT_POINT);
    mount_share(&request.tag, share)?;
    if let Some(status) = &request.status {
        *status_file = Some(StatusFile::open(share, status)?);
    }
    if let Some(root) = &request.root {
        enter_root(&request.tag, share, root)?;
    }
    Ok(())
}

/// `mount("TAG", "/rkt/share", "virtiofs", 0, NULL)`, after creating the mount point.
fn mount_share(tag: &str, mount_point: &Path) -> Result<(), ShareError> {
    fs::create_dir_all(mount_point).map_err(ShareError::MountPoint)?;
    if mounts::is_mount_point(mount_point) {
        // Mounted by an earlier guest-init run (or by hand): use it as it is.
        return Ok(());
    }
    nix::mount::mount(
        Some(tag),
        mount_point,
        Some(VIRTIOFS),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| mount_error(tag, errno))?;
    mounts::widen_read_ahead(mount_point);
    Ok(())
}

fn mount_error(tag: &str, errno: Errno) -> ShareError {
    let tag = tag.to_owned();
    match errno {
        Errno::ENODEV => ShareError::NoVirtiofs { tag },
        // The kernel answers EINVAL ("virtio-fs: tag <...> not found" in its log) for a tag no
        // device announces.
        Errno::EINVAL | Errno::ENOENT => ShareError::NoSuchTag { tag, errno },
        errno => ShareError::Mount { tag, errno },
    }
}

/// Makes `share/root` the root of guest-init and therefore of the command, with the system
/// file systems mounted inside it.
fn enter_root(tag: &str, share: &Path, root: &SharePath) -> Result<(), ShareError> {
    let path = share.join(root.relative());
    check_root_directory(tag, &path, root)?;
    mounts::mount_system_under(&path)?;
    nix::unistd::chroot(&path).map_err(|errno| ShareError::ChangeRoot {
        path: path.clone(),
        errno,
    })?;
    // chroot leaves the working directory outside the new root; PID 1's is "/".
    nix::unistd::chdir("/").map_err(|errno| ShareError::ChangeRoot { path, errno })
}

fn check_root_directory(tag: &str, path: &Path, root: &SharePath) -> Result<(), ShareError> {
    let reason = match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(_) => "not a directory".to_owned(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => "it does not exist".to_owned(),
        Err(error) => error.to_string(),
    };
    Err(ShareError::RootMissing {
        value: root.as_written().to_string_lossy().into_owned(),
        tag: tag.to_owned(),
        path: path.to_path_buf(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn root(value: &str) -> SharePath {
        SharePath::parse(request::PARAM_ROOT, OsStr::new(value)).expect("valid path")
    }

    #[test]
    fn mount_errors_name_the_cause_and_the_fix() {
        let missing = mount_error("pod", Errno::ENODEV).to_string();
        assert!(missing.contains("CONFIG_VIRTIO_FS=y"), "{missing}");
        let unknown = mount_error("pod", Errno::EINVAL).to_string();
        assert!(
            unknown.contains("no virtio-fs device has that tag"),
            "{unknown}"
        );
        assert!(unknown.contains("\"pod\""), "{unknown}");
        let other = mount_error("pod", Errno::EIO).to_string();
        assert!(other.contains("EIO"), "{other}");
        for message in [missing, unknown, other] {
            assert!(!message.contains('\n'));
            assert!(message.contains("; "), "{message}");
        }
    }

    #[test]
    fn missing_root_directory_is_a_clear_setup_failure() {
        let share = tempfile::tempdir().unwrap();
        let error = check_root_directory("pod", &share.path().join("root"), &root("root")).err();
        let message = error.as_ref().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("rkt.root=root"), "{message}");
        assert!(message.contains("does not exist"), "{message}");
        assert_eq!(error.map(|e| e.exit_status()), Some(125));

        fs::write(share.path().join("file"), "").unwrap();
        let message = check_root_directory("pod", &share.path().join("file"), &root("file"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("not a directory"), "{message}");

        fs::create_dir(share.path().join("dir")).unwrap();
        assert!(check_root_directory("pod", &share.path().join("dir"), &root("dir")).is_ok());
    }

    #[test]
    fn every_share_error_is_a_setup_failure() {
        let errors = [
            ShareError::NeedsShare { param: "rkt.root" },
            ShareError::CmdlineUnreadable(io::Error::from_raw_os_error(libc::ENOENT)),
            mount_error("pod", Errno::EINVAL),
        ];
        for error in errors {
            assert_eq!(error.exit_status(), 125, "{error}");
        }
    }
}
