//! The pod lock: `flock(2)` on the pod directory itself, as rkt does.
//!
//! A flock belongs to the open file description, not the path, so it follows
//! the directory through the renames that change a pod's state, and it dies
//! with the last process holding the descriptor. That is what lets a stage1
//! say "running" simply by keeping `RKT_LOCK_FD` open: when it (and the VMM it
//! became) exits for any reason, even `kill -9`, the lock is gone and the pod
//! reads as exited.

use std::fs::{File, TryLockError};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// An open pod directory, locked or not.
#[derive(Debug)]
pub struct DirLock {
    dir: File,
}

/// The outcome of a non-blocking lock attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Acquired,
    /// Someone else holds a conflicting lock.
    Busy,
}

impl DirLock {
    /// Opens `path` (a directory) without locking it.
    pub fn open(path: &Path) -> io::Result<DirLock> {
        // O_NOFOLLOW|O_DIRECTORY: a pod directory is never reached through a link.
        let dir = super::safe_read::open_host_dir(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", path.display()),
            ));
        }
        Ok(DirLock { dir })
    }

    pub fn try_exclusive(&self) -> io::Result<Attempt> {
        Self::attempt(self.dir.try_lock())
    }

    pub fn try_shared(&self) -> io::Result<Attempt> {
        Self::attempt(self.dir.try_lock_shared())
    }

    pub fn unlock(&self) -> io::Result<()> {
        self.dir.unlock()
    }

    /// Whether another open description holds the directory locked: probes
    /// with a shared lock and drops it again.
    pub fn is_held_elsewhere(&self) -> io::Result<bool> {
        match self.try_shared()? {
            Attempt::Busy => Ok(true),
            Attempt::Acquired => {
                self.unlock()?;
                Ok(false)
            }
        }
    }

    /// The pod directory's descriptor, for lookups relative to it (`safe_read`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// `fstat` of the pod directory itself (its ctime is the last state rename).
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.dir.metadata()
    }

    pub fn fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Lets the descriptor survive `exec`, for handing it to stage1 as
    /// `RKT_LOCK_FD` (Rust opens everything close-on-exec).
    pub fn keep_across_exec(&self) -> io::Result<()> {
        fcntl(self.dir.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
            .map(drop)
            .map_err(io::Error::from)
    }

    fn attempt(result: Result<(), TryLockError>) -> io::Result<Attempt> {
        match result {
            Ok(()) => Ok(Attempt::Acquired),
            Err(TryLockError::WouldBlock) => Ok(Attempt::Busy),
            Err(TryLockError::Error(err)) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_is_seen_from_another_description_and_follows_renames() {
        let root = tempfile::tempdir().unwrap();
        let before = root.path().join("before");
        std::fs::create_dir(&before).unwrap();
        let holder = DirLock::open(&before).unwrap();
        assert_eq!(holder.try_exclusive().unwrap(), Attempt::Acquired);

        let after = root.path().join("after");
        std::fs::rename(&before, &after).unwrap();
        let observer = DirLock::open(&after).unwrap();
        assert!(observer.is_held_elsewhere().unwrap());
        assert_eq!(observer.try_exclusive().unwrap(), Attempt::Busy);

        drop(holder);
        assert!(!observer.is_held_elsewhere().unwrap());
        assert_eq!(observer.try_exclusive().unwrap(), Attempt::Acquired);
    }

    #[test]
    fn keep_across_exec_clears_close_on_exec() {
        let root = tempfile::tempdir().unwrap();
        let lock = DirLock::open(root.path()).unwrap();
        let flags = |lock: &DirLock| {
            FdFlag::from_bits_truncate(fcntl(lock.dir.as_raw_fd(), FcntlArg::F_GETFD).unwrap())
        };
        assert!(flags(&lock).contains(FdFlag::FD_CLOEXEC));
        lock.keep_across_exec().unwrap();
        assert!(!flags(&lock).contains(FdFlag::FD_CLOEXEC));
    }

    #[test]
    fn opening_a_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(DirLock::open(&file).is_err());
    }
}
