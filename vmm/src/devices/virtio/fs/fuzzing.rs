//! Hook for the fuzz targets in `fuzz/` (not an API of the VMM): serves a queue the fuzzer laid
//! out in guest memory exactly as the device's worker does on a notification (the `compat`
//! views, `serve_queue`, the FUSE server, `GuardedFs`, the passthrough), without the worker
//! thread and its epoll, so one input is one deterministic pass.

use std::path::Path;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::PassthroughFs;

pub use super::compat::CompatError;
pub use super::worker::Pass;

use super::compat::{queue_view, GuestMemoryView};
use super::guard::GuardedFs;
use super::worker::{serve_queue, unshare_fs_context};
use super::{new_passthrough, resolve_root, FsError};
use crate::memory::GuestMemory;

/// One share as the device serves it, over `host_dir`.
pub struct FsHarness {
    server: Server<GuardedFs<PassthroughFs>>,
}

impl FsHarness {
    /// A fresh server over `host_dir` with the device's passthrough configuration and guard.
    /// The calling thread gets its own file-system context first, as the worker does (the
    /// passthrough changes the umask at FUSE_INIT).
    pub fn new(host_dir: &Path, read_only: bool) -> Result<FsHarness, FsError> {
        unshare_fs_context().map_err(|source| FsError::Passthrough {
            path: host_dir.to_path_buf(),
            source,
        })?;
        let root = resolve_root(host_dir)?;
        let passthrough = new_passthrough(&root, false).map_err(|source| FsError::Passthrough {
            path: host_dir.to_path_buf(),
            source,
        })?;
        Ok(FsHarness {
            server: Server::new(GuardedFs::new(passthrough, read_only)),
        })
    }

    /// One worker pass over `queue` (validated by the caller, as the transport does before
    /// activation) in `memory`: what the device does when the driver notifies.
    pub fn serve(
        &self,
        memory: &GuestMemory,
        queue: &virtio_queue::Queue,
    ) -> Result<Pass, CompatError> {
        let view = GuestMemoryView::new(memory)?;
        let mut fuse_queue = queue_view(queue)?;
        Ok(serve_queue(&mut fuse_queue, view.get(), &self.server))
    }
}
