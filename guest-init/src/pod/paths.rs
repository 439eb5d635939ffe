//! Masked and read-only paths under the app's /proc and /sys: what rkt's stage1 applied unless
//! `--insecure-options=paths` (here `rkt.disable=paths`). Kernel interfaces that let an app read
//! the guest's memory or keys, trigger sysrq, or retune the whole guest kernel are hidden or
//! made read-only; the rest of /proc and /sys stays as the OS spec promises.
//!
//! Masking a file binds the app's own /dev/null over it (reads are empty, writes vanish); a
//! directory gets an empty read-only tmpfs. A path the guest kernel does not have is skipped.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::MsFlags;
use thiserror::Error;

use super::rootfs::{fd_path, AppRoot};

/// Hidden from the app.
pub const MASKED: [&str; 10] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
];

/// Visible, not writable (/sys is mounted read-only already by mounts.rs).
pub const READ_ONLY: [&str; 7] = [
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
    "/proc/asound",
    "/sys",
];

#[derive(Debug, Error)]
#[error("cannot {what} {path}: {source}")]
pub struct PathError {
    what: &'static str,
    path: &'static str,
    source: io::Error,
}

/// Applies both lists inside `root` (in the app's own mount namespace: appns.rs).
pub fn apply(root: &AppRoot) -> Result<(), PathError> {
    let null = root
        .open_path(Path::new("/dev/null"))
        .map_err(|source| PathError {
            what: "find the app's",
            path: "/dev/null",
            source,
        })?;
    for path in MASKED {
        let Some(target) = existing(root, path)? else {
            continue;
        };
        let is_dir = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&target))
            .is_ok_and(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFDIR);
        let result = if is_dir {
            nix::mount::mount(
                Some("masked"),
                &fd_path(&target),
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=0555"),
            )
        } else {
            nix::mount::mount(
                Some(&fd_path(&null)),
                &fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(|errno| PathError {
            what: "mask",
            path,
            source: errno.into(),
        })?;
    }
    for path in READ_ONLY {
        let Some(target) = existing(root, path)? else {
            continue;
        };
        read_only(root, &target, path).map_err(|source| PathError {
            what: "make read-only",
            path,
            source,
        })?;
    }
    Ok(())
}

/// The path's O_PATH descriptor, `None` when the guest kernel does not provide it.
fn existing(root: &AppRoot, path: &'static str) -> Result<Option<OwnedFd>, PathError> {
    match root.open_path(Path::new(path)) {
        Ok(fd) => Ok(Some(fd)),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(source) => Err(PathError {
            what: "find",
            path,
            source,
        }),
    }
}

/// Binds the path onto itself and makes that mount read-only. The remount needs the new
/// mount's root, which a fresh lookup reaches (the old descriptor names the mount below). A
/// bind remount keeps only the flags it is given, so /proc's nosuid, nodev, noexec are given
/// again.
fn read_only(root: &AppRoot, target: &OwnedFd, path: &str) -> io::Result<()> {
    let below = fd_path(target);
    nix::mount::mount(
        Some(&below),
        &below,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    let top = root.open_path(Path::new(path))?;
    nix::mount::mount(
        None::<&str>,
        &fd_path(&top),
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_cover_rkt_paths() {
        for path in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/proc/sched_debug",
        ] {
            assert!(MASKED.contains(&path), "{path}");
        }
        for path in [
            "/proc/sys",
            "/proc/sysrq-trigger",
            "/proc/irq",
            "/proc/bus",
            "/sys",
        ] {
            assert!(READ_ONLY.contains(&path), "{path}");
        }
        assert!(MASKED
            .iter()
            .chain(READ_ONLY.iter())
            .all(|p| p.starts_with('/')));
    }
}
