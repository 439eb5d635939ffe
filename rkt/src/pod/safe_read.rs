//! Reading files inside a pod directory without trusting what is there.
//!
//! Until the guest's writes were narrowed to the apps' root file systems and volumes, a guest
//! could write anywhere in its pod directory, and pods made by older versions still hold
//! whatever it wrote. So every stage0 read of a pod file goes through here:
//!
//! - the path is resolved relative to a descriptor of the pod directory (or a directory in
//!   it) with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: no `..`
//!   out of it, no symbolic link anywhere on the way, not even at the last component (on a
//!   kernel without `openat2`, one `O_NOFOLLOW` step per component, which refuses the same);
//! - it is first opened with `O_PATH`, which opens nothing: a FIFO does not block us, a
//!   device driver's `open` never runs (a planted watchdog or tape node cannot be triggered);
//! - `fstat` on that descriptor must say "regular file", and its size must be within the
//!   caller's cap; only then is that very inode opened for reading (through
//!   `/proc/self/fd/N`, which names the inode already resolved, not a path that could
//!   change), with `O_NONBLOCK | O_NOCTTY | O_CLOEXEC`, and at most cap + 1 bytes are read, so
//!   a file that grows meanwhile is refused too.
//!
//! Each refusal is a [`SafeReadError`] naming the file (relative to the pod directory) and
//! the problem, so callers can say "pod X: stage1/rootfs/rkt/status/web is a FIFO".

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

/// Caps for the files stage0 reads from a pod (bytes). A file larger than its cap is
/// refused: none of them is legitimately anywhere near it.
pub mod cap {
    /// `pid`, an app's exit status, a tree ID: one short line.
    pub const LINE: u64 = 4096;
    /// `net-info.json`: a few entries per network.
    pub const NET_INFO: u64 = 1 << 20;
    /// The pod manifest and image manifests (rkt's are kilobytes; annotations can grow).
    pub const MANIFEST: u64 = 8 << 20;
    /// A symlink's target (`rkt/supervisor-status -> ready`).
    pub const LINK: usize = 256;
}

/// Why a pod file was not read. `path` is relative to the directory it was looked up in.
#[derive(Debug, Error)]
pub enum SafeReadError {
    #[error("{} does not exist", .path.display())]
    NotFound { path: PathBuf },
    #[error(
        "{} is, or passes through, a symbolic link or leaves the pod directory; \
         stage0 never follows links in a pod", .path.display()
    )]
    Link { path: PathBuf },
    #[error("{} is a {kind}, not a regular file", .path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is larger than {limit} bytes, far more than it should hold", .path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} is not a path inside the pod directory", .path.display())]
    BadPath { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SafeReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, SafeReadError::NotFound { .. })
    }

    fn from_io(path: &Path, source: io::Error) -> SafeReadError {
        let path = path.to_path_buf();
        match source.raw_os_error() {
            Some(libc::ENOENT) => SafeReadError::NotFound { path },
            // ELOOP: a link where RESOLVE_NO_SYMLINKS or O_NOFOLLOW forbids one; EXDEV: the
            // resolution would have left the directory (RESOLVE_BENEATH); ENOTDIR: O_NOFOLLOW
            // with O_DIRECTORY on a symlink in the fallback walk.
            Some(libc::ELOOP) | Some(libc::EXDEV) => SafeReadError::Link { path },
            _ => SafeReadError::Io { path, source },
        }
    }
}

/// What `fstat` says a non-regular file is, for messages.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        "directory"
    } else if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// The components of `rel`, which must be a plain relative path (no `..`, not absolute);
/// `.` components are dropped. An empty list means the directory itself.
fn components(rel: &Path) -> Result<Vec<&OsStr>, SafeReadError> {
    let mut parts = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => {
                return Err(SafeReadError::BadPath {
                    path: rel.to_path_buf(),
                })
            }
        }
    }
    Ok(parts)
}

fn c_path(path: &Path, bytes: &[u8]) -> Result<CString, SafeReadError> {
    CString::new(bytes).map_err(|_| SafeReadError::BadPath {
        path: path.to_path_buf(),
    })
}

