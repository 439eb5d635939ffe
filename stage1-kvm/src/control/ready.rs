//! Readiness for `rkt status --wait-ready`: once guest-init's control server answers a ping,
//! the pod can be entered and stopped, and `stage1/rootfs/rkt/supervisor-status` becomes a
//! symlink to `ready` (stage1 interface v5).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pod_control::{Request, Response};

use super::client;

/// Between attempts while the guest boots.
const RETRY: Duration = Duration::from_millis(100);

/// Where the symlink goes, relative to the stage1 rootfs.
pub const SUPERVISOR_STATUS: &str = "rkt/supervisor-status";

/// Pings the guest through `socket` until it answers, then writes the symlink under
/// `stage1_rootfs`; gives up when `stop` is set (the VM ended).
pub fn watch(socket: PathBuf, stage1_rootfs: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if answers(&socket) {
                let _ = mark_ready(&stage1_rootfs);
                return;
            }
            std::thread::sleep(RETRY);
        }
    })
}

fn answers(socket: &Path) -> bool {
    client::connect(socket)
        .and_then(|mut stream| client::request(&mut stream, Request::Ping))
        .is_ok_and(|response| matches!(response, Response::Pong { .. }))
}

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
