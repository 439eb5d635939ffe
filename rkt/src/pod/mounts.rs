//! Unmounting whatever is mounted under a pod directory (app overlays,
//! stage1's overlay, volume binds) before the directory is removed, so gc
//! never deletes through a mount into an image tree or a host volume.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// Mount points at or below `root`, deepest (most recently mounted) first,
/// from `/proc/self/mountinfo`.
pub fn mounts_under(root: &Path) -> io::Result<Vec<PathBuf>> {
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
pub fn unmount_all_under(root: &Path) -> io::Result<usize> {
    let points = match mounts_under(root) {
        Ok(points) => points,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    for point in &points {
        match umount2(point, MntFlags::MNT_DETACH) {
            // Already gone with a parent mount.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(errno) => {
                return Err(io::Error::new(
                    io::Error::from(errno).kind(),
                    format!("unmounting {}: {errno}", point.display()),
                ))
            }
        }
    }
    Ok(points.len())
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
}
