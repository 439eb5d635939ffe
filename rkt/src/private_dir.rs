//! Directories only their owner (root) may enter: the image store (`cas/`)
//! and the pods directory. A cached tree holds an image's own modes (0777
//! directories, set-id files) and a pod directory what its guest wrote, so
//! another local user must not even traverse into them.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The owner only.
pub const MODE: u32 = 0o700;

/// Creates `path` and any missing parents with [`MODE`], then [`tighten`]s it
/// (it may already exist, made by an older version with a looser mode).
pub fn create(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(MODE).create(path)?;
    tighten(path)
}

/// Takes group and other permissions off directory `path` if it has any and
/// we own it (another user's directory is not ours to change; using it then
/// fails on its own). Through a descriptor opened without following a link,
/// with `fchmod`.
pub fn tighten(path: &Path) -> io::Result<()> {
    let dir = match crate::pod::safe_read::open_host_dir(path) {
        Ok(dir) => dir,
        // Not ours to open: leave it.
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
        Err(err) => return Err(err),
    };
    let meta = dir.metadata()?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    dir.set_permissions(fs::Permissions::from_mode(mode & MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_and_tightens_loose_directories() {
        let root = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let fresh = root.path().join("a/b");
        create(&fresh).unwrap();
        assert_eq!(mode(&fresh), MODE);
        assert_eq!(mode(&root.path().join("a")), MODE);
        let loose = root.path().join("loose");
        fs::create_dir(&loose).unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o1777)).unwrap();
        create(&loose).unwrap();
        assert_eq!(mode(&loose), MODE);
        // A link is not followed (and its target not changed).
        let target = root.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("link")).unwrap();
        assert!(tighten(&root.path().join("link")).is_err());
        assert_eq!(mode(&target), 0o755);
    }
}
