//! The stage1's side: starts the jailed VMM process for one VM, feeds it its request, relays
//! its console, waits for it and reads its reply; the cgroup lives exactly as long.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use jail::{Cgroup, CgroupLimits, PodIds};
use nix::sched::{unshare, CloneFlags};
use vmm::{SerialOutput, VmConfig};

use super::policy::file_server_caps;
use super::protocol::{Action, Outcome, Reply, Request, MAX_MESSAGE, REPLY_FD};
use super::stopper::{kill_through, pidfd_of_child, VmStopper};
use super::CHILD_ARG;
use crate::error::Stage1Error;
use crate::guest_view::ShareContents;

/// The cgroup group every VMM's cgroup is made in, under the unified hierarchy's root.
pub const CGROUP_GROUP: &str = "rkt-kvm";
/// What the VMM process may use beyond guest RAM (docs/security.md): its own code and heap
/// (~30 MiB resident), virtio-fs's inode and handle tables and request buffers, and the page
/// cache of what it reads and writes for the guest (reclaimable, but charged to it).
pub const MEMORY_OVERHEAD_MIB: u64 = 128;
/// Threads beyond one per vCPU and one per share: main, spawner, net, vsock, rng, and slack
/// for a device reset racing its restart.
const PIDS_BASE: u64 = 16;
/// `RKT_STAGE1_KVM_SECCOMP=log`: calls outside the VMM's seccomp lists are logged to the
/// kernel log (audit type 1326) instead of killing it; for finding what a list misses.
pub const SECCOMP_ENV: &str = "RKT_STAGE1_KVM_SECCOMP";
/// Descriptors beyond the shares' inode tables: KVM, devices, eventfds, sockets.
const BASE_OPEN_FILES: u64 = 1024;

/// What stays the same for every VM of one pod run.
pub struct JailPlan<'a> {
    pub uuid: &'a str,
    pub pod_dir: &'a Path,
    /// What the pod share holds (the VMM composes it in its jail).
    pub share: ShareContents,
    /// The host directory the jail's root is mounted on (`RunDir::jail`).
    pub jail_dir: &'a Path,
    /// The pod's network namespace (`--net` other than none), which every VMM process of the
    /// plan joins. Held open, not borrowed from the `PodNetwork`: the network may be released
    /// (CNI DEL) while the last VMM is still dying (`run`'s early stop).
    pub network_namespace: Option<OwnedFd>,
    pub debug: bool,
    /// A VMM process started ahead of its request ([`JailPlan::start_standby`]), which the
    /// next [`JailPlan::run`] takes.
    standby: Mutex<Option<VmmProcess>>,
    /// Stops the VM that is running, from another thread ([`JailPlan::stopper`]).
    stopper: Arc<VmStopper>,
}

impl<'a> JailPlan<'a> {
    pub fn new(
        uuid: &'a str,
        pod_dir: &'a Path,
        share: ShareContents,
        jail_dir: &'a Path,
        network_namespace: Option<OwnedFd>,
        debug: bool,
    ) -> JailPlan<'a> {
        JailPlan {
            uuid,
            pod_dir,
            share,
            jail_dir,
            network_namespace,
            debug,
            standby: Mutex::new(None),
            stopper: Arc::default(),
        }
    }

    /// Stops whichever VM of this plan runs when it is called: for a pod that is over (every
    /// status in, the guest's status stream and every output stream ended); the run then ends
    /// as a clean stop.
    pub fn stopper(&self) -> Arc<VmStopper> {
        Arc::clone(&self.stopper)
    }

    /// The VMM's unprivileged ids.
    pub fn ids(&self) -> PodIds {
        PodIds::of_pod(self.uuid)
    }

    /// Starts the VMM process for the VM `config` describes now, so that its start-up (a
    /// cgroup, a pid namespace, exec, its own namespaces) overlaps the stage1's remaining
    /// set-up; the next [`JailPlan::run`] hands it its request. A failure here is only noted:
    /// `run` then starts the process itself and reports what goes wrong.
    pub fn start_standby(&self, config: &VmConfig) {
        match VmmProcess::start(self, config) {
            Ok(process) => {
                if let Ok(mut standby) = self.standby.lock() {
                    *standby = Some(process);
                }
            }
            Err(err) if self.debug => eprintln!("stage1-kvm: starting the VMM early: {err}"),
            Err(_) => {}
        }
    }

    /// Runs `action` on a VM described by `config` in a jailed VMM process.
    pub fn run(&self, action: Action, config: VmConfig) -> Result<Reply, Stage1Error> {
        let standby = self.standby.lock().ok().and_then(|mut s| s.take());
        let process = match standby {
            Some(process) => process,
            None => VmmProcess::start(self, &config)?,
        };
        process.serve(self, action, config)
    }

    fn mark(&self, what: &str) {
        if let Some(origin) = self.debug.then(crate::timing::rkt_started_at).flatten() {
            crate::timing::mark_since(origin, what);
        }
    }
}

