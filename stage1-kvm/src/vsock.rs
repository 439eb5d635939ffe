//! Where the VM's vsock socket lives. The VMM creates it at `uds_path` and reaches host
//! listeners at `<uds_path>_<port>`, so the path must leave room in `sun_path`
//! (`vmm::devices::virtio::vsock::MAX_UDS_PATH_LEN`). It goes in the pod (`stage1-kvm/vsock`)
//! when that fits, which needs no cleanup beyond the pod; else in a per-pod directory under
//! [`RUN_DIR`], which the gc entrypoint removes if stage1 could not.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use vmm::devices::virtio::vsock::MAX_UDS_PATH_LEN;

use crate::error::Stage1Error;

/// Short socket directories for pods whose own path is too long.
pub const RUN_DIR: &str = "/run/rkt-kvm";
/// The guest's context ID (each VM has its own vsock device, so one CID serves all).
pub const GUEST_CID: u64 = 3;

/// The socket path for a pod, and whether it lives outside the pod (under [`RUN_DIR`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketPlace {
    pub path: PathBuf,
    /// The per-pod directory under [`RUN_DIR`] to remove afterwards, if used.
    pub run_dir: Option<PathBuf>,
}

/// Picks the socket path for the pod in `own_dir` (`P/stage1-kvm`) with `uuid`, under
/// `run_root` when the pod's own path is too long.
pub fn place(own_dir: &Path, uuid: &str, run_root: &Path) -> SocketPlace {
    let in_pod = own_dir.join("vsock");
    if in_pod.as_os_str().len() <= MAX_UDS_PATH_LEN {
        return SocketPlace {
            path: in_pod,
            run_dir: None,
        };
    }
    let dir = run_dir(run_root, uuid);
    SocketPlace {
        path: dir.join("vsock"),
        run_dir: Some(dir),
    }
}

/// The per-pod directory under `run_root` (gc removes it by UUID alone).
pub fn run_dir(run_root: &Path, uuid: &str) -> PathBuf {
    run_root.join(uuid)
}

/// Creates the socket's directory (0700: only root talks to the guest) and removes a stale
/// socket left by an earlier attempt, so the VMM can bind.
pub fn prepare(place: &SocketPlace) -> Result<(), Stage1Error> {
    if let Some(dir) = place.path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Stage1Error::io(format!("creating {}", dir.display())))?;
    }
    match fs::remove_file(&place.path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Stage1Error::io(format!(
            "removing the stale socket {}",
            place.path.display()
        ))(err)),
    }
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
    fn short_pods_keep_the_socket_inside() {
        let own = PathBuf::from("/var/lib/rkt/pods/run")
            .join(UUID)
            .join("stage1-kvm");
        let p = place(&own, UUID, Path::new(RUN_DIR));
        assert_eq!(p.path, own.join("vsock"));
        assert_eq!(p.run_dir, None);
        assert_eq!(port_path(&p.path, 1001), own.join("vsock_1001"),);
    }

    #[test]
    fn long_pod_paths_move_the_socket_under_run() {
        let own = PathBuf::from(format!(
            "/tmp/{}/pods/run/{UUID}/stage1-kvm",
            "d".repeat(40)
        ));
        let p = place(&own, UUID, Path::new(RUN_DIR));
        assert_eq!(p.path, Path::new(RUN_DIR).join(UUID).join("vsock"));
        assert_eq!(p.run_dir, Some(Path::new(RUN_DIR).join(UUID)));
        assert!(p.path.as_os_str().len() <= MAX_UDS_PATH_LEN);
    }

    #[test]
    fn prepare_makes_the_directory_and_clears_a_stale_socket() {
        let root = tempfile::tempdir().unwrap();
        let p = SocketPlace {
            path: root.path().join("a/b/vsock"),
            run_dir: None,
        };
        prepare(&p).unwrap();
        fs::write(&p.path, "stale").unwrap();
        prepare(&p).unwrap();
        assert!(!p.path.exists());
        assert!(p.path.parent().unwrap().is_dir());
    }
}
