//! The pod's runtime directory on the host, `/run/rkt-kvm/<uuid>/` (docs/security.md): `sock/`
//! holds the VM's vsock socket and the host listeners for guest connections
//! (`<socket>_<port>`), and `jail/` is where the jailed VMM mounts its root (`vmm_process`). It
//! lives outside the pod directory and outside every share, root-only (0700 down to it), so the
//! guest can neither plant a socket or a link where the VMM connects nor reach another pod's
//! socket; other host users cannot either. `sock/` is the only part the VMM sees (bound into its
//! jail as `/sock`): root's, group the VMM's gid, 0750, so the VMM's threads can reach the
//! listeners but create nothing there. `run` removes it all when it ends; the gc entrypoint
//! removes it if `run` was killed.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use vmm::devices::virtio::vsock::MAX_UDS_PATH_LEN;

use crate::error::Stage1Error;

/// Where every pod's runtime directory lives.
pub const RUN_DIR: &str = "/run/rkt-kvm";
/// The guest's context ID (each VM has its own vsock device, so one CID serves all).
pub const GUEST_CID: u64 = 3;

/// One pod's runtime directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    /// `/run/rkt-kvm/<uuid>`.
    pub dir: PathBuf,
    /// `sock/`: the VM's vsock socket and the host listeners.
    pub sockets: PathBuf,
    /// The VM's vsock socket (the VMM binds it).
    pub socket: PathBuf,
    /// The mount point of the jailed VMM's root (in its own mount namespace only).
    pub jail: PathBuf,
}

impl RunDir {
    /// The runtime directory of pod `uuid` under `run_root`.
    pub fn of(run_root: &Path, uuid: &str) -> RunDir {
        let dir = run_dir(run_root, uuid);
        let sockets = dir.join("sock");
        RunDir {
            socket: sockets.join("vsock"),
            sockets,
            jail: dir.join("jail"),
            dir,
        }
    }

    /// Creates it (and `run_root`) root-only, empty but for `sock/` (group `vmm_gid`, 0750)
    /// and the jail's mount point; refuses a socket path too long for `sun_path` with its
    /// listener suffix.
    pub fn create(&self, vmm_gid: u32) -> Result<(), Stage1Error> {
        if self.socket.as_os_str().len() > MAX_UDS_PATH_LEN {
            return Err(Stage1Error::Unsupported(format!(
                "the vsock socket path {} is longer than {MAX_UDS_PATH_LEN} bytes",
                self.socket.display()
            )));
        }
        if let Some(root) = self.dir.parent() {
            private_dir(root)?;
        }
        // Left over from a killed run of the same pod: nothing in it is worth keeping.
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(Stage1Error::io(format!("removing {}", self.dir.display()))(
                    err,
                ))
            }
        }
        private_dir(&self.dir)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.jail)
            .map_err(Stage1Error::io(format!("creating {}", self.jail.display())))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.sockets)
            .map_err(Stage1Error::io(format!(
                "creating {}",
                self.sockets.display()
            )))?;
        std::os::unix::fs::chown(&self.sockets, Some(0), Some(vmm_gid))
            .and_then(|()| fs::set_permissions(&self.sockets, fs::Permissions::from_mode(0o750)))
            .map_err(Stage1Error::io(format!(
                "handing {} to the VMM's group",
                self.sockets.display()
            )))
    }
}

/// Creates `dir` 0700 if missing; an existing one must be a directory of root's (not a link),
/// and is made 0700.
fn private_dir(dir: &Path) -> Result<(), Stage1Error> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(Stage1Error::io(format!("creating {}", dir.display()))(err)),
    }
    let meta = fs::symlink_metadata(dir)
        .map_err(Stage1Error::io(format!("checking {}", dir.display())))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(Stage1Error::Unsupported(format!(
            "{} is not a directory of ours; remove it and run again",
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(Stage1Error::io(format!("restricting {}", dir.display())))?;
    }
    Ok(())
}

/// The per-pod directory under `run_root` (gc removes it by UUID alone).
pub fn run_dir(run_root: &Path, uuid: &str) -> PathBuf {
    run_root.join(uuid)
}

/// Binds a host listener in `sock/` that the jailed VMM may connect to: the socket gets the
/// directory's group (the VMM's) and mode 0660.
pub fn bind_listener(path: &Path) -> io::Result<UnixListener> {
    let listener = UnixListener::bind(path)?;
    let group = path
        .parent()
        .map(fs::metadata)
        .transpose()?
        .map(|dir| dir.gid());
    std::os::unix::fs::chown(path, None, group)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// The host listener path for guest connections to `port`.
pub fn port_path(socket: &Path, port: u32) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "2e1a7c3b-51f0-4f55-8a3e-0d9b5c7e6f10";

    #[test]
    fn everything_lives_under_run() {
        let run = RunDir::of(Path::new(RUN_DIR), UUID);
        assert_eq!(run.socket, Path::new(RUN_DIR).join(UUID).join("sock/vsock"));
        assert_eq!(run.jail, Path::new(RUN_DIR).join(UUID).join("jail"));
        assert!(port_path(&run.socket, 65535).as_os_str().len() <= MAX_UDS_PATH_LEN + 6);
        assert_eq!(
            port_path(&run.socket, 1001),
            Path::new(RUN_DIR).join(UUID).join("sock/vsock_1001")
        );
    }

    #[test]
    fn create_makes_private_directories_and_clears_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let run_root = root.path().join("rkt-kvm");
        let run = RunDir::of(&run_root, UUID);
        run.create(4242).unwrap();
        fs::write(run.sockets.join("vsock_7"), "stale").unwrap();
        run.create(4242).unwrap();
        assert!(!run.sockets.join("vsock_7").exists());
        for dir in [&run_root, &run.dir, &run.jail] {
            assert_eq!(fs::metadata(dir).unwrap().mode() & 0o777, 0o700, "{dir:?}");
        }
        let sockets = fs::metadata(&run.sockets).unwrap();
        assert_eq!(
            (sockets.mode() & 0o777, sockets.uid(), sockets.gid()),
            (0o750, 0, 4242)
        );
        let listener = run.sockets.join("vsock_1000");
        let _bound = bind_listener(&listener).unwrap();
        let meta = fs::symlink_metadata(&listener).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 4242));
        // A link where the root belongs is refused, not followed.
        let other = tempfile::tempdir().unwrap();
        let linked_root = root.path().join("linked");
        std::os::unix::fs::symlink(other.path(), &linked_root).unwrap();
        let err = RunDir::of(&linked_root, UUID)
            .create(4242)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory of ours"), "{err}");
        assert_eq!(fs::read_dir(other.path()).unwrap().count(), 0);
    }
}