/// A jailed VMM process waiting for its request: in its cgroup, its pid namespace and the
/// pod's network namespace, its own namespaces made. Killed (and its cgroup removed) if
/// dropped before it served one.
struct VmmProcess {
    cgroup: Option<Cgroup>,
    /// [`pod_memory_backed_bytes`], for the action's own limits.
    memory_backed: u64,
    /// The thread that started the child and waits for it (the child's parent-death signal
    /// is tied to it).
    launcher: Option<JoinHandle<Result<ExitStatus, Stage1Error>>>,
    pid: u32,
    /// A pidfd of the child, for [`VmStopper`].
    pidfd: Option<OwnedFd>,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
    reply_in: Option<std::io::PipeReader>,
}

impl VmmProcess {
    /// Creates the cgroup (with the largest limits `config` may need; [`VmmProcess::serve`]
    /// sets the action's own), then the child, in it.
    fn start(plan: &JailPlan, config: &VmConfig) -> Result<VmmProcess, Stage1Error> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(plan.jail_dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(Stage1Error::io(format!(
                "creating {}",
                plan.jail_dir.display()
            )))?;
        let memory_backed = pod_memory_backed_bytes(config, plan.pod_dir);
        let largest = cgroup_limits(
            config,
            &Action::MakeSnapshot {
                dir: PathBuf::new(),
            },
            memory_backed,
        );
        let cgroup = Cgroup::create(
            Path::new(jail::cgroup::CGROUP_ROOT),
            CGROUP_GROUP,
            plan.uuid,
            largest,
        )
        .map_err(|e| Stage1Error::Unsupported(e.to_string()))?;
        let netns = match plan.network_namespace.as_ref().map(OwnedFd::try_clone) {
            Some(Err(err)) => {
                let _ = cgroup.remove();
                return Err(Stage1Error::Network(format!(
                    "cannot hold the pod's network namespace for its VMM: {err}"
                )));
            }
            Some(Ok(fd)) => Some(fd),
            None => None,
        };
        let (started_tx, started_rx) = mpsc::channel();
        let launcher = std::thread::Builder::new()
            .name("vmm-launcher".into())
            .spawn(move || launch(netns, started_tx))
            .map_err(Stage1Error::io("starting the VMM's launcher thread"));
        let launcher = match launcher {
            Ok(launcher) => launcher,
            Err(err) => {
                let _ = cgroup.remove();
                return Err(err);
            }
        };
        let Ok(started) = started_rx.recv() else {
            // The launcher failed before the child existed; its error says why.
            let err = launcher.join().unwrap_or_else(|_| {
                Err(Stage1Error::Jail(
                    "the VMM's launcher thread panicked".into(),
                ))
            });
            let _ = cgroup.remove();
            return Err(err
                .err()
                .unwrap_or_else(|| Stage1Error::Jail("the VMM did not start".into())));
        };
        let process = VmmProcess {
            cgroup: Some(cgroup),
            memory_backed,
            launcher: Some(launcher),
            pid: started.pid,
            pidfd: started.pidfd,
            stdin: started.stdin,
            stdout: started.stdout,
            reply_in: Some(started.reply_in),
        };
        if let Some(cgroup) = &process.cgroup {
            // Dropping `process` kills the child and removes the cgroup.
            cgroup
                .add(process.pid)
                .map_err(|e| Stage1Error::Jail(e.to_string()))?;
        }
        plan.mark("jailed VMM process started");
        Ok(process)
    }

