//! `--disk-limit`: a bound on the disk a pod may fill, as a project quota on its directory.
//!
//! Everything a pod writes on the host lands in its directory: the overlay's upper directories
//! (the guest's writes to its apps' root file systems, through virtio-fs), `kind=empty`
//! volumes, and the copied images of a `--no-overlay` pod. Without a bound a hostile guest fills
//! the file system holding rkt's data directory and every other pod on it with it. The bound is
//! a project quota: the pod directory gets a project id of its own with the inherit flag (so
//! everything created below it is charged to that project) and the project a block and an
//! inode hard limit. The kernel enforces it for the jailed VMM's file server, which holds no
//! CAP_SYS_RESOURCE (the capability that lets a writer ignore quotas).
//!
//! Project quotas exist on ext4 (features `quota,project`, mounted with `prjquota`) and XFS
//! (mounted with `prjquota`/`pquota`). On a file system without them the flag is refused with
//! what to change: an accepted bound that does not hold would be worse than none. Host volumes
//! (`kind=host`) are the user's own directories, outside the pod: they are not bounded here.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use thiserror::Error;

/// The file in the pod directory recording the project id (so that removing the pod can clear
/// the project's limits): written by stage0, read only by stage0.
pub const PROJECT_FILE: &str = "disk-quota-project";

/// One inode allowed per this many bytes of the limit (and at least [`MIN_INODES`]): a pod
/// must not be able to exhaust the file system's inodes with empty files either.
const BYTES_PER_INODE: u64 = 4096;
const MIN_INODES: u64 = 16 * 1024;
/// Project ids rkt hands out: 0x5254_0000 ("RT") plus the low bits of a hash of the pod's
/// UUID, well away from the small ids administrators assign by hand in /etc/projid.
const PROJECT_BASE: u32 = 0x5254_0000;
const PROJECT_SPAN: u32 = 0x1_0000;
/// How many ids after the hashed one are tried when it is taken.
const PROBES: u32 = 64;

/// `PRJQUOTA` from the kernel's `quota.h` (libc has the user and group types only).
const PRJQUOTA: libc::c_int = 2;
/// `QIF_ILIMITS` (libc has `QIF_BLIMITS`).
const QIF_ILIMITS: u32 = 4;
/// `FS_XFLAG_PROJINHERIT`: new entries below the directory take its project id.
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// The kernel's `struct fsxattr` (`linux/fs.h`), for FS_IOC_FS{GET,SET}XATTR.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// The kernel's `struct if_dqinfo` (`linux/quota.h`), which Q_GETINFO fills.
#[repr(C)]
#[derive(Default)]
struct QuotaInfo {
    bgrace: u64,
    igrace: u64,
    flags: u32,
    valid: u32,
}

nix::ioctl_read!(fs_get_xattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(fs_set_xattr, b'X', 32, FsXattr);

/// Why a pod's disk could not be bounded.
#[derive(Debug, Error)]
pub enum QuotaError {
    #[error(
        "--disk-limit: the file system holding {dir} does not keep project quotas ({reason}); \
         mount it with the prjquota option (ext4 also needs `tune2fs -O quota,project` while \
         unmounted), or leave out --disk-limit"
    )]
    Unsupported { dir: String, reason: String },
    #[error("--disk-limit: every project id rkt tries for pod {uuid} is in use")]
    NoFreeProject { uuid: String },
    #[error("--disk-limit: {what} on {dir}: {source}")]
    System {
        what: &'static str,
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// A project's usage and limits, as `quotactl(Q_GETQUOTA)` reports them.
fn get_quota(dir: BorrowedFd<'_>, project: u32) -> std::io::Result<libc::dqblk> {
    // SAFETY: dqblk is plain old data; all zeroes is a valid value.
    let mut quota: libc::dqblk = unsafe { std::mem::zeroed() };
    quotactl(dir, libc::Q_GETQUOTA, project, &mut quota)?;
    Ok(quota)
}

/// `quotactl_fd(2)` on the file system holding `dir`.
fn quotactl(
    dir: BorrowedFd<'_>,
    command: libc::c_int,
    id: u32,
    data: &mut libc::dqblk,
) -> std::io::Result<()> {
    // SAFETY: quotactl_fd reads or writes one dqblk at `data`, which outlives the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            dir.as_raw_fd(),
            libc::QCMD(command, PRJQUOTA) as libc::c_uint,
            id as libc::c_int,
            data as *mut libc::dqblk,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether the file system holding `dir` enforces project quotas; the kernel's reason if not.
fn check_supported(dir: BorrowedFd<'_>) -> Result<(), String> {
    let mut info = QuotaInfo::default();
    // SAFETY: Q_GETINFO writes one dqinfo at `info`, which outlives the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            dir.as_raw_fd(),
            libc::QCMD(libc::Q_GETINFO, PRJQUOTA) as libc::c_uint,
            0,
            &mut info as *mut QuotaInfo,
        )
    };
    if done == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ESRCH) => "project quotas are not turned on".to_string(),
        Some(libc::ENOSYS) => "this kernel has no quotactl_fd".to_string(),
        Some(libc::ENOTTY | libc::EINVAL | libc::ENOTSUP) => "it has no quota support".to_string(),
        _ => err.to_string(),
    })
}

