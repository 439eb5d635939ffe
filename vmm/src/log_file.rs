//! [`RotatingFile`]: a log file whose size on disk is bounded, for output a guest controls
//! (the serial console here, apps' logs in stage1-kvm). A guest that prints forever must cost
//! old log lines, never the host's disk.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A write-only log file of at most `max_bytes`: when a write would take it past that, the
/// file is renamed to `<path>.1` (replacing an older one) and a new, empty file is started at
/// `path`. So at most `2 * max_bytes` are on disk, the newest output in `path`.
///
/// Files are opened `O_NOFOLLOW|O_CLOEXEC` and created with mode 0600: never written through
/// a symlink, never inherited by a process the VMM starts. At creation an existing file is
/// truncated only if it is a regular file with no other hard link (so nothing else is ever
/// emptied through it); each file started by a rotation is created exclusively (`O_EXCL`), so
/// nothing placed at `path` in between is written to. A write that fits in an empty file is
/// never split across the two files; a longer one is cut at `max_bytes`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    rotated: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
}

impl RotatingFile {
    /// Creates `path`, or empties the regular file there, and caps it at `max_bytes`, which
    /// must not be 0. A symlink, anything but a regular file (a directory, a device, a FIFO)
    /// or a file with other hard links at `path` is an error, and left alone.
    pub fn create(path: impl AsRef<Path>, max_bytes: u64) -> io::Result<RotatingFile> {
        if max_bytes == 0 {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "a rotating log file needs a size limit above 0",
            ));
        }
        let path = path.as_ref().to_path_buf();
        let mut rotated = OsString::from(path.as_os_str());
        rotated.push(".1");
        let file = open_existing_or_new(&path)?;
        Ok(RotatingFile {
            path,
            rotated: PathBuf::from(rotated),
            file,
            written: 0,
            max_bytes,
        })
    }

    /// Moves the full file to `<path>.1` and starts an empty one.
    fn rotate(&mut self) -> io::Result<()> {
        match std::fs::rename(&self.path, &self.rotated) {
            Ok(()) => {}
            // Someone removed it: there is nothing to keep, start anew all the same.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // O_EXCL: if anything appeared at `path` since the rename, fail rather than write
        // into it (the next write tries again).
        self.file = options().create_new(true).open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// Write-only, 0600 when created, never through a symlink, close-on-exec.
fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    options
}

/// Opens `path` for writing, creating it, and empties it if it is a regular file with one
/// link; anything else is an error. O_NONBLOCK keeps a FIFO at `path` from blocking the
/// open (it fails with ENXIO without a reader, or is refused below); it means nothing for
/// regular files.
fn open_existing_or_new(path: &Path) -> io::Result<File> {
    let file = options()
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "not a regular file: a log file must be one",
        ));
    }
    if meta.nlink() != 1 {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "the file has other hard links: emptying it would empty them too",
        ));
    }
    file.set_len(0)?;
    Ok(file)
}

impl Write for RotatingFile {
    /// Writes at most up to the cap, rotating first when `buf` would not fit in what is left.
    /// A failed rotation is an error and writes nothing: output is lost, the cap holds.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len() as u64;
        if self.written > 0 && self.written.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        // Only a write longer than `max_bytes` is cut here; the rest follows in a new file.
        let room = self.max_bytes - self.written;
        let take = len.min(room) as usize;
        let n = self.file.write(&buf[..take])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;

    use vmm_sys_util::tempdir::TempDir;

    use super::*;

    fn dir() -> TempDir {
        TempDir::new_with_prefix("/tmp/vmm-log-file-").unwrap()
    }

    #[test]
    fn a_zero_cap_is_refused() {
        let dir = dir();
        let err = RotatingFile::create(dir.as_path().join("log"), 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn rotates_at_the_cap_keeping_one_older_file() {
        let dir = dir();
        let path = dir.as_path().join("console.log");
        let old = dir.as_path().join("console.log.1");
        let mut log = RotatingFile::create(&path, 10).unwrap();
        log.write_all(b"12345\n").unwrap();
        log.write_all(b"abc\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"12345\nabc\n");
        assert!(!old.exists());
        // Does not fit in the 0 bytes left: rotate, not split.
        log.write_all(b"next\n").unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"12345\nabc\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"next\n");
        // Does not fit in the 5 left: rotate again, replacing the older file.
        log.write_all(b"second!\n").unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"next\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"second!\n");
        let entries = std::fs::read_dir(dir.as_path()).unwrap().count();
        assert_eq!(entries, 2, "only the file and one older copy");
    }

    #[test]
    fn a_flood_never_takes_more_than_twice_the_cap() {
        let dir = dir();
        let path = dir.as_path().join("flood");
        let mut log = RotatingFile::create(&path, 4096).unwrap();
        // Writes longer than the cap are cut, the rest goes on in new files.
        let big = vec![b'x'; 10_000];
        for _ in 0..100 {
            log.write_all(&big).unwrap();
            log.write_all(b"line\n").unwrap();
            let total: u64 = std::fs::read_dir(dir.as_path())
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(total <= 2 * 4096, "{total} bytes on disk");
        }
        let last = std::fs::read(&path).unwrap();
        assert!(last.ends_with(b"line\n") && last.len() <= 4096);
    }

    #[test]
    fn files_are_private_and_never_written_through_a_symlink_or_a_hard_link() {
        let dir = dir();
        let target = dir.as_path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        // A symlink at the log's path is refused, not followed.
        let path = dir.as_path().join("log");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(RotatingFile::create(&path, 8).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        std::fs::remove_file(&path).unwrap();
        // A hard link at the log's path is refused, not emptied.
        let linked = dir.as_path().join("linked");
        std::fs::hard_link(&target, &linked).unwrap();
        assert!(RotatingFile::create(&linked, 8).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // A FIFO or a directory is refused, and left alone (the FIFO without blocking).
        let fifo = dir.as_path().join("fifo");
        let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
        assert!(RotatingFile::create(&fifo, 8).is_err());
        let sub = dir.as_path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(RotatingFile::create(&sub, 8).is_err());
        assert!(sub.is_dir());
        // An old log of our own is emptied; a new one is 0600.
        std::fs::write(&path, b"old run").unwrap();
        let mut log = RotatingFile::create(&path, 8).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        log.write_all(b"mine").unwrap();
        let fresh = dir.as_path().join("fresh");
        let _fresh_log = RotatingFile::create(&fresh, 8).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A symlink planted where the new file goes after a rotation is not followed: the
        // rotation renames the link away and creates a file of its own.
        log.write_all(b"full!").unwrap();
        assert_eq!(std::fs::read(dir.as_path().join("log.1")).unwrap(), b"mine");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        log.write_all(b"12345678").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read(&path).unwrap(), b"12345678");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The descriptor is close-on-exec.
        // SAFETY: F_GETFD on a descriptor the File owns; no memory is involved.
        let flags = unsafe { libc::fcntl(log.file.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