    /// Sends the child its request for `action` on `config`, relays its console, and waits
    /// for its reply and its end; the cgroup goes with it.
    fn serve(
        mut self,
        plan: &JailPlan,
        action: Action,
        mut config: VmConfig,
    ) -> Result<Reply, Stage1Error> {
        let result = self.serve_inner(plan, action, &mut config);
        if let Some(cgroup) = self.cgroup.take() {
            if let Err(err) = cgroup.remove() {
                eprintln!("stage1-kvm: {err} (rkt gc will try again)");
            }
            plan.mark("the VMM's cgroup removed");
        }
        result
    }

    fn serve_inner(
        &mut self,
        plan: &JailPlan,
        action: Action,
        config: &mut VmConfig,
    ) -> Result<Reply, Stage1Error> {
        let seccomp_log_only = seccomp_log_only()?;
        let limits = cgroup_limits(config, &action, self.memory_backed);
        if let Some(cgroup) = &mut self.cgroup {
            cgroup
                .set_limits(limits)
                .map_err(|e| Stage1Error::Jail(e.to_string()))?;
        }
        let console = match &config.serial {
            SerialOutput::File(path) => Some((path.clone(), config.console_max_bytes)),
            _ => None,
        };
        config.serial = SerialOutput::Stdout;
        let (action, snapshot_dir) = pass_snapshot_dir(action, config);
        let snapshot_dir_identity = snapshot_dir
            .map(|fd| {
                nix::sys::stat::fstat(fd)
                    .map(|st| (st.st_dev, st.st_ino))
                    .map_err(|e| Stage1Error::Jail(format!("checking the snapshot directory: {e}")))
            })
            .transpose()?;
        let request = Request {
            action,
            snapshot_dir_identity,
            seccomp_log_only,
            max_open_files: max_open_files(config),
            config: config.clone(),
            pod_dir: plan.pod_dir.to_path_buf(),
            share: plan.share.clone(),
            jail_dir: plan.jail_dir.to_path_buf(),
            ids: plan.ids(),
            debug_timing_origin: plan.debug.then(crate::timing::rkt_started_at).flatten(),
        };
        if plan.debug {
            eprintln!("{}", describe(&request, limits, plan.uuid));
        }
        let body = serde_json::to_vec(&request).map_err(|e| Stage1Error::Jail(e.to_string()))?;
        plan.mark("sending the jailed VMM process its request");
        let relay = self.stdout.take().map(|out| relay_console(out, console));
        // Closed once written: the child reads its request to the end.
        let fed = match self.stdin.take() {
            Some(mut stdin) => stdin
                .write_all(&body)
                .map_err(Stage1Error::io("sending the VMM its request")),
            None => Err(Stage1Error::Jail("the VMM process has no stdin".into())),
        };
        if fed.is_err() {
            self.kill();
        }
        plan.stopper.set_serving(self.pidfd.take());
        let mut reply = Vec::new();
        let read = match self.reply_in.take() {
            Some(reply_in) => reply_in.take(MAX_MESSAGE).read_to_end(&mut reply),
            None => Ok(0),
        };
        let status = self.join_launcher();
        plan.stopper.set_serving(None);
        let status = status?;
        plan.mark("jailed VMM process ended");
        if let Some(relay) = relay {
            let _ = relay.join();
        }
        // Killed on purpose because the pod was over: a clean stop, unless it had already
        // replied (it ended by itself first).
        if plan.stopper.take_stopped() && reply.is_empty() && status.signal() == Some(libc::SIGKILL)
        {
            plan.mark("the pod was over: VM stopped by the host");
            return Ok(Reply::Ended(Outcome::CleanStop));
        }
        fed?;
        read.map_err(Stage1Error::io("reading the VMM's reply"))?;
        if status.signal() == Some(libc::SIGKILL) {
            if let Some(cgroup) = &self.cgroup {
                if cgroup.oom_kills().is_some_and(|kills| kills > 0) {
                    return Err(out_of_memory(config, limits));
                }
            }
        }
        interpret(status, &reply)
    }