/// Set once the kernel said it has no `openat2` (Linux before 5.6), so later calls go
/// straight to the fallback.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

fn openat2(dir: BorrowedFd<'_>, path: &CString, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: open_how is a plain C struct of integers; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: `path` is a NUL-terminated string and `how` a valid open_how, both alive
        // for the call; the size passed is the struct's own. The kernel returns a new
        // descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        // EAGAIN: RESOLVE_BENEATH asks to retry when a rename raced the lookup.
        if !matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(err);
        }
    }
}

fn openat(dir: BorrowedFd<'_>, name: &CString, flags: i32) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is NUL-terminated and alive for the call; openat returns a new
        // descriptor or -1.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Opens `rel` beneath `dir` with `O_PATH` (plus `extra`, e.g. `O_DIRECTORY`), refusing
/// links and `..`. The result names an inode; nothing was opened for I/O.
pub fn open_path(dir: BorrowedFd<'_>, rel: &Path, extra: i32) -> Result<OwnedFd, SafeReadError> {
    open_path_by(dir, rel, extra, !NO_OPENAT2.load(Ordering::Relaxed))
}

/// [`open_path`], with `openat2` or (`try_openat2` false, or no openat2) the fallback walk.
fn open_path_by(
    dir: BorrowedFd<'_>,
    rel: &Path,
    extra: i32,
    try_openat2: bool,
) -> Result<OwnedFd, SafeReadError> {
    let parts = components(rel)?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | extra;
    if try_openat2 {
        let joined: PathBuf = parts.iter().collect();
        let target = if parts.is_empty() {
            c_path(rel, b".")?
        } else {
            c_path(rel, joined.as_os_str().as_bytes())?
        };
        match openat2(dir, &target, flags) {
            Ok(fd) => return Ok(fd),
            Err(err) if err.raw_os_error() == Some(libc::ENOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            Err(err) => return Err(SafeReadError::from_io(rel, err)),
        }
    }
    // Without openat2: one component at a time, each O_NOFOLLOW, directories O_DIRECTORY, so
    // neither a link nor `..` (refused above) is ever taken.
    let dot = c_path(rel, b".")?;
    let mut current = openat(dir, &dot, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|err| SafeReadError::from_io(rel, err))?;
    for (index, part) in parts.iter().enumerate() {
        let name = c_path(rel, part.as_bytes())?;
        let last = index + 1 == parts.len();
        let step = if last {
            flags
        } else {
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY
        };
        current = openat(current.as_fd(), &name, step).map_err(|err| {
            // O_PATH|O_NOFOLLOW opens a symlink itself instead of failing; O_DIRECTORY on one
            // gives ENOTDIR. Say "link" for both, as openat2 would.
            if err.raw_os_error() == Some(libc::ENOTDIR) && !last {
                SafeReadError::Link {
                    path: rel.to_path_buf(),
                }
            } else {
                SafeReadError::from_io(rel, err)
            }
        })?;
    }
    Ok(current)
}

/// The metadata of `rel` beneath `dir` as `lstat` would give it, without following any link
/// on the way; `Ok(None)` if it does not exist.
pub fn metadata(dir: BorrowedFd<'_>, rel: &Path) -> Result<Option<Metadata>, SafeReadError> {
    match open_path(dir, rel, 0) {
        Ok(fd) => File::from(fd)
            .metadata()
            .map(Some)
            .map_err(|err| SafeReadError::from_io(rel, err)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}

/// Opens directory `rel` beneath `dir` (for further lookups relative to it).
pub fn open_dir(dir: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, SafeReadError> {
    open_path(dir, rel, libc::O_DIRECTORY).map_err(|err| match err {
        // O_DIRECTORY on a regular file.
        SafeReadError::Io { path, source } if source.raw_os_error() == Some(libc::ENOTDIR) => {
            SafeReadError::NotADirectory { path }
        }
        other => other,
    })
}

/// Reads regular file `rel` beneath `dir`, at most `limit` bytes (see the module's rules).
pub fn read(dir: BorrowedFd<'_>, rel: &Path, limit: u64) -> Result<Vec<u8>, SafeReadError> {
    let fd = open_path(dir, rel, 0)?;
    let pinned = File::from(fd);
    let meta = pinned
        .metadata()
        .map_err(|err| SafeReadError::from_io(rel, err))?;
    if !meta.file_type().is_file() {
        return Err(SafeReadError::NotRegular {
            path: rel.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    if meta.len() > limit {
        return Err(SafeReadError::TooLarge {
            path: rel.to_path_buf(),
            limit,
        });
    }
    // The O_PATH descriptor cannot be read; open the same inode through its /proc name. That
    // magic link names the file already resolved (and checked) above, whatever happens to
    // the pod's paths meanwhile.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", pinned.as_raw_fd()))
        .map_err(|err| SafeReadError::Io {
            path: rel.to_path_buf(),
            source: err,
        })?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| SafeReadError::from_io(rel, err))?;
    if bytes.len() as u64 > limit {
        return Err(SafeReadError::TooLarge {
            path: rel.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// [`read`], with a missing file as `Ok(None)`.
pub fn read_optional(
    dir: BorrowedFd<'_>,
    rel: &Path,
    limit: u64,
) -> Result<Option<Vec<u8>>, SafeReadError> {
    match read(dir, rel, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}

/// The target of symlink `rel` beneath `dir` (its parent reached without following links),
/// at most [`cap::LINK`] bytes.
pub fn read_link(dir: BorrowedFd<'_>, rel: &Path) -> Result<PathBuf, SafeReadError> {
    let parts = components(rel)?;
    let Some((name, parents)) = parts.split_last() else {
        return Err(SafeReadError::BadPath {
            path: rel.to_path_buf(),
        });
    };
    let parent: PathBuf = parents.iter().collect();
    let parent_fd = open_dir(dir, &parent)?;
    let name = c_path(rel, name.as_bytes())?;
    let mut buffer = vec![0u8; cap::LINK + 1];
    // SAFETY: `name` is NUL-terminated; `buffer` is writable for the length passed. readlinkat
    // never follows the link it reads and writes at most that many bytes.
    let length = unsafe {
        libc::readlinkat(
            parent_fd.as_raw_fd(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    if length < 0 {
        return Err(SafeReadError::from_io(rel, io::Error::last_os_error()));
    }
    let length = length as usize;
    if length > cap::LINK {
        return Err(SafeReadError::TooLarge {
            path: rel.to_path_buf(),
            limit: cap::LINK as u64,
        });
    }
    buffer.truncate(length);
    Ok(PathBuf::from(OsStr::from_bytes(&buffer)))
}

/// Opens directory `path` (a host path whose components the host made, e.g.
/// `$dir/pods/run/<uuid>`), refusing a symlink at its last component.
pub fn open_host_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    fn pod() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rkt/status")).unwrap();
        let handle = open_host_dir(dir.path()).unwrap();
        (dir, handle)
    }

    #[test]
    fn reads_a_regular_file_within_its_cap() {
        let (dir, handle) = pod();
        std::fs::write(dir.path().join("rkt/status/web"), b"42\n").unwrap();
        let bytes = read(handle.as_fd(), Path::new("rkt/status/web"), cap::LINE).unwrap();
        assert_eq!(bytes, b"42\n");
        assert!(
            read_optional(handle.as_fd(), Path::new("rkt/status/db"), cap::LINE)
                .unwrap()
                .is_none()
        );
        assert!(metadata(handle.as_fd(), Path::new("rkt/status/web"))
            .unwrap()
            .is_some_and(|m| m.is_file()));
    }

    #[test]
    fn a_fifo_is_refused_at_once_without_blocking() {
        let (dir, handle) = pod();
        let fifo = dir.path().join("rkt/status/web");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let started = Instant::now();
        let err = read(handle.as_fd(), Path::new("rkt/status/web"), cap::LINE).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(err, SafeReadError::NotRegular { kind: "FIFO", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("rkt/status/web"), "{err}");
    }

    #[test]
    fn symlinks_are_never_followed_at_the_end_or_on_the_way() {
        let (dir, handle) = pod();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host secret").unwrap();
        symlink(outside.path().join("secret"), dir.path().join("pid")).unwrap();
        symlink(outside.path(), dir.path().join("rkt/elsewhere")).unwrap();
        symlink("status", dir.path().join("rkt/inner")).unwrap();
        std::fs::write(dir.path().join("rkt/status/web"), b"0").unwrap();
        for rel in ["pid", "rkt/elsewhere/secret", "rkt/inner/web"] {
            let err = read(handle.as_fd(), Path::new(rel), cap::LINE).unwrap_err();
            assert!(
                matches!(
                    err,
                    SafeReadError::Link { .. } | SafeReadError::NotRegular { .. }
                ),
                "{rel}: {err}"
            );
        }
        for rel in ["../x", "/etc/passwd"] {
            let err = read(handle.as_fd(), Path::new(rel), cap::LINE).unwrap_err();
            assert!(matches!(err, SafeReadError::BadPath { .. }), "{rel}: {err}");
        }
        // metadata is lstat-like and never follows either.
        let meta = metadata(handle.as_fd(), Path::new("pid")).unwrap().unwrap();
        assert!(meta.file_type().is_symlink());
        assert!(metadata(handle.as_fd(), Path::new("rkt/elsewhere/secret")).is_err());
    }

    #[test]
    fn a_huge_sparse_file_is_refused_without_reading_it() {
        let (dir, handle) = pod();
        let file = File::create(dir.path().join("pid")).unwrap();
        file.set_len(2 << 30).unwrap(); // 2 GiB, sparse: costs no disk
        let err = read(handle.as_fd(), Path::new("pid"), cap::LINE).unwrap_err();
        assert!(matches!(err, SafeReadError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("pid"), "{err}");
    }

    #[test]
    fn a_device_node_is_refused_without_opening_it() {
        if !nix::unistd::geteuid().is_root() {
            return; // mknod of a device needs root
        }
        let (dir, handle) = pod();
        let node = dir.path().join("pid");
        // /dev/null's numbers: harmless even if it were opened, which it must not be.
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let err = read(handle.as_fd(), Path::new("pid"), cap::LINE).unwrap_err();
        assert!(
            matches!(
                err,
                SafeReadError::NotRegular {
                    kind: "character device",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn read_link_reads_only_the_link_itself() {
        let (dir, handle) = pod();
        symlink("ready", dir.path().join("rkt/supervisor-status")).unwrap();
        assert_eq!(
            read_link(handle.as_fd(), Path::new("rkt/supervisor-status")).unwrap(),
            PathBuf::from("ready")
        );
        // A link on the way to it is refused.
        let outside = tempfile::tempdir().unwrap();
        symlink("ready", outside.path().join("supervisor-status")).unwrap();
        symlink(outside.path(), dir.path().join("other")).unwrap();
        assert!(read_link(handle.as_fd(), Path::new("other/supervisor-status")).is_err());
        let long = "x".repeat(cap::LINK + 10);
        symlink(&long, dir.path().join("long")).unwrap();
        assert!(matches!(
            read_link(handle.as_fd(), Path::new("long")),
            Err(SafeReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_fallback_walk_refuses_the_same() {
        let (dir, handle) = pod();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        symlink(outside.path(), dir.path().join("away")).unwrap();
        symlink(outside.path().join("secret"), dir.path().join("pid")).unwrap();
        std::fs::write(dir.path().join("rkt/status/web"), b"7").unwrap();
        let walk = |rel: &str| open_path_by(handle.as_fd(), Path::new(rel), 0, false);
        assert!(
            matches!(walk("away/secret"), Err(SafeReadError::Link { .. })),
            "a link on the way"
        );
        assert!(matches!(walk("../x"), Err(SafeReadError::BadPath { .. })));
        // O_PATH|O_NOFOLLOW opens the link itself: fstat then says what it is.
        let pid = File::from(walk("pid").unwrap()).metadata().unwrap();
        assert!(pid.file_type().is_symlink());
        let web = File::from(walk("rkt/status/web").unwrap())
            .metadata()
            .unwrap();
        assert!(web.is_file() && web.len() == 1);
    }
}
