//! Paths inside an app's root file system, looked up as if that directory were `/`.
//!
//! guest-init (PID 1) prepares an app's root before chrooting the app into it: it reads the
//! image's /etc/passwd, creates mount points, mounts over /etc/resolv.conf. Images are full of
//! absolute symlinks (`/etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf`); followed
//! from PID 1's root they would land in the initramfs, not in the image. So every lookup here
//! goes through openat2(2) with RESOLVE_IN_ROOT, which makes the kernel resolve `/`, `..` and
//! symlinks as if the app root were the root. A mount then targets the opened descriptor
//! through its /proc/self/fd link, never a path that could be swapped.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{FileStat, Mode};

/// `struct open_how` of openat2(2). libc's copy is `non_exhaustive`, so it cannot be built
/// outside libc; the layout is fixed kernel ABI (three u64s).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// An app's root directory, held open.
#[derive(Debug)]
pub struct AppRoot {
    path: PathBuf,
    dir: OwnedFd,
}

impl AppRoot {
    /// Opens `path` (a guest path such as `/rkt/share/stage1/rootfs/opt/stage2/web/rootfs`).
    pub fn open(path: &Path) -> io::Result<AppRoot> {
        let dir = File::open(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok(AppRoot {
            path: path.to_path_buf(),
            dir: dir.into(),
        })
    }

    /// The root as a guest path (what the app is chrooted into).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `in_root` (absolute or relative, both mean "below the root") with `flags`.
    fn open_in_root(&self, in_root: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let relative = relative(in_root);
        let name = CString::new(relative.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let how = OpenHow {
            flags: u64::from((flags | libc::O_CLOEXEC) as u32),
            mode: u64::from(mode),
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: `name` is a NUL-terminated string alive for the call, `how` is a live
        // open_how whose exact size we pass, and the directory descriptor is owned by self.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                name.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// An O_PATH descriptor of `in_root` (symlinks followed inside the root).
    pub fn open_path(&self, in_root: &Path) -> io::Result<OwnedFd> {
        self.open_in_root(in_root, libc::O_PATH, 0)
    }

    /// The status of `in_root` (symlinks followed inside the root).
    pub fn stat(&self, in_root: &Path) -> io::Result<FileStat> {
        let fd = self.open_path(in_root)?;
        nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io::Error::from)
    }

    /// Whether anything (a dangling symlink included) is at `in_root`.
    pub fn exists_no_follow(&self, in_root: &Path) -> bool {
        self.open_in_root(in_root, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .is_ok()
    }

    /// The whole content of the regular file `in_root`, at most `limit` bytes (a bigger file
    /// is refused, so an image cannot make PID 1 allocate without bound).
    pub fn read(&self, in_root: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let file = File::from(self.open_in_root(in_root, libc::O_RDONLY, 0)?);
        let mut content = Vec::new();
        file.take(limit + 1).read_to_end(&mut content)?;
        if content.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {limit} bytes"),
            ));
        }
        Ok(content)
    }

    /// Creates `in_root` and its missing parents as directories (mode 0755, root-owned, as
    /// the appc spec asks for mount points), and returns an O_PATH descriptor of it.
    pub fn create_dirs(&self, in_root: &Path) -> io::Result<OwnedFd> {
        let mut prefix = PathBuf::new();
        let mut current = self.open_path(Path::new("."))?;
        for component in relative(in_root).components() {
            prefix.push(component);
            current = match self.open_in_root(&prefix, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(fd) => fd,
                Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
                    let Component::Normal(name) = component else {
                        return Err(error);
                    };
                    match nix::sys::stat::mkdirat(
                        Some(current.as_raw_fd()),
                        name,
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(errno.into()),
                    }
                    self.open_in_root(&prefix, libc::O_PATH | libc::O_DIRECTORY, 0)?
                }
                Err(error) => return Err(error),
            };
        }
        Ok(current)
    }

    /// Makes sure a file exists at `in_root` (creating missing parent directories and an empty
    /// file, mode 0644, if needed; a dangling symlink is followed inside the root and its
    /// target created), and returns an O_PATH descriptor of it.
    pub fn create_file(&self, in_root: &Path) -> io::Result<OwnedFd> {
        self.create_file_following(in_root, MAX_SYMLINKS)
    }