    /// SIGKILLs the child (the launcher reaps it): through its pidfd while we hold it, so a
    /// reused number is never hit; by number only if the pidfd could not be had.
    fn kill(&self) {
        if let Some(pidfd) = &self.pidfd {
            kill_through(pidfd);
        } else if self.pid != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    fn join_launcher(&mut self) -> Result<ExitStatus, Stage1Error> {
        let Some(launcher) = self.launcher.take() else {
            return Err(Stage1Error::Jail(
                "the VMM process was already reaped".into(),
            ));
        };
        launcher.join().unwrap_or_else(|_| {
            Err(Stage1Error::Jail(
                "the VMM's launcher thread panicked".into(),
            ))
        })
    }
}

impl Drop for VmmProcess {
    /// A process that never served a request (an error in between, or a standby nobody
    /// took): killed, reaped, its cgroup removed.
    fn drop(&mut self) {
        if self.launcher.is_some() {
            self.kill();
            let _ = self.join_launcher();
        }
        if let Some(cgroup) = self.cgroup.take() {
            let _ = cgroup.remove();
        }
    }
}

/// `RKT_STAGE1_KVM_SECCOMP`: whether the filters only log.
fn seccomp_log_only() -> Result<bool, Stage1Error> {
    match std::env::var(SECCOMP_ENV).as_deref() {
        Err(_) | Ok("") | Ok("enforce") => Ok(false),
        Ok("log") => {
            eprintln!(
                "stage1-kvm: warning: {SECCOMP_ENV}=log: the VMM's seccomp filters log \
                 forbidden system calls instead of stopping them"
            );
            Ok(true)
        }
        Ok(other) => Err(Stage1Error::Usage(format!(
            "{SECCOMP_ENV}={other:?}: use enforce (the default) or log"
        ))),
    }
}

/// On a thread of its own, which lives exactly as long as the child (the child's
/// parent-death signal is tied to the thread that started it, and a thread that entered a
/// new pid namespace for its children can start no threads itself): a new pid namespace for
/// the child, the pod's network namespace `netns`, the child; then waits for it.
fn launch(
    netns: Option<OwnedFd>,
    started: mpsc::Sender<Started>,
) -> Result<ExitStatus, Stage1Error> {
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| Stage1Error::Jail(format!("creating the VMM's pid namespace: {e}")))?;
    if let Some(netns) = &netns {
        crate::net::netns::enter(netns).map_err(|e| {
            Stage1Error::Network(format!("cannot enter the pod's network namespace: {e}"))
        })?;
    }
    let (reply_in, reply_out) =
        std::io::pipe().map_err(Stage1Error::io("creating the VMM's reply pipe"))?;
    // Above the number the child gets it as, so that the dup2 below cannot clobber it.
    let reply_out = {
        // The pipe's own descriptor closes at the end of this block: only the copy (and the
        // child's) may keep the pipe open, or the reply would never end.
        let pipe_end = reply_out;
        above_child_fds(pipe_end.as_fd())?
    };
    let reply_fd = reply_out.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(CHILD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: only async-signal-safe calls (prctl, dup2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(reply_fd, REPLY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(Stage1Error::io("starting the jailed VMM process"))?;
    drop(reply_out);
    // Here, before this thread waits for the child: nothing else can reap it meanwhile.
    let pidfd = pidfd_of_child(child.id()).ok();
    let handles = Started {
        pid: child.id(),
        pidfd,
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        reply_in,
    };
    if started.send(handles).is_err() {
        let _ = child.kill();
    }
    child
        .wait()
        .map_err(Stage1Error::io("waiting for the VMM process"))
}

/// A close-on-exec copy of `fd` numbered above the descriptors the child receives.
fn above_child_fds(fd: BorrowedFd<'_>) -> Result<OwnedFd, Stage1Error> {
    fd.try_clone_to_owned()
        .and_then(|copy| {
            // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, which we own at once.
            let high = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
            if high < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: `high` is a fresh descriptor nobody else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(high) })
            }
        })
        .map_err(Stage1Error::io("numbering the VMM's descriptors"))
}

/// What the launcher hands back once the child runs.
struct Started {
    pid: u32,
    pidfd: Option<OwnedFd>,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
    reply_in: std::io::PipeReader,
}

