//! Pods on disk: rkt's pod directory format and lifecycle (see
//! `docs/pods.md`). One job per module:
//!
//! - `uuid`: pod UUIDs;
//! - `dir`: `<dir>/pods/<state>/<uuid>`, listing, UUID prefix lookup;
//! - `lock`: the flock on a pod directory (`RKT_LOCK_FD`);
//! - `state`: a pod's state and the renames between states;
//! - `layout`: file names inside a pod directory;
//! - `info`: reading a pod (manifest, times, pid, exit statuses);
//! - `manifest`: building the reified pod manifest from the user's flags;
//! - `checks`: exec and working directory present in the image;
//! - `render`: putting the stage1 and app images into a pod directory;
//! - `overlay`: overlayfs support check and the run-time mounts;
//! - `prepare`: the whole prepare step, shared by `prepare` and `run`;
//! - `stage1`: the stage1 image's entrypoints and its command line;
//! - `dns`: `etc/rkt-resolv.conf`, `etc/rkt-hosts` and their modes;
//! - `handover`: from a prepared pod to the stage1 exec (`rkt run`);
//! - `mounts`: unmounting everything under a pod before deletion;
//! - `remove`: gc's deletion of one pod;
//! - `safe_read`: every read of a pod file: beneath the pod's descriptor, no links, no
//!   blocking, regular files only, capped.

pub mod checks;
pub mod dir;
pub mod dns;
pub mod handover;
pub mod info;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod mounts;
pub mod overlay;
pub mod prepare;
pub mod quota;
pub mod remove;
pub mod render;
pub mod safe_read;
pub mod stage1;
pub mod state;
pub mod uuid;

use std::path::PathBuf;

use thiserror::Error;

pub use dir::{PodsDir, StateDir};
pub use state::{Pod, PodState};

#[derive(Debug, Error)]
pub enum PodError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no pod matches {uuid:?}; see `rkt list`")]
    NoSuchPod { uuid: String },
    #[error("{prefix:?} matches {count} pods; give more of the UUID (see `rkt list --full`)")]
    AmbiguousUuid { prefix: String, count: usize },
    #[error("pod {uuid} is locked by another process (state {state}); try again when it is done")]
    Busy { uuid: String, state: &'static str },
    #[error("cannot {action} pod {uuid}: it is {state}")]
    WrongState {
        uuid: String,
        state: &'static str,
        action: &'static str,
    },
    #[error(
        "pod {uuid}: its manifest is damaged ({problem}); remove the pod with `rkt rm {uuid}`"
    )]
    BadManifest { uuid: String, problem: String },
    /// A pod file that stage0 refused to read (a link, a FIFO, a device, too large, ...).
    #[error("{context}: {source}")]
    PodFile {
        context: String,
        #[source]
        source: safe_read::SafeReadError,
    },
    #[error("{}: {problem}", path.display())]
    BadFile { path: PathBuf, problem: String },
    /// A complete message about what the user asked for.
    #[error("{0}")]
    Invalid(String),
    /// `--disk-limit` could not be applied.
    #[error(transparent)]
    Quota(#[from] quota::QuotaError),
}

impl PodError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodError {
        let context = context.into();
        move |source| PodError::Io { context, source }
    }
}
