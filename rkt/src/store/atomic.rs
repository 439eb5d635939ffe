//! Crash-safe file placement: write to a temporary file in the store's own
//! `tmp/` (same filesystem), fsync it, rename it into place, fsync the
//! directory. A crash at any point leaves either the old state or the new one,
//! plus at most a stray temporary file that `image gc` removes.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use tempfile::NamedTempFile;

/// Moves a finished temporary file to `dest` durably. If `dest` already exists
/// it is replaced; callers only do that with identical content (same digest).
pub fn persist(temp: NamedTempFile, dest: &Path) -> io::Result<()> {
    temp.as_file().sync_all()?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    temp.persist(dest).map_err(|err| err.error)?;
    sync_parent(dest)
}

/// Fsyncs the directory holding `path`, making a rename in it durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}