/// A snapshot directory the cache handed over as `/proc/self/fd/N` (the entry as it opened
/// and checked it): the child gets its path, and the directory's identity (device and inode
/// of that descriptor) to check that the path still leads to the same directory; the kernel's
/// paths are rewritten to match. Returns the descriptor, if any.
fn pass_snapshot_dir(action: Action, config: &mut VmConfig) -> (Action, Option<i32>) {
    let dir = match &action {
        Action::Restore { dir } | Action::MakeSnapshot { dir } => dir.clone(),
        Action::Boot => return (action, None),
    };
    let fd = dir
        .strip_prefix("/proc/self/fd")
        .ok()
        .and_then(|rest| rest.to_str())
        .and_then(|n| n.parse::<i32>().ok());
    let (Some(fd), Ok(path)) = (fd, std::fs::read_link(&dir)) else {
        return (action, None);
    };
    let moved = |old: &Path| -> PathBuf {
        old.strip_prefix(&dir)
            .map_or_else(|_| old.to_path_buf(), |rest| path.join(rest))
    };
    let kernel = moved(&config.kernel.path);
    let initrd = config.kernel.initrd.as_deref().map(&moved);
    config.kernel.path = kernel;
    config.kernel.initrd = initrd;
    let action = match action {
        Action::Restore { .. } => Action::Restore { dir: path },
        Action::MakeSnapshot { .. } => Action::MakeSnapshot { dir: path },
        Action::Boot => Action::Boot,
    };
    (action, Some(fd))
}

/// The VMM was killed for reaching its cgroup's memory.max: what counts against it, and what to
/// do about it.
fn out_of_memory(config: &VmConfig, limits: CgroupLimits) -> Stage1Error {
    Stage1Error::Jail(format!(
        "the VMM process was killed by the kernel's out-of-memory killer: its cgroup reached \
         memory.max ({} MiB: the guest's {} MiB of RAM, and {MEMORY_OVERHEAD_MIB} MiB for the \
         VMM and the page cache of the files it serves, plus the size of each tmpfs it \
         writes to). Files the pod writes to a memory-backed file system without a size \
         (ramfs) stay in memory and count against it too: keep them on a disk or a tmpfs, or \
         give the pod more memory (its memory isolator, --memory)",
        limits.memory_max >> 20,
        config.mem_mib
    ))
}

/// The pod's result from how the child ended and what it replied.
fn interpret(status: ExitStatus, reply: &[u8]) -> Result<Reply, Stage1Error> {
    if let Some(signal) = status.signal() {
        if signal == libc::SIGSYS {
            return Err(Stage1Error::Jail(
                "the VMM was killed by its seccomp filter: one of its threads made a system call \
                 outside its allow-list (a VMM bug, or a compromised VMM; docs/security.md)"
                    .into(),
            ));
        }
        return Err(Stage1Error::Jail(format!(
            "the VMM process was killed by signal {signal}"
        )));
    }
    if reply.is_empty() {
        return Err(Stage1Error::Jail(format!(
            "the VMM process ended ({status}) without saying how the VM ended"
        )));
    }
    serde_json::from_slice(reply)
        .map_err(|e| Stage1Error::Jail(format!("the VMM process replied nonsense: {e}")))
}

/// Copies the child's console into the size-capped log file, or with no file (a VM whose
/// console is not logged) to our own stdout.
fn relay_console(
    mut from: std::process::ChildStdout,
    log: Option<(PathBuf, u64)>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Some((path, max_bytes)) = log else {
            let _ = std::io::copy(&mut from, &mut std::io::stdout());
            return;
        };
        match vmm::log_file::RotatingFile::create(&path, max_bytes) {
            Ok(mut file) => {
                let _ = std::io::copy(&mut from, &mut file);
            }
            Err(err) => {
                eprintln!(
                    "stage1-kvm: cannot write the console log {}: {err}",
                    path.display()
                );
                let _ = std::io::copy(&mut from, &mut std::io::sink());
            }
        }
    })
}

/// memory.max and pids.max of a VM's cgroup. A snapshot run also writes the guest's memory
/// into a file, whose pages (page cache, or tmpfs pages that cannot be reclaimed without
/// swap) are charged to the VMM too: it gets the guest's RAM twice.
///
/// What the pod writes to a memory-backed file system (tmpfs) stays in memory, charged to the
/// VMM whose virtio-fs thread wrote it; on a disk it would be page cache the kernel can
/// reclaim. The pod writes into its own directory (its overlay upper layers or copied images,
/// whichever share they are reached through) and into its writable volumes: each distinct
/// tmpfs among those adds its size once (`memory_backed`, from [`pod_memory_backed_bytes`]).
/// The pod may fill it as it could fill a disk, and the limit still holds the VMM itself to
/// guest RAM and overhead beyond that.
/// (Without it, a postgres pod whose data directory was on a tmpfs was killed.)
pub fn cgroup_limits(config: &VmConfig, action: &Action, memory_backed: u64) -> CgroupLimits {
    let guest = match action {
        Action::MakeSnapshot { .. } => 2 * config.mem_mib,
        Action::Boot | Action::Restore { .. } => config.mem_mib,
    };
    CgroupLimits {
        memory_max: ((guest + MEMORY_OVERHEAD_MIB) << 20).saturating_add(memory_backed),
        pids_max: PIDS_BASE + u64::from(config.vcpus) + config.shares.len() as u64,
    }
}

