//! An exclusive lock file per cache entry, held while the entry is made or removed.
//!
//! Lock files may be deleted (by `clear` and `gc`, holding them), so a lock is only taken
//! once the file we hold is still the one at the path: otherwise a waiter could hold a
//! deleted file while a newcomer locks a fresh one at the same path.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A held lock; released when dropped (the descriptor closes).
pub struct EntryLock {
    _file: File,
    path: PathBuf,
}

impl EntryLock {
    /// Waits for the lock at `path`.
    pub fn wait(path: &Path) -> io::Result<EntryLock> {
        Self::take(path, true)?.ok_or_else(|| io::Error::other("a blocking lock came back untaken"))
    }

    /// Takes the lock at `path` if nobody holds it.
    pub fn try_take(path: &Path) -> io::Result<Option<EntryLock>> {
        Self::take(path, false)
    }

    fn take(path: &Path, block: bool) -> io::Result<Option<EntryLock>> {
        loop {
            // Root's alone (0600), never through a link.
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)?;
            // std's file locks are flock(2) locks, as rkt's pod locks (rkt/src/pod/lock.rs).
            let locked = if block {
                file.lock()
            } else {
                match file.try_lock() {
                    Ok(()) => Ok(()),
                    Err(TryLockError::WouldBlock) => return Ok(None),
                    Err(TryLockError::Error(error)) => Err(error),
                }
            };
            match locked {
                Ok(()) => {}
                // A signal arrived while we waited: wait again.
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            let held = file.metadata()?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(EntryLock {
                        _file: file,
                        path: path.to_path_buf(),
                    }))
                }
                // Deleted (or replaced) while we waited: lock the file that is there now.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the lock file while holding it (waiters then retry on a new file).
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_not_taken_twice_and_survives_removal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = EntryLock::wait(&path).unwrap();
        assert!(EntryLock::try_take(&path).unwrap().is_none());
        held.remove_file();
        drop(held);
        let again = EntryLock::try_take(&path).unwrap();
        assert!(again.is_some());
        assert!(path.exists());
    }
}
