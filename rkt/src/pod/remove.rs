//! Deleting one pod directory for good (gc's sweep and `rkt rm`): stage1's
//! gc hook, then every mount under the pod, then the files.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::state::{Pod, PodState};
use super::{mounts, stage1, PodError};

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
    remove_tree(&path).map_err(PodError::io(format!("removing {}", path.display())))
}

/// `remove_dir_all`, retried once after giving the owner write permission
/// on every directory (image trees may hold read-only directories, which
/// stop a non-root user).
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

fn make_dirs_writable(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700))?;
    for entry in fs::read_dir(path)? {
        make_dirs_writable(&entry?.path())?;
    }
    Ok(())
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
}
