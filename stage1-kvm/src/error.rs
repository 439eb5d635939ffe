//! Stage1's one error type. Each message is one line naming the problem and, where someone can
//! act, the fix; every error exits 254 (an app's own failure is its exit code, not an error).

use std::io;
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Stage1Error {
    /// Stage0 called us with arguments we do not understand (a stage0/stage1 mismatch).
    #[error("{0}")]
    Usage(String),
    /// `RKT_LOCK_FD` is missing or not an open descriptor.
    #[error("{0}: stage1 must be started by `rkt run` (it hands over the pod's lock)")]
    Lock(String),
    /// A file stage1 needs could not be read, written or created.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The pod manifest (or another pod file) is not what stage0 writes.
    #[error("{}: {problem}", path.display())]
    BadFile { path: PathBuf, problem: String },
    /// Something the pod asks for that this stage1 cannot (yet) do.
    #[error("{0}")]
    Unsupported(String),
    /// The VMM could not start or run the VM.
    #[error("the pod's VM could not run: {0}")]
    Vmm(#[from] vmm::VmmError),
    /// The jailed VMM process could not be set up, or ended without a word.
    #[error("the pod's VM could not run: {0}")]
    Jail(String),
    /// The guest ended abnormally (panic, triple fault, KVM error).
    #[error("the pod's VM failed: {0}")]
    Guest(String),
    /// The guest ended without leaving every app's exit status.
    #[error("{0}")]
    Status(String),
    /// The control channel (enter, stop, --interactive) failed or the guest refused.
    #[error("{0}")]
    Control(String),
    /// The pod's networks could not be set up or released (CNI, namespace, tap wiring).
    #[error("{0}")]
    Network(String),
}

impl Stage1Error {
    /// A closure for `map_err` that wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Stage1Error {
        let context = context.into();
        move |source| Stage1Error::Io { context, source }
    }
}
