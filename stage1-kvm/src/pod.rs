//! The pod directory as stage1 sees it (docs/pods.md): the lock descriptor stage0 hands over,
//! the reified pod manifest, and the paths stage1 reads and writes. Stage1 runs with the pod
//! directory as its working directory.

use std::fs;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use appc::PodManifest;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::error::Stage1Error;

/// The environment variable carrying the locked pod directory's descriptor.
pub const ENV_LOCK_FD: &str = "RKT_LOCK_FD";
/// The guest kernel, inside the stage1 rootfs.
pub const KERNEL_FILE: &str = "vmlinux";
/// The pod initramfs (guest-init alone), inside the stage1 rootfs.
pub const INITRD_FILE: &str = "initramfs.cpio";

/// Takes over `RKT_LOCK_FD`: checks that it is an open descriptor of `pod_dir` itself and
/// makes it close-on-exec, so no child we ever start keeps the pod "running" after we are
/// gone. The returned descriptor must live as long as the pod: dropping it ends the pod.
pub fn take_lock(pod_dir: &Path) -> Result<OwnedFd, Stage1Error> {
    let text = std::env::var(ENV_LOCK_FD)
        .map_err(|_| Stage1Error::Lock(format!("{ENV_LOCK_FD} is not set")))?;
    let fd: RawFd = text
        .trim()
        .parse()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| Stage1Error::Lock(format!("{ENV_LOCK_FD}={text:?} is not a descriptor")))?;
    let flags = fcntl(fd, FcntlArg::F_GETFD)
        .map_err(|e| Stage1Error::Lock(format!("{ENV_LOCK_FD}={fd} is not open ({e})")))?;
    let cwd = fs::metadata(pod_dir).map_err(Stage1Error::io("reading the pod directory"))?;
    let held = fs::metadata(format!("/proc/self/fd/{fd}"))
        .map_err(Stage1Error::io(format!("inspecting {ENV_LOCK_FD}={fd}")))?;
    if (held.dev(), held.ino()) != (cwd.dev(), cwd.ino()) {
        return Err(Stage1Error::Lock(format!(
            "{ENV_LOCK_FD}={fd} is not the pod directory {}",
            pod_dir.display()
        )));
    }
    let mut flags = FdFlag::from_bits_truncate(flags);
    flags.insert(FdFlag::FD_CLOEXEC);
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map_err(|e| Stage1Error::Lock(format!("cannot keep {ENV_LOCK_FD}={fd} private ({e})")))?;
    // SAFETY: the descriptor is open (F_GETFD succeeded) and stage0 handed it to us to own; no
    // other object in this process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Paths inside a pod directory.
#[derive(Clone, Debug)]
pub struct PodPaths {
    pub dir: PathBuf,
}

impl PodPaths {
    pub fn new(dir: PathBuf) -> PodPaths {
        PodPaths { dir }
    }