/// What failed (`what`) on directory `dir`, for `map_err`.
fn system(what: &'static str, dir: &Path) -> impl FnOnce(std::io::Error) -> QuotaError {
    let dir = dir.display().to_string();
    move |source| QuotaError::System { what, dir, source }
}

/// Refuses `--disk-limit` where the file system holding `dir` keeps no project quotas.
pub fn check(dir: &Path) -> Result<(), QuotaError> {
    let opened =
        super::safe_read::open_host_dir(dir).map_err(system("opening the directory", dir))?;
    check_supported(opened.as_fd()).map_err(|reason| QuotaError::Unsupported {
        dir: dir.display().to_string(),
        reason,
    })
}

/// The project id for pod `uuid`: FNV-1a of the UUID folded into rkt's range.
fn hashed_project(uuid: &str) -> u32 {
    let hash = uuid.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    PROJECT_BASE + hash % PROJECT_SPAN
}

/// Bounds what may be written below `pod_dir` (a new, still empty pod directory) to `bytes`;
/// returns the project id used, also recorded in [`PROJECT_FILE`].
pub fn limit(pod_dir: &Path, uuid: &str, bytes: u64) -> Result<u32, QuotaError> {
    let shown = pod_dir.display().to_string();
    let system = |what: &'static str| system(what, pod_dir);
    let dir =
        super::safe_read::open_host_dir(pod_dir).map_err(system("opening the pod directory"))?;
    check_supported(dir.as_fd()).map_err(|reason| QuotaError::Unsupported {
        dir: shown.clone(),
        reason,
    })?;
    let project = free_project(&dir, uuid)?;
    // Limits first, then the id: a directory charged to a project without limits would be an
    // unbounded pod if we stopped in between.
    set_limits(&dir, project, bytes).map_err(system("setting the project's limits"))?;
    let mut attrs = FsXattr::default();
    // SAFETY: the ioctl fills one fsxattr at `attrs`.
    unsafe { fs_get_xattr(dir.as_raw_fd(), &mut attrs) }
        .map_err(|e| system("reading the directory's project")(e.into()))?;
    attrs.projid = project;
    attrs.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: the ioctl reads one fsxattr at `attrs`.
    unsafe { fs_set_xattr(dir.as_raw_fd(), &attrs) }
        .map_err(|e| system("giving the directory its project")(e.into()))?;
    std::fs::write(pod_dir.join(PROJECT_FILE), project.to_string())
        .map_err(system("recording the project id"))?;
    Ok(project)
}

/// The first id from the pod's hashed one that no other directory uses and has no limits.
fn free_project(dir: &File, uuid: &str) -> Result<u32, QuotaError> {
    let first = hashed_project(uuid);
    for step in 0..PROBES {
        let project = PROJECT_BASE + (first - PROJECT_BASE + step) % PROJECT_SPAN;
        match get_quota(dir.as_fd(), project) {
            Ok(q) if q.dqb_curspace == 0 && q.dqb_curinodes == 0 && q.dqb_bhardlimit == 0 => {
                return Ok(project)
            }
            Ok(_) => continue,
            // No record of the id at all: free.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(project),
            Err(source) => {
                return Err(QuotaError::System {
                    what: "reading the project's usage",
                    dir: uuid.to_string(),
                    source,
                })
            }
        }
    }
    Err(QuotaError::NoFreeProject {
        uuid: uuid.to_string(),
    })
}

