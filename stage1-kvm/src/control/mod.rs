//! The host end of the control channel (crate `pod_control`; docs/stage1-kvm.md "The control
//! channel"): reaching guest-init's control server through the VMM's vsock socket, and what
//! the entrypoints build on it:
//! - `client`: the `CONNECT 1` handshake and one request/response;
//! - `terminal`: the host terminal in raw mode (restored on drop), its size;
//! - `session`: relaying stdin/stdout/stderr of an `enter` or `--interactive` session;
//! - `ready`: `rkt/supervisor-status -> ready` once guest-init says its server listens (`run`);
//! - `attach`: `run --interactive`'s terminal session;
//! - `enter`, `stop`: the `enter_kvm` and `stop_kvm` entrypoints.

pub mod attach;
pub mod client;
pub mod enter;
pub mod ready;
pub mod session;
pub mod stop;
pub mod terminal;

use std::path::{Path, PathBuf};

use crate::args::check_uuid;
use crate::error::Stage1Error;
use crate::pod::PodPaths;
use crate::vsock::{RunDir, RUN_DIR};

/// The pod in the current directory (enter and stop run there, as stage0 calls them), its
/// UUID (the directory's name) and its VM's vsock socket.
pub fn current_pod() -> Result<(PodPaths, String, PathBuf), Stage1Error> {
    let dir = std::env::current_dir().map_err(Stage1Error::io("finding the pod directory"))?;
    let uuid = dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .unwrap_or_default();
    let uuid = check_uuid(&uuid).map_err(|_| {
        Stage1Error::Usage(format!(
            "{} is not a pod directory: stage0 runs this entrypoint in the pod's directory",
            dir.display()
        ))
    })?;
    let pod = PodPaths::new(dir);
    let socket = RunDir::of(Path::new(RUN_DIR), &uuid).socket;
    Ok((pod, uuid, socket))
}
