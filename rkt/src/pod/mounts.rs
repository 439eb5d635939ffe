//! Unmounting whatever is mounted under a pod directory (app overlays,
//! stage1's overlay, volume binds) before the directory is removed, so gc
//! never deletes through a mount into an image tree or a host volume.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

use super::safe_read;

/// Mount points at or below `root`, deepest (most recently mounted) first,
/// from `/proc/self/mountinfo`.
pub fn mounts_under(root: &Path) -> io::Result<Vec<PathBuf>> {
    // `root` is the pod directory, a path the host made ($dir/pods/<state>/<uuid>); only its
    // resolved form appears in mountinfo, so it is canonicalized. Nothing below it is.
    let root = fs::canonicalize(root)?;
    let table = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mount_points(&table)
        .into_iter()
        .filter(|point| point.starts_with(&root))
        .rev()
        .collect())
}

/// Detaches every mount at or below `root`. Lazy (`MNT_DETACH`) so a busy
/// mount cannot keep the pod alive; the kernel finishes the unmount when
/// its last user goes.
///
/// The mount points' paths run through the pod's tree, which a guest could
/// have changed (a directory renamed, a symlink put in its place) between
/// our reading mountinfo and the unmount: `umount2(path)` would then follow
/// the link and detach a mount of the host's. So each point is opened first,
/// beneath the pod directory's descriptor with no link followed anywhere
/// (`safe_read::open_path`, `O_PATH`: nothing is opened for I/O), and the
/// unmount goes through `/proc/self/fd/N`. That magic link names exactly the
/// mount the descriptor was resolved into, whatever is renamed meanwhile, so
/// only a mount reachable inside the pod, without links, is ever detached.
/// A point that cannot be reached that way is an error: the caller keeps the
/// pod rather than delete files through a mount it could not take down.
pub fn unmount_all_under(root: &Path) -> io::Result<usize> {
    let points = match mounts_under(root) {
        Ok(points) => points,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    if points.is_empty() {
        return Ok(0);
    }
    let canonical = fs::canonicalize(root)?;
    unmount_points(&canonical, &points)?;
    // Anything still mounted under the pod (a point we could not reach) must stop the removal.
    let left = mounts_under(root)?;
    if let Some(point) = left.first() {
        return Err(io::Error::other(format!(
            "{} is still mounted after unmounting everything under {}",
            point.display(),
            root.display()
        )));
    }
    Ok(points.len())
}

/// Unmounts `points` (absolute, under the canonical pod directory `root`), each through a
/// descriptor opened beneath `root` without following links (see [`unmount_all_under`]).
fn unmount_points(root: &Path, points: &[PathBuf]) -> io::Result<()> {
    let dir = safe_read::open_host_dir(root)?;
    for point in points {
        let Ok(rel) = point.strip_prefix(root) else {
            continue;
        };
        let handle = match safe_read::open_path(dir.as_fd(), rel, 0) {
            Ok(handle) => handle,
            // Already gone with a parent mount.
            Err(err) if err.is_not_found() => continue,
            Err(err) => {
                return Err(io::Error::other(format!(
                    "not unmounting {}: {err}",
                    point.display()
                )))
            }
        };
        let through = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        match umount2(&through, MntFlags::MNT_DETACH) {
            // EINVAL: what the descriptor names is no longer a mount's root (gone with a
            // parent mount, or moved); ENOENT: gone.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(errno) => {
                return Err(io::Error::new(
                    io::Error::from(errno).kind(),
                    format!("unmounting {}: {errno}", point.display()),
                ))
            }
        }
        drop(handle);
    }
    Ok(())
}

/// The mount-point column (the fifth) of each mountinfo line, with the
/// kernel's octal escapes (`\040` for a space, ...) decoded.
fn parse_mount_points(table: &str) -> Vec<PathBuf> {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes.get(index + 1..index + 4).and_then(|digits| {
            digits.iter().all(|d| (b'0'..=b'7').contains(d)).then(|| {
                digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'))
            })
        });
        match escaped {
            Some(value) if bytes[index] == b'\\' && value <= 0xff => {
                out.push(value as u8);
                index += 4;
            }
            _ => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_points_with_escapes() {
        let table = "22 1 0:21 / / rw - ext4 /dev/root rw\n\
                     40 22 0:35 / /var/lib/rkt/pods/run/a\\040b rw - overlay overlay rw\n";
        assert_eq!(
            parse_mount_points(table),
            [
                PathBuf::from("/"),
                PathBuf::from("/var/lib/rkt/pods/run/a b")
            ]
        );
        assert_eq!(unescape_octal("x\\134y\\0"), "x\\y\\0");
    }

    #[test]
    fn finds_nothing_under_a_plain_directory_and_unmounts_a_tmpfs_as_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(mounts_under(dir.path()).unwrap().is_empty());
        if !nix::unistd::geteuid().is_root() {
            return; // mounting needs root; the parsing is covered above
        }
        let inner = dir.path().join("a/b");
        fs::create_dir_all(&inner).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &inner,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        assert_eq!(mounts_under(dir.path()).unwrap().len(), 1);
        assert_eq!(unmount_all_under(dir.path()).unwrap(), 1);
        assert!(mounts_under(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_mount_reached_through_a_planted_symlink_is_not_unmounted() {
        if !nix::unistd::geteuid().is_root() {
            return; // mounting needs root
        }
        let pod = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let host_mount = outside.path().join("b");
        fs::create_dir_all(&host_mount).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &host_mount,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        // As if mountinfo had said pod/a/b and a guest then put a link at pod/a.
        std::os::unix::fs::symlink(outside.path(), pod.path().join("a")).unwrap();
        let root = fs::canonicalize(pod.path()).unwrap();
        let err = unmount_points(&root, &[root.join("a/b")]).unwrap_err();
        let still = mounts_under(outside.path()).unwrap();
        let _ = umount2(&host_mount, MntFlags::MNT_DETACH);
        assert!(err.to_string().contains("not unmounting"), "{err}");
        assert_eq!(still.len(), 1, "the host's mount must stay: {still:?}");
    }
}
