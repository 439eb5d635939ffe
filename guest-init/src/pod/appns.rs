//! A mount namespace per app, whose root is the app's root and nothing else.
//!
//! guest-init builds the app's root in its own namespace (mounts.rs: /sys, /dev, volumes...).
//! Then a helper process, forked into the pod's pid namespace, makes the app's namespace:
//! `unshare(CLONE_NEWNS)`, all mounts private (nothing made later on either side propagates to
//! the other), a fresh /proc mounted from inside the pod's pid namespace (so it lists the pod's
//! processes only), the masked and read-only paths (paths.rs), then the app root becomes the
//! namespace's root and every other mount of guest-init's is detached ([`isolate_root`]).
//! guest-init opens `/proc/<helper>/ns/mnt` and lets the helper go; every process of the app
//! (the app, its event handlers, `enter` commands) then joins that namespace with setns(2),
//! which also puts its root and working directory at the namespace's root.
//!
//! pivot_root(2) is not usable here: it refuses when the current root is the initramfs
//! (rootfs, a mount without a parent), which is guest-init's root. The same end state is
//! reached the way switch_root does it: the app root is moved onto `/` (MS_MOVE) and chrooted
//! into, then every mount of guest-init's that the moved root now covers (the pod share, /proc,
//! /sys, /dev, /run, the volume shares, the cgroup tree) is unmounted with MNT_DETACH. What
//! stays below is the bare rootfs, covered by the app root: no path reaches it (a `..` at the
//! top of the app root lands back on the app root, which is mounted on top of it), and it does
//! not appear in the app's /proc/self/mountinfo.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::ForkResult;
use thiserror::Error;

use super::paths;
use super::pidns::PodPidNamespace;
use super::rootfs::{fd_path, AppRoot};

/// Where the reaper's empty root is mounted before it becomes its root.
const REAPER_ROOT: &str = "/run/rkt-pod-reaper";

#[derive(Debug, Error)]
pub enum AppNsError {
    #[error("cannot create its mount namespace: {0}")]
    Create(io::Error),
    #[error("cannot set up its mount namespace: {0}")]
    Setup(String),
}

/// An app's mount namespace, held open by guest-init.
#[derive(Debug)]
pub struct AppNamespace {
    mnt: OwnedFd,
}

impl AppNamespace {
    /// Makes the namespace of the app whose root (built by mounts.rs) is `root`; `mask`: apply
    /// the masked and read-only paths (off with `rkt.disable=paths`).
    pub fn create(
        pid_ns: &PodPidNamespace,
        root: &Path,
        mask: bool,
    ) -> Result<AppNamespace, AppNsError> {
        let (result_read, result_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io_error)?;
        let (go_read, go_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io_error)?;
        // SAFETY: guest-init is single-threaded (main.rs).
        match unsafe { pid_ns.fork_in(None) }.map_err(AppNsError::Create)? {
            ForkResult::Child => {
                drop((result_read, go_write));
                helper(root, mask, result_write, go_read)
            }
            ForkResult::Parent { child } => {
                drop((result_write, go_read));
                let mut message = String::new();
                let read = File::from(result_read).read_to_string(&mut message);
                let opened = match (read, message.is_empty()) {
                    (Ok(_), true) => {
                        File::open(format!("/proc/{child}/ns/mnt")).map_err(AppNsError::Create)
                    }
                    (Ok(_), false) => Err(AppNsError::Setup(message)),
                    (Err(error), _) => Err(AppNsError::Create(error)),
                };
                // The helper leaves once it sees the end of this pipe; the namespace lives on
                // as long as guest-init holds it open.
                drop(go_write);
                let _ = nix::sys::wait::waitpid(child, None);
                Ok(AppNamespace {
                    mnt: opened?.into(),
                })
            }
        }
    }

    /// A second descriptor (for an `enter` handler process).
    pub fn try_clone(&self) -> io::Result<AppNamespace> {
        Ok(AppNamespace {
            mnt: self.mnt.try_clone()?,
        })
    }

    /// Joins the namespace: the caller's root and working directory become the app's root.
    pub fn join(&self) -> io::Result<()> {
        nix::sched::setns(&self.mnt, CloneFlags::CLONE_NEWNS).map_err(|errno| {
            io::Error::new(
                io::Error::from(errno).kind(),
                format!("cannot join the app's mount namespace: {errno}"),
            )
        })
    }
}

fn io_error(errno: nix::errno::Errno) -> AppNsError {
    AppNsError::Create(errno.into())
}

/// The helper's side: builds the namespace, reports on `result` (nothing: success), waits for
/// guest-init to have opened it, exits.
fn helper(root: &Path, mask: bool, result: OwnedFd, go: OwnedFd) -> ! {
    let outcome = build(root, mask);
    let mut result = File::from(result);
    let code = match outcome {
        Ok(()) => {
            drop(result);
            0
        }
        Err(message) => {
            let _ = result.write_all(message.as_bytes());
            drop(result);
            1
        }
    };
    // Returns at EOF, when guest-init has the namespace open (or gave up).
    let _ = File::from(go).read(&mut [0u8; 1]);
    // SAFETY: _exit ends this forked helper without running PID 1's exit handlers.
    unsafe { libc::_exit(code) }
}

