//! Resource limits of the process (rlimits are per process, shared by all its threads).

use nix::sys::resource::{setrlimit, Resource};

/// Setting a limit failed.
#[derive(Debug, thiserror::Error)]
#[error("setting {what} to {value}: {source}")]
pub struct RlimitError {
    what: &'static str,
    value: u64,
    source: nix::Error,
}

/// Sets the soft and hard limit of the descriptors the process may hold.
pub fn limit_open_files(max: u64) -> Result<(), RlimitError> {
    set(Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", max)
}

/// No core dumps: a core of the VMM would hold the guest's memory.
pub fn no_core_dumps() -> Result<(), RlimitError> {
    set(Resource::RLIMIT_CORE, "RLIMIT_CORE", 0)
}

fn set(resource: Resource, what: &'static str, value: u64) -> Result<(), RlimitError> {
    setrlimit(resource, value, value).map_err(|source| RlimitError {
        what,
        value,
        source,
    })
}