    /// The reified pod manifest.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join("pod")
    }

    /// The PID file `rkt status`/`enter`/`stop` read.
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }

    pub fn stage1_rootfs(&self) -> PathBuf {
        self.dir.join("stage1/rootfs")
    }

    pub fn kernel(&self) -> PathBuf {
        self.stage1_rootfs().join(KERNEL_FILE)
    }

    pub fn initrd(&self) -> PathBuf {
        self.stage1_rootfs().join(INITRD_FILE)
    }

    /// rkt's app status files, which this stage1 writes from guest-init's reports.
    pub fn status_dir(&self) -> PathBuf {
        self.stage1_rootfs().join("rkt/status")
    }

    /// Where empty volumes live (bind-mounted into the pod share, `guest_view`): in this
    /// stage1's own directory rather than rkt's `stage1/rootfs/rkt/volumes`, because stage1's
    /// rootfs may be an overlay that `--disk-limit` leaves unbounded (only the host writes
    /// there), while what the guest writes into a volume must count against the limit.
    pub fn empty_volume(&self, name: &str) -> PathBuf {
        self.own_dir().join("volumes").join(name)
    }

    /// App `name`'s root file system, as stage0 rendered or mounted it.
    pub fn app_rootfs(&self, name: &str) -> PathBuf {
        self.stage1_rootfs()
            .join("opt/stage2")
            .join(name)
            .join("rootfs")
    }

    /// App `name`'s image manifest, as stage0 wrote it.
    pub fn app_manifest(&self, name: &str) -> PathBuf {
        self.stage1_rootfs()
            .join("opt/stage2")
            .join(name)
            .join("manifest")
    }

    /// The guest's network description (written by `net`, copied into the pod share).
    pub fn guest_network_file(&self) -> PathBuf {
        self.stage1_rootfs()
            .join(crate::net::guest::GUEST_NETWORK_FILE)
    }

    /// The apps' /etc/hosts, when stage0 (`--hosts-entry`) or `dns` wrote one.
    pub fn hosts_file(&self) -> PathBuf {
        self.stage1_rootfs().join("etc/rkt-hosts")
    }

    /// The apps' /etc/resolv.conf, when stage0 (`--dns`), `dns` or `net` wrote one.
    pub fn resolv_file(&self) -> PathBuf {
        self.stage1_rootfs().join("etc/rkt-resolv.conf")
    }

    /// Stage1's own directory (host-side only: logs, console, the vsock socket).
    pub fn own_dir(&self) -> PathBuf {
        self.dir.join("stage1-kvm")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.own_dir().join("logs")
    }

    /// The guest's serial console when it is not on our stdout (`--debug`).
    pub fn console_log(&self) -> PathBuf {
        self.own_dir().join("console.log")
    }

    /// Reads and checks the reified pod manifest.
    pub fn read_manifest(&self) -> Result<PodManifest, Stage1Error> {
        let path = self.manifest();
        let bytes = fs::read(&path).map_err(Stage1Error::io(format!(
            "reading the pod manifest {}",
            path.display()
        )))?;
        PodManifest::from_json(&bytes).map_err(|err| Stage1Error::BadFile {
            path,
            problem: err.to_string(),
        })
    }

    /// Writes `pid` (our PID: the VM runs in this process) whole: temp file, then rename.
    pub fn write_pid(&self) -> Result<(), Stage1Error> {
        write_whole(&self.pid(), format!("{}\n", std::process::id()).as_bytes())
    }
}

/// Writes `path` so that a reader sees either the old file or all of the new one.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), Stage1Error> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{name}.stage1-tmp"));
    let context = format!("writing {}", path.display());
    (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })()
    .map_err(Stage1Error::io(context))
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::*;

    #[test]
    fn paths_follow_the_pod_layout() {
        let p = PodPaths::new(PathBuf::from("/d/pods/run/u"));
        assert_eq!(p.kernel(), Path::new("/d/pods/run/u/stage1/rootfs/vmlinux"));
        assert_eq!(
            p.status_dir(),
            Path::new("/d/pods/run/u/stage1/rootfs/rkt/status")
        );
        assert_eq!(
            p.empty_volume("cache"),
            Path::new("/d/pods/run/u/stage1-kvm/volumes/cache")
        );
        assert_eq!(p.logs_dir(), Path::new("/d/pods/run/u/stage1-kvm/logs"));
    }

    #[test]
    fn pid_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = PodPaths::new(dir.path().to_path_buf());
        p.write_pid().unwrap();
        assert_eq!(
            fs::read_to_string(p.pid()).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp left");
    }

    // One test for every RKT_LOCK_FD case: the environment is process-wide.
    #[test]
    fn the_lock_descriptor_must_be_the_pod_directory() {
        let pod = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::env::remove_var(ENV_LOCK_FD);
        assert!(take_lock(pod.path())
            .unwrap_err()
            .to_string()
            .contains("not set"));
        std::env::set_var(ENV_LOCK_FD, "x");
        assert!(take_lock(pod.path()).is_err());
        std::env::set_var(ENV_LOCK_FD, "987654");
        assert!(take_lock(pod.path())
            .unwrap_err()
            .to_string()
            .contains("not open"));

        let wrong = fs::File::open(other.path()).unwrap().into_raw_fd();
        std::env::set_var(ENV_LOCK_FD, wrong.to_string());
        assert!(take_lock(pod.path())
            .unwrap_err()
            .to_string()
            .contains("not the pod directory"));
        // SAFETY: `wrong` was leaked above by into_raw_fd and is closed exactly once here.
        drop(unsafe { OwnedFd::from_raw_fd(wrong) });

        let right = fs::File::open(pod.path()).unwrap();
        // Rust opens close-on-exec; stage0 clears it for the handover.
        fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&right),
            FcntlArg::F_SETFD(FdFlag::empty()),
        )
        .unwrap();
        let fd = right.into_raw_fd();
        std::env::set_var(ENV_LOCK_FD, fd.to_string());
        let owned = take_lock(pod.path()).unwrap();
        let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(flags.contains(FdFlag::FD_CLOEXEC));
        drop(owned);
        std::env::remove_var(ENV_LOCK_FD);
    }
}