fn build(root: &Path, mask: bool) -> Result<(), String> {
    let step = |what: &str| {
        let what = what.to_owned();
        move |error: io::Error| format!("{what}: {error}")
    };
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|errno| step("unshare(CLONE_NEWNS)")(errno.into()))?;
    make_private().map_err(step("make every mount private"))?;
    // Reopened in this namespace: a descriptor opened by guest-init would walk guest-init's
    // mounts, not the copies that this namespace changes.
    let app_root = AppRoot::open(root).map_err(step("open the app root"))?;
    let proc_dir = app_root
        .create_dirs(Path::new("/proc"))
        .map_err(step("create /proc"))?;
    nix::mount::mount(
        Some("proc"),
        &fd_path(&proc_dir),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| step("mount the app's /proc")(errno.into()))?;
    drop(proc_dir);
    if mask {
        paths::apply(&app_root).map_err(|error| error.to_string())?;
    }
    drop(app_root);
    isolate_root(root).map_err(step("make the app root the namespace's root"))
}

fn make_private() -> io::Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// In the caller's own (unshared, private) mount namespace: makes the mount at `new_root` the
/// root, and detaches every other mount of the old root. See the module comment for why not
/// pivot_root.
pub fn isolate_root(new_root: &Path) -> io::Result<()> {
    let others = top_level_mounts()?;
    nix::unistd::chdir(new_root)?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
    // Until the chroot, absolute paths still start at the old root's own directory (not at
    // the mount now on top of it), so they name the old root's mounts.
    for mount_point in others {
        match nix::mount::umount2(&mount_point, MntFlags::MNT_DETACH) {
            // Gone with a parent detached before it.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(errno) => {
                return Err(io::Error::new(
                    io::Error::from(errno).kind(),
                    format!("detach {}: {errno}", mount_point.display()),
                ))
            }
        }
    }
    nix::unistd::chroot(".")?;
    nix::unistd::chdir("/")?;
    Ok(())
}

/// The mount points directly below the root mount, from /proc/self/mountinfo.
fn top_level_mounts() -> io::Result<Vec<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(children_of_root(&info))
}

/// Mount points of `mountinfo` lines whose parent is the mount at `/`.
fn children_of_root(mountinfo: &str) -> Vec<PathBuf> {
    let lines: Vec<Vec<&str>> = mountinfo
        .lines()
        .map(|line| line.split(' ').collect())
        .filter(|fields: &Vec<&str>| fields.len() > 4)
        .collect();
    // The last mount on `/` is the one in use (earlier ones are covered by it).
    let Some(root_id) = lines.iter().rev().find(|f| f[4] == "/").map(|f| f[0]) else {
        return Vec::new();
    };
    lines
        .iter()
        .filter(|f| f[1] == root_id && f[4] != "/")
        .map(|f| PathBuf::from(unescape(f[4])))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The reaper's side (pidns.rs): a mount namespace whose root is an empty read-only tmpfs, so
/// `/proc/1/root` of the pod's namespace leads nowhere.
pub fn isolate_reaper() -> io::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
    make_private()?;
    fs::create_dir_all(REAPER_ROOT)?;
    nix::mount::mount(
        Some("reaper"),
        REAPER_ROOT,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0555"),
    )?;
    isolate_root(Path::new(REAPER_ROOT))
}

/// For tests: whether the current root has the inode of `dir`.
#[cfg(test)]
fn root_is(stat: &nix::sys::stat::FileStat) -> bool {
    nix::sys::stat::stat("/").is_ok_and(|s| s.st_dev == stat.st_dev && s.st_ino == stat.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_children_of_the_root_mount() {
        let info = "\
1 1 0:2 / / rw - rootfs rootfs rw
20 1 0:5 / /proc rw,nosuid - proc proc rw
21 1 0:6 / /rkt/share rw - virtiofs pod rw
22 21 0:6 /x /rkt/share/x rw - virtiofs pod rw
23 1 0:7 / /with\\040space rw - tmpfs t rw
";
        assert_eq!(
            children_of_root(info),
            [
                PathBuf::from("/proc"),
                PathBuf::from("/rkt/share"),
                PathBuf::from("/with space")
            ]
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\"), "trailing\\");
        assert!(children_of_root("").is_empty());
    }

    /// In a forked child on this host (root needed): a tmpfs becomes the root, and the host's
    /// mounts are gone from the child's view.
    #[test]
    fn isolate_root_leaves_only_the_new_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        crate::pod::testutil::in_child(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| e.to_string())?;
            make_private().map_err(|e| e.to_string())?;
            nix::mount::mount(
                Some("t"),
                &path,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| e.to_string())?;
            fs::write(path.join("marker"), "x").map_err(|e| e.to_string())?;
            let stat = nix::sys::stat::stat(&path).map_err(|e| e.to_string())?;
            // The old root's own directory, to see afterwards that its mounts were detached
            // (not merely covered).
            let old_root = File::open("/").map_err(|e| e.to_string())?;
            isolate_root(&path).map_err(|e| e.to_string())?;
            let proc_left = nix::sys::stat::fstatat(
                Some(std::os::fd::AsRawFd::as_raw_fd(&old_root)),
                "proc/self",
                nix::fcntl::AtFlags::empty(),
            );
            if proc_left.is_ok() {
                return Err("the old root's /proc is still mounted below".into());
            }
            if !root_is(&stat) || fs::read_to_string("/marker").ok().as_deref() != Some("x") {
                return Err("the root is not the tmpfs".into());
            }
            // `..` from the top stays on the new root.
            if !Path::new("/../../marker").exists() {
                return Err("`..` left the root".into());
            }
            if Path::new("/proc/self").exists() || Path::new("/etc").exists() {
                return Err("the old root's files are visible".into());
            }
            Ok(())
        });
    }
}
