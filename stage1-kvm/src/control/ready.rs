//! Readiness for `rkt status --wait-ready`: once guest-init's control server listens, the pod
//! can be entered and stopped, and `stage1/rootfs/rkt/supervisor-status` becomes a symlink to
//! `ready` (stage1 interface v5). guest-init says so itself, with a `Ready` frame on its status
//! stream (status.rs); the host does not ping the guest for it (each ping was a vsock connection
//! the guest had to refuse, every tenth of a second while it set the pod up).

use std::fs;
use std::path::Path;

/// Where the symlink goes, relative to the stage1 rootfs.
pub const SUPERVISOR_STATUS: &str = "rkt/supervisor-status";

/// `rkt/supervisor-status -> ready`, made whole (a temporary link renamed over).
pub fn mark_ready(stage1_rootfs: &Path) -> std::io::Result<()> {
    let path = stage1_rootfs.join(SUPERVISOR_STATUS);
    let temporary = stage1_rootfs.join(format!("{SUPERVISOR_STATUS}.tmp"));
    let _ = fs::remove_file(&temporary);
    std::os::unix::fs::symlink("ready", &temporary)?;
    fs::rename(&temporary, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_link() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("rkt")).unwrap();
        mark_ready(dir.path()).unwrap();
        mark_ready(dir.path()).unwrap();
        assert_eq!(
            fs::read_link(dir.path().join(SUPERVISOR_STATUS)).unwrap(),
            Path::new("ready")
        );
        assert!(!dir.path().join("rkt/supervisor-status.tmp").exists());
    }
}
