//! The store-wide lock: shared by everything that adds to or reads the store
//! (fetches, renders, listings), exclusive for what deletes (`image rm`,
//! `image gc`). Deleting therefore never races a half-done write, and two
//! fetches still run side by side. `flock(2)` locks die with their process,
//! so a killed rkt never leaves the store locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub fn acquire(path: &Path, mode: LockMode) -> io::Result<StoreLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let attempt = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                eprintln!(
                    "rkt: waiting for another rkt process to release the image store lock ({})",
                    path.display()
                );
                match mode {
                    LockMode::Shared => file.lock_shared()?,
                    LockMode::Exclusive => file.lock()?,
                }
            }
            Err(TryLockError::Error(err)) => return Err(err),
        }
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = StoreLock::acquire(&path, LockMode::Shared).unwrap();
        let _second = StoreLock::acquire(&path, LockMode::Shared).unwrap();
        // A separate open file description, as another process would have.
        let probe = File::open(&path).unwrap();
        assert!(matches!(probe.try_lock(), Err(TryLockError::WouldBlock)));
        drop(first);
        drop(_second);
        assert!(probe.try_lock().is_ok());
    }
}
