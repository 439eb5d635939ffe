//! The `gc` entrypoint (`[--debug] [--local-config=DIR] UUID`, run by `rkt gc`/`rm` from the
//! directory of an exited pod before stage0 deletes it): releases what stage1 made outside the
//! pod directory: the pod's networks (CNI DEL, its network namespace; see `net`) and the pod's
//! runtime directory under /run (see `vsock`) and the VMM's cgroup (`vmm_process`); `run`
//! releases all of them itself unless it was killed. Running it twice, or for a pod that never
//! had them, is fine.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::args::GcArgs;
use crate::error::Stage1Error;
use crate::vsock::{run_dir, RUN_DIR};

pub fn gc(args: &GcArgs) -> Result<(), Stage1Error> {
    // The networks first: a failure keeps the pod (and this record) for the next gc.
    let pod_dir = std::env::current_dir().map_err(Stage1Error::io("finding the pod directory"))?;
    crate::net::gc(&pod_dir, args.debug)?;
    // The VMM died with the stage1 that was killed (its parent-death signal), so its cgroup is
    // empty.
    jail::cgroup::remove_stale(
        Path::new(jail::cgroup::CGROUP_ROOT),
        crate::vmm_process::parent::CGROUP_GROUP,
        &args.uuid,
    )
    .map_err(|e| Stage1Error::Unsupported(e.to_string()))?;
    gc_in(Path::new(RUN_DIR), &args.uuid, args.debug)
}

/// [`gc`] with the socket root as a parameter (tests use a temporary one).
pub fn gc_in(run_root: &Path, uuid: &str, debug: bool) -> Result<(), Stage1Error> {
    let dir = run_dir(run_root, uuid);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {
            if debug {
                eprintln!("stage1-kvm: gc: removed {}", dir.display());
            }
            Ok(())
        }
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Stage1Error::io(format!("removing {}", dir.display()))(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "2e1a7c3b-51f0-4f55-8a3e-0d9b5c7e6f10";

    #[test]
    fn removes_the_pods_socket_directory_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let mine = root.path().join(UUID);
        let other = root.path().join("11111111-1111-1111-1111-111111111111");
        fs::create_dir_all(&mine).unwrap();
        fs::write(mine.join("vsock_1000"), "").unwrap();
        fs::create_dir_all(&other).unwrap();
        gc_in(root.path(), UUID, false).unwrap();
        assert!(!mine.exists());
        assert!(other.exists());
        gc_in(root.path(), UUID, false).unwrap();
    }
}
