//! The jail's root file system: a small tmpfs, in a mount namespace of the process's own,
//! holding only what is bind-mounted into it; entered with pivot_root, the old root detached,
//! then made read-only. What is not bound in does not exist for the process any more.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The tmpfs's options: tiny, root-owned, traversable (the unprivileged threads must reach
/// what is bound in), no devices, set-id bits or executables of its own.
const TMPFS_OPTIONS: &str = "mode=0755,size=1m,nr_inodes=256";
/// Where the old root goes for the moment between pivot_root and its detachment.
const OLD_ROOT: &str = ".old-root";

/// Building or entering the jail failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct RootError {
    what: String,
    source: std::io::Error,
}

/// How a bind mount is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bind {
    /// Read-only.
    pub read_only: bool,
    /// Device nodes may be opened through it (only for binding a device node itself).
    pub devices: bool,
}

/// A jail root being built at `dir` (a host directory, empty, made by the caller).
#[derive(Debug)]
pub struct JailRoot {
    dir: PathBuf,
}

/// Moves the calling process (single-threaded) into mount, IPC and UTS namespaces of its own,
/// whose mounts do not propagate back to the host's.
pub fn unshare_namespaces() -> Result<(), RootError> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(errno("creating the jail's namespaces"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(errno("making the jail's mounts a slave of the host's"))
}

impl JailRoot {
    /// Mounts the jail's tmpfs on `dir`; call after [`unshare_namespaces`].
    pub fn create(dir: &Path) -> Result<JailRoot, RootError> {
        mount(
            Some("rkt-jail"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(TMPFS_OPTIONS),
        )
        .map_err(errno(format!(
            "mounting the jail's tmpfs on {}",
            dir.display()
        )))?;
        Ok(JailRoot {
            dir: dir.to_path_buf(),
        })
    }

    /// Where `inside` (an absolute path in the jail) is on the host before [`JailRoot::enter`].
    pub fn host_path(&self, inside: &str) -> Result<PathBuf, RootError> {
        let relative = Path::new(inside)
            .strip_prefix("/")
            .map_err(|_| invalid(format!("{inside:?} is not an absolute path")))?;
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
            || relative.as_os_str().is_empty()
        {
            return Err(invalid(format!(
                "{inside:?} is not a plain path in the jail"
            )));
        }
        Ok(self.dir.join(relative))
    }

    /// Creates the directory `inside` (and its parents), mode 0755.
    pub fn make_dir(&self, inside: &str) -> Result<PathBuf, RootError> {
        let path = self.host_path(inside)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&path)
            .map_err(io(format!("creating {inside} in the jail")))?;
        Ok(path)
    }

    /// Bind-mounts the host directory or file `source` at `inside`. The source is opened
    /// without following a final symlink and mounted through that descriptor, so what is
    /// mounted is what was opened. Set-id bits and executables never work through a bind.
    pub fn bind(&self, source: &Path, inside: &str, how: Bind) -> Result<PathBuf, RootError> {
        let opened = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(source)
            .map_err(io(format!("opening {} for the jail", source.display())))?;
        self.bind_descriptor(opened.as_fd(), &source.display().to_string(), inside, how)
    }

    /// Bind-mounts what the descriptor `source` (e.g. an `O_PATH` one the parent passed down)
    /// refers to at `inside`; `name` says what it is in messages.
    pub fn bind_descriptor(
        &self,
        source: BorrowedFd<'_>,
        name: &str,
        inside: &str,
        how: Bind,
    ) -> Result<PathBuf, RootError> {
        let is_dir = nix::sys::stat::fstat(source.as_raw_fd())
            .map_err(errno(format!("checking {name}")))?
            .st_mode
            & libc::S_IFMT
            == libc::S_IFDIR;
        let target = self.host_path(inside)?;
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io(format!("creating the parent of {inside} in the jail")))?;
        }
        if is_dir {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&target)
                .map_err(io(format!("creating {inside} in the jail")))?;
        } else {
            File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(io(format!("creating {inside} in the jail")))?;
        }
        let by_fd = format!("/proc/self/fd/{}", source.as_raw_fd());
        mount(
            Some(by_fd.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(errno(format!("binding {name} at {inside}")))?;
        let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID;
        flags |= MsFlags::MS_NOEXEC;
        if !how.devices {
            flags |= MsFlags::MS_NODEV;
        }
        if how.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
            .map_err(errno(format!("restricting the bind at {inside}")))?;
        Ok(target)
    }

    /// Mounts a proc file system at `inside` that shows processes only (no /proc/sys, no
    /// kernel files), and of those only the process's own pid namespace: call from inside it.
    pub fn mount_proc(&self, inside: &str) -> Result<(), RootError> {
        let target = self.make_dir(inside)?;
        mount(
            Some("proc"),
            &target,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("subset=pid,hidepid=invisible"),
        )
        .map_err(errno(format!("mounting proc at {inside} in the jail")))
    }

    /// Makes the jail the process's root: pivot_root, the old root detached (every host path
    /// is gone), the working directory `/`, and the jail's own tmpfs read-only.
    pub fn enter(self) -> Result<(), RootError> {
        let old = self.dir.join(OLD_ROOT);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&old)
            .map_err(io("creating the old root's mount point"))?;
        nix::unistd::pivot_root(&self.dir, &old).map_err(errno("pivot_root into the jail"))?;
        nix::unistd::chdir("/").map_err(errno("changing into the jail's root"))?;
        let old_inside = Path::new("/").join(OLD_ROOT);
        umount2(&old_inside, MntFlags::MNT_DETACH).map_err(errno("detaching the host's root"))?;
        fs::remove_dir(&old_inside).map_err(io("removing the old root's mount point"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(errno("making the jail's root read-only"))
    }
}

fn invalid(what: String) -> RootError {
    RootError {
        what,
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    }
}

fn io<W: Into<String>>(what: W) -> impl FnOnce(std::io::Error) -> RootError {
    let what = what.into();
    move |source| RootError { what, source }
}

fn errno<W: Into<String>>(what: W) -> impl FnOnce(nix::errno::Errno) -> RootError {
    let what = what.into();
    move |errno| RootError {
        what,
        source: errno.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_paths_are_plain_and_absolute() {
        let root = JailRoot {
            dir: PathBuf::from("/run/x/jail"),
        };
        assert_eq!(
            root.host_path("/dev/kvm").unwrap(),
            Path::new("/run/x/jail/dev/kvm")
        );
        for bad in ["dev/kvm", "/../etc", "/a/../b", "/"] {
            assert!(root.host_path(bad).is_err(), "{bad}");
        }
    }

    /// The whole sequence in a child process (namespaces are per process): after entering,
    /// only what was bound in exists, read-only where asked, and the host's root is gone.
    #[test]
    fn a_process_in_the_jail_sees_only_what_was_bound() {
        let host = tempfile::tempdir().unwrap();
        let jail_dir = host.path().join("jail");
        fs::create_dir(&jail_dir).unwrap();
        let shared = host.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("file"), "hello").unwrap();
        let kernel = host.path().join("kernel");
        fs::write(&kernel, "k").unwrap();

        // SAFETY: the child only makes system calls and exits; it never returns into the
        // test harness.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| -> Result<(), String> {
                    unshare_namespaces().map_err(|e| e.to_string())?;
                    let root = JailRoot::create(&jail_dir).map_err(|e| e.to_string())?;
                    root.bind(&shared, "/shares/a", Bind::default())
                        .map_err(|e| e.to_string())?;
                    root.bind(
                        &kernel,
                        "/kernel",
                        Bind {
                            read_only: true,
                            devices: false,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                    root.enter().map_err(|e| e.to_string())?;
                    let seen = |p: &str| Path::new(p).exists();
                    if seen("/etc") || seen("/proc") || seen("/.old-root") {
                        return Err("host paths are visible".into());
                    }
                    if fs::read_to_string("/shares/a/file").map_err(|e| e.to_string())? != "hello" {
                        return Err("the share's content is wrong".into());
                    }
                    fs::write("/shares/a/new", "w").map_err(|e| e.to_string())?;
                    if fs::write("/kernel", "x").is_ok() || fs::write("/planted", "x").is_ok() {
                        return Err("a read-only place took a write".into());
                    }
                    Ok(())
                })();
                let status = match code {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("jail child: {e}");
                        1
                    }
                };
                // SAFETY: ends the forked child without running the harness's exit code.
                unsafe { libc::_exit(status) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
                assert_eq!(fs::read_to_string(shared.join("new")).unwrap(), "w");
            }
        }
    }
}