/// What the pod may write into memory ([`cgroup_limits`]' `memory_backed`): the sizes of the
/// distinct tmpfs file systems among `pod_dir` and the writable shares. Looked at once per
/// VMM process: the set-up limits and the action's own use the same figure.
pub fn pod_memory_backed_bytes(config: &VmConfig, pod_dir: &Path) -> u64 {
    let written = std::iter::once(pod_dir).chain(
        config
            .shares
            .iter()
            .filter(|share| !share.read_only)
            .map(|share| share.host_dir.as_path()),
    );
    memory_backed_bytes(written)
}

/// The sizes of the distinct tmpfs file systems among `dirs`. ramfs has no size and adds
/// nothing (its writes can reach the limit: the out-of-memory kill says why).
fn memory_backed_bytes<'a>(dirs: impl Iterator<Item = &'a Path>) -> u64 {
    let mut seen = Vec::new();
    let mut total: u64 = 0;
    for dir in dirs {
        let Ok(fs) = nix::sys::statfs::statfs(dir) else {
            continue;
        };
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            continue;
        }
        let Ok(stat) = nix::sys::stat::stat(dir) else {
            continue;
        };
        if seen.contains(&stat.st_dev) {
            continue;
        }
        seen.push(stat.st_dev);
        let size = fs
            .blocks()
            .saturating_mul(u64::try_from(fs.block_size()).unwrap_or(0));
        total = total.saturating_add(size);
    }
    total
}

/// RLIMIT_NOFILE: every inode a share holds is a host descriptor, and so is every file the
/// guest has open there (virtio-fs caps both at `max_inodes` per share).
pub fn max_open_files(config: &VmConfig) -> u64 {
    config
        .shares
        .iter()
        .map(|s| 2 * s.max_inodes as u64)
        .sum::<u64>()
        + BASE_OPEN_FILES
}

