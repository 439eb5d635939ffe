//! The jailed VMM process: reads its [`Request`], builds and enters its jail, runs the VM and
//! writes its [`Reply`]. Runs single-threaded until the VM is built; see the module above for
//! the order of things and why.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jail::root::{Bind, JailRoot};
use pod_control::layout::POD_SHARE_TAG;
use vmm::{SerialOutput, VmConfig, VmmError};

use super::policy::{file_server_caps, JailPolicy};
use super::protocol::{Action, Reply, Request, MAX_MESSAGE, REPLY_FD};
use crate::pod::PodPaths;

/// Where things are inside the jail.
pub mod inside {
    pub const KERNEL: &str = "/vm/kernel";
    pub const INITRD: &str = "/vm/initrd";
    pub const SNAPSHOT: &str = "/snapshot";
    pub const SOCKETS: &str = "/sock";
    pub const SHARES: &str = "/shares";
    pub const KVM: &str = "/dev/kvm";
    pub const TUN: &str = "/dev/net/tun";
    pub const PROC: &str = "/proc";
}

/// The child's whole life; returns its exit status (0: a reply was written).
pub fn main() -> i32 {
    // SAFETY: the parent hands descriptor 3 to us for the reply and nothing else uses it.
    let mut reply_out = unsafe { File::from_raw_fd(REPLY_FD) };
    // The parent may start us before it knows what the VM is (`JailPlan::start_standby`):
    // what needs no request is done while it finishes its set-up.
    let reply = match Namespaces::make().and_then(|ns| Ok((ns, read_request()?))) {
        Ok((namespaces, request)) => serve(request, namespaces),
        Err(err) => Reply::Failed(err),
    };
    let bytes = serde_json::to_vec(&reply).unwrap_or_default();
    if reply_out.write_all(&bytes).is_err() {
        return 1;
    }
    0
}

