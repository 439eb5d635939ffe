//! Deleting one pod directory for good (gc's sweep and `rkt rm`): stage1's
//! gc hook, then every mount under the pod, then the files.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::state::{Pod, PodState};
use super::{mounts, safe_read, stage1, PodError};

/// Removes `pod`, which must be in `exited-garbage/` or `garbage/` and
/// exclusively locked by us (so nobody else is deleting or reading it).
/// What the pod ran (stage1's resources, mounts) is released first; if any
/// of that fails the files stay, so a later gc can try again.
pub fn delete(pod: &Pod, local_config: &Path) -> Result<(), PodError> {
    if !matches!(
        pod.state(),
        PodState::ExitedGarbage | PodState::Garbage | PodState::ExitedDeleting | PodState::Deleting
    ) {
        return Err(PodError::WrongState {
            uuid: pod.uuid.to_string(),
            state: pod.state().as_str(),
            action: "delete",
        });
    }
    let path = pod.path();
    if matches!(
        pod.state(),
        PodState::ExitedGarbage | PodState::ExitedDeleting
    ) {
        stage1::run_stage1_gc(pod, local_config)?;
    }
    // Pods that never ran have nothing mounted, unless a `run` died between
    // mounting and renaming; unmounting costs nothing either way.
    mounts::unmount_all_under(&path).map_err(PodError::io(format!(
        "unmounting what is left mounted under pod {}",
        pod.uuid
    )))?;
    // The project's limits go with the pod, so that its id is free again.
    if let Err(err) = super::quota::release(&path) {
        eprintln!("rkt: warning: pod {}: {err}", pod.uuid);
    }
    remove_tree(&path).map_err(PodError::io(format!("removing {}", path.display())))
}

/// `remove_dir_all`, retried once after giving the owner write permission
/// on every directory (image trees may hold read-only directories, which
/// stop a non-root user).
///
/// Neither step follows a link out of the pod, even one planted while we
/// work: std's `remove_dir_all` opens each directory with `openat(...,
/// O_NOFOLLOW)` relative to its parent's descriptor and unlinks entries with
/// `unlinkat`, so a symlink is removed, never entered; and
/// [`make_dirs_writable`] walks by descriptors the same way and changes
/// modes with `fchmod` on the directory it opened, never by path.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        Err(err) => Err(err),
    }
}

/// Adds owner rwx to `path` and every directory below it, walking by
/// descriptors: each child is opened with `openat(parent, name, O_DIRECTORY
/// | O_NOFOLLOW)`, so a symlink (planted before or during the walk) is
/// refused by the kernel, not followed, and the mode is set with `fchmod` on
/// what was opened. (The old way, `lstat` then `chmod(path)`, could be
/// raced: a directory swapped for a link after the `lstat` had `chmod`
/// follow it out of the pod.)
fn make_dirs_writable(path: &Path) -> io::Result<()> {
    let top = safe_read::open_host_dir(path)?;
    make_writable_below(top)
}

fn make_writable_below(dir: File) -> io::Result<()> {
    let meta = dir.metadata()?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o700 != 0o700 {
        // fchmod on our descriptor: the directory we opened, nothing a path now names.
        dir.set_permissions(fs::Permissions::from_mode(mode | 0o700))?;
    }
    // Names only (d_type from getdents: no stat, no follow), through the directory's own
    // descriptor.
    let mut children = Vec::new();
    for entry in fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        let entry = entry?;
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            children.push(entry.file_name());
        }
    }
    for name in children {
        match open_child_dir(&dir, &name) {
            Ok(child) => make_writable_below(child)?,
            // Gone, or no longer a directory (a link put in its place is refused here:
            // ELOOP/ENOTDIR): nothing of ours to make writable.
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR)
                ) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// `openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)`.
fn open_child_dir(parent: &File, name: &OsStr) -> io::Result<File> {
    let name = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name with a NUL byte"))?;
    // SAFETY: `name` is NUL-terminated and outlives the call; openat returns a new descriptor
    // or -1 and touches no memory of ours otherwise.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_trees_with_read_only_directories() {
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("tree");
        fs::create_dir_all(tree.join("ro/inner")).unwrap();
        fs::write(tree.join("ro/inner/file"), b"x").unwrap();
        fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        remove_tree(&tree).unwrap(); // already gone is fine
    }

    /// A pod tree full of links to a canary directory outside it, some inside read-only
    /// directories (so the make-writable walk runs): after removal the canary is untouched,
    /// its mode included.
    #[test]
    fn removing_a_pod_never_follows_links_out_of_it() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let canary = root.path().join("canary");
        fs::create_dir_all(canary.join("inner")).unwrap();
        fs::write(canary.join("file"), b"keep me").unwrap();
        fs::set_permissions(&canary, fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(canary.join("inner"), fs::Permissions::from_mode(0o500)).unwrap();

        let pod = root.path().join("pod");
        let status = pod.join("stage1/rootfs/rkt/status");
        fs::create_dir_all(&status).unwrap();
        fs::create_dir_all(pod.join("ro/deeper")).unwrap();
        symlink(&canary, pod.join("link-dir")).unwrap();
        symlink(canary.join("file"), status.join("web")).unwrap();
        symlink(&canary, pod.join("ro/link")).unwrap();
        symlink(canary.join("inner"), pod.join("ro/deeper/inner")).unwrap();
        symlink("../../../canary", pod.join("ro/deeper/relative")).unwrap();
        fs::set_permissions(pod.join("ro/deeper"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(pod.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();

        // The walk alone, as a non-root user needs it: links are skipped, modes kept.
        make_dirs_writable(&pod).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&canary), 0o555);
        assert_eq!(mode(&canary.join("inner")), 0o500);
        fs::set_permissions(pod.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();

        remove_tree(&pod).unwrap();
        assert!(!pod.exists());
        assert_eq!(fs::read(canary.join("file")).unwrap(), b"keep me");
        assert!(canary.join("inner").is_dir());
        assert_eq!(mode(&canary), 0o555);
        assert_eq!(mode(&canary.join("inner")), 0o500);
        fs::set_permissions(&canary, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(canary.join("inner"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}