    fn create_file_following(&self, in_root: &Path, links_left: u32) -> io::Result<OwnedFd> {
        if let Ok(fd) = self.open_path(in_root) {
            return Ok(fd);
        }
        if let Some(target) = self.dangling_link_target(in_root) {
            if links_left == 0 {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            self.create_file_following(&target, links_left - 1)?;
            return self.open_path(in_root);
        }
        if let Some(parent) = relative(in_root).parent() {
            self.create_dirs(parent)?;
        }
        drop(self.open_in_root(in_root, libc::O_WRONLY | libc::O_CREAT, 0o644)?);
        self.open_path(in_root)
    }

    /// Where the symlink at `in_root` points, as a path inside the root; `None` when
    /// `in_root` is not a symlink.
    fn dangling_link_target(&self, in_root: &Path) -> Option<PathBuf> {
        let link = self
            .open_in_root(in_root, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .ok()?;
        // An empty path reads the link the O_PATH descriptor itself refers to.
        let target = nix::fcntl::readlinkat(Some(link.as_raw_fd()), "").ok()?;
        let target = Path::new(&target);
        Some(if target.is_absolute() {
            target.to_path_buf()
        } else {
            relative(in_root)
                .parent()
                .unwrap_or(Path::new(""))
                .join(target)
        })
    }

    /// Writes `content` to a new file at `in_root`; fails if anything is there already.
    pub fn write_new_file(&self, in_root: &Path, content: &[u8]) -> io::Result<()> {
        use std::io::Write;
        if let Some(parent) = relative(in_root).parent() {
            self.create_dirs(parent)?;
        }
        let fd = self.open_in_root(
            in_root,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o644,
        )?;
        File::from(fd).write_all(content)
    }
}

/// How many symlinks `create_file` follows before giving up (the kernel's own limit is 40).
const MAX_SYMLINKS: u32 = 8;

/// The path of an open descriptor that mount(2) and friends accept in place of a path:
/// the kernel follows the /proc/self/fd link to the very file that was opened.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `in_root` without its leading `/` (`.` for the root itself).
fn relative(in_root: &Path) -> PathBuf {
    let relative: PathBuf = in_root
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if relative.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        relative
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, AppRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = AppRoot::open(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let (dir, root) = root();
        fs::create_dir_all(dir.path().join("real/etc")).unwrap();
        fs::write(
            dir.path().join("real/etc/passwd"),
            "root:x:0:0::/:/bin/sh\n",
        )
        .unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        // On the host, /real/etc/passwd does not exist: only the root-relative lookup works.
        symlink("/real/etc/passwd", dir.path().join("etc/passwd")).unwrap();
        let content = root.read(Path::new("/etc/passwd"), 1000).unwrap();
        assert_eq!(content, b"root:x:0:0::/:/bin/sh\n");
        // `..` stops at the root.
        let content = root.read(Path::new("/../../etc/passwd"), 1000).unwrap();
        assert_eq!(content, b"root:x:0:0::/:/bin/sh\n");
        assert!(
            root.read(Path::new("/etc/passwd"), 5).is_err(),
            "size limit"
        );
    }

    #[test]
    fn creates_directories_and_files_below_the_root_only() {
        let (dir, root) = root();
        root.create_dirs(Path::new("/a/b/c")).unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
        // A symlink pointing "outside" is followed inside the root.
        symlink("/elsewhere", dir.path().join("link")).unwrap();
        // A dangling link is not a directory to create below.
        assert!(root.create_dirs(Path::new("/link/sub")).is_err());
        root.create_dirs(Path::new("/elsewhere/sub")).unwrap();
        assert!(dir.path().join("elsewhere/sub").is_dir());

        fs::create_dir(dir.path().join("etc")).unwrap();
        symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            dir.path().join("etc/resolv.conf"),
        )
        .unwrap();
        root.create_file(Path::new("/etc/resolv.conf")).unwrap();
        assert!(dir
            .path()
            .join("run/systemd/resolve/stub-resolv.conf")
            .is_file());
        root.create_file(Path::new("/new/dir/file")).unwrap();
        assert!(dir.path().join("new/dir/file").is_file());
        // A relative link, and a loop that must end in an error.
        symlink("../data/hosts", dir.path().join("etc/hosts")).unwrap();
        root.create_file(Path::new("/etc/hosts")).unwrap();
        assert!(dir.path().join("data/hosts").is_file());
        symlink("loop", dir.path().join("loop")).unwrap();
        assert!(root.create_file(Path::new("/loop")).is_err());
    }

    #[test]
    fn write_new_file_never_overwrites() {
        let (dir, root) = root();
        root.write_new_file(Path::new("/etc/hosts"), b"127.0.0.1 localhost\n")
            .unwrap();
        assert_eq!(
            fs::read(dir.path().join("etc/hosts")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        assert!(root.write_new_file(Path::new("/etc/hosts"), b"x").is_err());
        assert!(root.exists_no_follow(Path::new("/etc/hosts")));
        symlink("/nowhere", dir.path().join("dangling")).unwrap();
        assert!(root.exists_no_follow(Path::new("/dangling")));
        assert!(!root.exists_no_follow(Path::new("/nothing")));
    }

    #[test]
    fn stat_follows_links_inside_the_root() {
        let (dir, root) = root();
        fs::create_dir(dir.path().join("work")).unwrap();
        symlink("/work", dir.path().join("w")).unwrap();
        let stat = root.stat(Path::new("/w")).unwrap();
        assert_eq!(stat.st_mode & libc::S_IFMT, libc::S_IFDIR);
        assert!(root.stat(Path::new("/missing")).is_err());
        assert_eq!(relative(Path::new("/")), PathBuf::from("."));
        assert_eq!(relative(Path::new("/a/./b")), PathBuf::from("a/b"));
    }
}