fn read_request() -> Result<Request, String> {
    let mut text = Vec::new();
    std::io::stdin()
        .take(MAX_MESSAGE)
        .read_to_end(&mut text)
        .map_err(|e| format!("reading the VMM request: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("the VMM request is not valid: {e}"))
}

/// What the child sets up before its request: its own mount, IPC and UTS namespaces, and an
/// empty network namespace to move to at lock-down (it stays in the pod's until its taps are
/// open).
struct Namespaces {
    empty_netns: OwnedFd,
}

impl Namespaces {
    fn make() -> Result<Namespaces, String> {
        let _ = nix::sys::prctl::set_name(c"rkt-vmm");
        let text = |e: &dyn std::fmt::Display| format!("setting up the VMM's jail: {e}");
        jail::root::unshare_namespaces().map_err(|e| text(&e))?;
        let current = || File::open("/proc/thread-self/ns/net").map(OwnedFd::from);
        let pod_netns = current().map_err(|e| text(&e))?;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| text(&e))?;
        let empty_netns = current().map_err(|e| text(&e))?;
        nix::sched::setns(&pod_netns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| text(&e))?;
        Ok(Namespaces { empty_netns })
    }
}

fn serve(request: Request, namespaces: Namespaces) -> Reply {
    let mark = |what: &str| {
        if let Some(origin) = request.debug_timing_origin {
            crate::timing::mark_since(origin, what);
        }
    };
    mark("jailed VMM process: request read");
    let (config, action) = match build_jail(&request) {
        Ok(jailed) => jailed,
        Err(err) => return Reply::Failed(format!("setting up the VMM's jail: {err}")),
    };
    mark("jailed VMM process: jail built and entered");
    let policy = JailPolicy {
        ids: request.ids,
        max_open_files: request.max_open_files,
        vsock_socket: config.vsock.as_ref().map(|v| v.uds_path.clone()),
        debug_timing_origin: request.debug_timing_origin,
        empty_netns: namespaces.empty_netns,
        seccomp: if request.seccomp_log_only {
            vmm::seccomp::Mismatch::Log
        } else {
            vmm::seccomp::Mismatch::KillProcess
        },
    };
    if let Err(err) = vmm::sandbox::install(Arc::new(policy)) {
        return Reply::Failed(err);
    }
    let reply = match action {
        Action::Boot => match vmm::run(config) {
            Ok(outcome) => Reply::Ended(outcome.into()),
            Err(err) => Reply::Failed(err.to_string()),
        },
        Action::MakeSnapshot { dir } => match vmm::snapshot::snapshot_to(config, &dir) {
            Ok(_) => Reply::Saved,
            Err(err) => Reply::Failed(err.to_string()),
        },
        Action::Restore { dir } => match vmm::snapshot::restore_from(config, &dir) {
            Ok(report) => Reply::Ended(report.outcome.into()),
            Err(VmmError::Snapshot(err)) => Reply::SnapshotRefused(err.to_string()),
            Err(err) => Reply::Failed(err.to_string()),
        },
    };
    mark("jailed VMM process: VM ended");
    reply
}

/// Builds the jail from the request, enters it, and returns the configuration and action
/// rewritten to the paths inside.
fn build_jail(request: &Request) -> Result<(VmConfig, Action), String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let root = JailRoot::create(&request.jail_dir).map_err(|e| text(&e))?;
    let mut config = request.config.clone();
    let ro = Bind {
        read_only: true,
        devices: false,
    };
    let rw = Bind::default();

    // A snapshot's directory holds the kernel and initramfs copies a restore boots from.
    let snapshot_dir = match &request.action {
        Action::Boot => None,
        Action::MakeSnapshot { dir } => Some((dir, rw)),
        Action::Restore { dir } => Some((dir, ro)),
    };
    let action = match (&request.action, snapshot_dir) {
        (Action::Boot, _) | (_, None) => Action::Boot,
        (Action::MakeSnapshot { .. }, Some((dir, how))) => {
            bind_snapshot_dir(&root, dir, request.snapshot_dir_identity, how)?;
            Action::MakeSnapshot {
                dir: PathBuf::from(inside::SNAPSHOT),
            }
        }
        (Action::Restore { .. }, Some((dir, how))) => {
            bind_snapshot_dir(&root, dir, request.snapshot_dir_identity, how)?;
            Action::Restore {
                dir: PathBuf::from(inside::SNAPSHOT),
            }
        }
    };
    let in_snapshot = |path: &Path| -> Option<PathBuf> {
        let (dir, _) = snapshot_dir?;
        let rest = path.strip_prefix(dir).ok()?;
        Some(Path::new(inside::SNAPSHOT).join(rest))
    };

    config.kernel.path = match in_snapshot(&config.kernel.path) {
        Some(path) => path,
        None => root
            .bind(&config.kernel.path, inside::KERNEL, ro)
            .map(|_| PathBuf::from(inside::KERNEL))
            .map_err(|e| text(&e))?,
    };
    if let Some(initrd) = &config.kernel.initrd {
        config.kernel.initrd = Some(match in_snapshot(initrd) {
            Some(path) => path,
            None => root
                .bind(initrd, inside::INITRD, ro)
                .map(|_| PathBuf::from(inside::INITRD))
                .map_err(|e| text(&e))?,
        });
    }

    let pod = PodPaths::new(request.pod_dir.clone());
    for share in &mut config.shares {
        let inside = format!("{}/{}", inside::SHARES, share.tag);
        if share.tag == POD_SHARE_TAG {
            let at = root.make_dir(&inside).map_err(|e| text(&e))?;
            crate::guest_view::compose(&pod, &request.share, &at).map_err(|e| text(&e))?;
        } else {
            root.bind(
                &share.host_dir,
                &inside,
                Bind {
                    read_only: share.read_only,
                    devices: false,
                },
            )
            .map_err(|e| text(&e))?;
        }
        share.host_dir = PathBuf::from(inside);
    }

    if let Some(vsock) = &mut config.vsock {
        let dir = vsock
            .uds_path
            .parent()
            .ok_or("the vsock socket has no directory")?;
        let name = vsock
            .uds_path
            .file_name()
            .ok_or("the vsock socket has no name")?;
        root.bind(dir, inside::SOCKETS, rw).map_err(|e| text(&e))?;
        vsock.uds_path = Path::new(inside::SOCKETS).join(name);
    }

    let device = Bind {
        read_only: false,
        devices: true,
    };
    root.bind(Path::new("/dev/kvm"), inside::KVM, device)
        .map_err(|e| text(&e))?;
    if !config.nets.is_empty() {
        root.bind(Path::new("/dev/net/tun"), inside::TUN, device)
            .map_err(|e| text(&e))?;
    }
    // vsock connects through /proc/self/fd (no-follow connect); the VMM's identity reads
    // /proc/self/exe. This proc shows the jail's own pid namespace only.
    root.mount_proc(inside::PROC).map_err(|e| text(&e))?;
    // The parent relays the console into the log file: no host path is written from here.
    if let SerialOutput::File(_) = config.serial {
        config.serial = SerialOutput::Stdout;
    }
    root.enter().map_err(|e| text(&e))?;

    // Every thread made from here on inherits this bounding set; execve could not add more.
    jail::thread_caps::limit_bounding_set(&file_server_caps()).map_err(|e| text(&e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("setting no_new_privs: {e}"))?;
    Ok((config, action))
}

/// Binds the snapshot directory `dir` at `/snapshot`. With `checked` (device and inode of the
/// directory as the stage1 opened and checked it), what `dir` leads to must be that very
/// directory: a descriptor from the host's mount namespace cannot itself be a bind source in
/// this one, so the path is opened again here, and the bind is made from what was opened.
fn bind_snapshot_dir(
    root: &JailRoot,
    dir: &Path,
    checked: Option<(u64, u64)>,
    how: Bind,
) -> Result<PathBuf, String> {
    let reopened = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| format!("opening the snapshot directory {}: {e}", dir.display()))?;
    if let Some(checked) = checked {
        let reopened_identity = nix::sys::stat::fstat(reopened.as_raw_fd())
            .map(|st| (st.st_dev, st.st_ino))
            .map_err(|e| format!("checking the snapshot directory: {e}"))?;
        if reopened_identity != checked {
            return Err(format!(
                "the snapshot directory {} was replaced while the VMM started",
                dir.display()
            ));
        }
    }
    root.bind_descriptor(
        reopened.as_fd(),
        "the snapshot directory",
        inside::SNAPSHOT,
        how,
    )
    .map_err(|e| e.to_string())
}