/// `--debug`'s account of the jail.
fn describe(request: &Request, limits: CgroupLimits, uuid: &str) -> String {
    format!(
        "stage1-kvm: jail: VMM process in its own pid, mount, network, IPC and UTS namespaces; \
         root {} (pivot_root; kernel and initramfs read-only, the shares, /sock, /dev/kvm, \
         pid-only /proc); main, vCPU, virtio-net, virtio-vsock and virtio-rng threads as uid/gid \
         {}:{} with no capabilities; spawner and virtio-fs threads as uid 0 with only {} (also \
         the bounding set); no_new_privs; seccomp filter per thread kind (mode 2, a forbidden call {}); cgroup {} (memory.max {} MiB, pids.max {}); RLIMIT_NOFILE {}, RLIMIT_CORE 0",
        request.jail_dir.display(),
        request.ids.uid,
        request.ids.gid,
        jail::thread_caps::describe(&file_server_caps()),
        if request.seccomp_log_only {
            "is logged"
        } else {
            "kills the VMM"
        },
        Path::new(jail::cgroup::CGROUP_ROOT)
            .join(CGROUP_GROUP)
            .join(uuid)
            .display(),
        limits.memory_max >> 20,
        limits.pids_max,
        request.max_open_files,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::{KernelConfig, ShareConfig};

    #[test]
    fn limits_follow_the_vm() {
        let mut config = VmConfig::new(KernelConfig {
            path: "/k".into(),
            cmdline: String::new(),
            initrd: None,
        });
        config.mem_mib = 256;
        config.vcpus = 2;
        config.shares = vec![ShareConfig::new("pod", "/x", false)];
        let limits = cgroup_limits(&config, &Action::Boot, 0);
        assert_eq!(limits.memory_max, (256 + MEMORY_OVERHEAD_MIB) << 20);
        let snapshot = Action::MakeSnapshot { dir: "/s".into() };
        assert_eq!(
            cgroup_limits(&config, &snapshot, 0).memory_max,
            (512 + MEMORY_OVERHEAD_MIB) << 20
        );
        assert_eq!(limits.pids_max, PIDS_BASE + 3);
        assert_eq!(
            max_open_files(&config),
            BASE_OPEN_FILES + 2 * config.shares[0].max_inodes as u64
        );
    }

    /// Needs a tmpfs at /dev/shm (every Linux host here has one) and a temp dir elsewhere
    /// that is not a tmpfs (checked, not assumed).
    #[test]
    fn a_pod_dir_or_writable_shares_on_a_tmpfs_add_its_size_once() {
        let on_tmpfs = tempfile::tempdir_in("/dev/shm").unwrap();
        let tmpfs = nix::sys::statfs::statfs("/dev/shm").unwrap();
        let tmpfs_bytes = tmpfs.blocks() * u64::try_from(tmpfs.block_size()).unwrap();
        assert!(tmpfs_bytes > 0);
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let disk_is_tmpfs = nix::sys::statfs::statfs(disk.path())
            .unwrap()
            .filesystem_type()
            == nix::sys::statfs::TMPFS_MAGIC;
        let a = on_tmpfs.path().join("a");
        let b = on_tmpfs.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let mut config = VmConfig::new(KernelConfig {
            path: "/k".into(),
            cmdline: String::new(),
            initrd: None,
        });
        config.mem_mib = 128;
        let base = (128 + MEMORY_OVERHEAD_MIB) << 20;
        config.shares = vec![
            ShareConfig::new("vol", &b, false),
            // Read-only: the pod cannot write there.
            ShareConfig::new("ro", "/no/such/dir", true),
        ];
        // The pod directory and a volume on the same tmpfs: counted once.
        assert_eq!(
            cgroup_limits(&config, &Action::Boot, pod_memory_backed_bytes(&config, &a)).memory_max,
            base + tmpfs_bytes
        );
        if !disk_is_tmpfs {
            // Only the volume on the tmpfs.
            assert_eq!(
                cgroup_limits(
                    &config,
                    &Action::Boot,
                    pod_memory_backed_bytes(&config, disk.path())
                )
                .memory_max,
                base + tmpfs_bytes
            );
            // Nothing on a tmpfs (a read-only share there does not count).
            config.shares = vec![ShareConfig::new("ro", &b, true)];
            assert_eq!(
                cgroup_limits(
                    &config,
                    &Action::Boot,
                    pod_memory_backed_bytes(&config, disk.path())
                )
                .memory_max,
                base
            );
        }
    }

    #[test]
    fn a_snapshot_directory_opened_by_the_cache_is_passed_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let opened = std::fs::File::open(dir.path()).unwrap();
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()));
        let mut config = VmConfig::new(KernelConfig {
            path: by_fd.join("vmlinux"),
            cmdline: String::new(),
            initrd: Some(by_fd.join("initramfs.cpio")),
        });
        let restore = Action::Restore { dir: by_fd.clone() };
        let (action, fd) = pass_snapshot_dir(restore, &mut config);
        assert_eq!(fd, Some(opened.as_raw_fd()));
        assert_eq!(
            action,
            Action::Restore {
                dir: dir.path().to_path_buf()
            }
        );
        assert_eq!(config.kernel.path, dir.path().join("vmlinux"));
        assert_eq!(
            config.kernel.initrd,
            Some(dir.path().join("initramfs.cpio"))
        );
        let plain = Action::Restore {
            dir: "/var/lib/x".into(),
        };
        assert_eq!(pass_snapshot_dir(plain, &mut config).1, None);
    }

    #[test]
    fn a_child_killed_by_seccomp_is_named_in_one_line() {
        let err = interpret(ExitStatus::from_raw(libc::SIGSYS), b"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("seccomp") && !err.contains('\n'), "{err}");
        let err = interpret(ExitStatus::from_raw(1 << 8), b"").unwrap_err();
        assert!(err.to_string().contains("without saying"), "{err}");
        assert_eq!(
            interpret(ExitStatus::from_raw(0), br#""Saved""#).unwrap(),
            Reply::Saved
        );
    }
}