/// Hard (and soft) limits of `bytes` and the inodes that go with them; zero clears them.
fn set_limits(dir: &File, project: u32, bytes: u64) -> std::io::Result<()> {
    let inodes = if bytes == 0 {
        0
    } else {
        (bytes / BYTES_PER_INODE).max(MIN_INODES)
    };
    // SAFETY: dqblk is plain old data; all zeroes is a valid value.
    let mut quota: libc::dqblk = unsafe { std::mem::zeroed() };
    // Blocks are quota blocks of 1 KiB.
    quota.dqb_bhardlimit = bytes.div_ceil(1024);
    quota.dqb_bsoftlimit = quota.dqb_bhardlimit;
    quota.dqb_ihardlimit = inodes;
    quota.dqb_isoftlimit = inodes;
    quota.dqb_valid = libc::QIF_BLIMITS | QIF_ILIMITS;
    quotactl(dir.as_fd(), libc::Q_SETQUOTA, project, &mut quota)
}

/// The project recorded in `pod_dir` by [`limit`], if any (one of the ids rkt hands out).
pub fn project_of(pod_dir: &Path) -> Option<u32> {
    recorded_project(&super::safe_read::open_host_dir(pod_dir).ok()?)
}

/// [`project_of`] the opened pod directory `dir`.
fn recorded_project(dir: &File) -> Option<u32> {
    let bytes =
        super::safe_read::read_optional(dir.as_fd(), Path::new(PROJECT_FILE), 16).ok()??;
    let project = String::from_utf8(bytes).ok()?.trim().parse::<u32>().ok()?;
    // Not an id rkt hands out: never touch another project's limits.
    (PROJECT_BASE..PROJECT_BASE + PROJECT_SPAN)
        .contains(&project)
        .then_some(project)
}

/// Takes directory `dir` (empty, made by the host) out of the pod's project: what is created
/// below it from then on belongs to no project and is not bounded.
pub fn exclude(dir: &Path) -> Result<(), QuotaError> {
    let system = |what: &'static str| system(what, dir);
    let opened = super::safe_read::open_host_dir(dir).map_err(system("opening the directory"))?;
    let mut attrs = FsXattr::default();
    // SAFETY: the ioctl fills one fsxattr at `attrs`.
    unsafe { fs_get_xattr(opened.as_raw_fd(), &mut attrs) }
        .map_err(|e| system("reading the directory's project")(e.into()))?;
    attrs.projid = 0;
    attrs.xflags &= !FS_XFLAG_PROJINHERIT;
    // SAFETY: the ioctl reads one fsxattr at `attrs`.
    unsafe { fs_set_xattr(opened.as_raw_fd(), &attrs) }
        .map_err(|e| system("taking the directory out of the pod's project")(e.into()))?;
    Ok(())
}

/// Clears the limits of the project recorded in `pod_dir` (called before the directory goes,
/// so that a later pod can reuse the id). A pod without a limit has nothing to clear.
pub fn release(pod_dir: &Path) -> Result<(), QuotaError> {
    // A directory that cannot be opened records nothing we could read: nothing to clear.
    let Ok(dir) = super::safe_read::open_host_dir(pod_dir) else {
        return Ok(());
    };
    let Some(project) = recorded_project(&dir) else {
        return Ok(());
    };
    set_limits(&dir, project, 0).map_err(system("clearing the project's limits", pod_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_stay_in_rkts_range() {
        for uuid in ["", "0", "1f2e3d4c-0000-4000-8000-000000000000", "ffffffff"] {
            let id = hashed_project(uuid);
            assert!(
                (PROJECT_BASE..PROJECT_BASE + PROJECT_SPAN).contains(&id),
                "{id:#x}"
            );
        }
        assert_ne!(hashed_project("a"), hashed_project("b"));
    }

    /// The unit tests' temporary directory keeps no project quotas (tmpfs, overlay, or a
    /// kernel without quota support): the limit is refused there, naming the fix, and the
    /// directory is left as it was. Where quotas hold is `tests/vm_jail.rs`'s business.
    #[test]
    fn a_file_system_without_project_quotas_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = limit(dir.path(), "uuid", 1 << 20).unwrap_err();
        assert!(matches!(err, QuotaError::Unsupported { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("prjquota") && text.contains("--disk-limit"),
            "{text}"
        );
        assert!(!dir.path().join(PROJECT_FILE).exists());
        assert!(check(dir.path()).is_err());
        // Nothing recorded, nothing to release.
        release(dir.path()).unwrap();
    }
}
