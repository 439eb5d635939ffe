//! Pod mode: guest-init runs the apps of an rkt pod (docs/foundation.md, "guest-init: pod
//! mode"; the host side of the contract is the kvm stage1).
//!
//! The pod directory is the virtio-fs share `pod`, mounted at /rkt/share. guest-init reads the
//! reified pod manifest there and, for each app in manifest order: works out what it runs
//! (`manifest`), builds its root's file systems (`mounts`, inside the root via `rootfs`),
//! resolves its user and groups in the image (`identity`), its environment (`env`) and its
//! resource limits (`cgroup`), connects its stdout and stderr to the host over vsock, then
//! starts it (`launch`). Every app's output streams, and the status stream to the host
//! (`status`), are connected before the first app starts, so no app can take another's. All
//! apps run at once; `supervisor` tracks them through their event handlers while PID 1 reaps.
//! Each app's exit status is reported to the host as soon as it is known (the host writes
//! rkt's status files; the guest cannot reach them). The caller (main) then ends the
//! leftovers, prints the marker with the pod's status and reboots.
//!
//! A problem with one app (a bad user, a missing working directory, a failed mount) gives that
//! app status 125 and a console message naming it; the other apps still run. A problem with
//! the pod itself (no manifest) ends the pod with 125 before anything runs.

mod appns;
mod caps;
mod cgroup;
mod control;
mod env;
mod fork;
mod identity;
mod isolators;
mod launch;
mod manifest;
mod mounts;
mod network;
mod params;
mod paths;
mod pidns;
mod relay;
mod rootfs;
mod seccomp;
mod status;
mod supervisor;
#[cfg(test)]
mod testutil;
pub(crate) mod uptime;

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use appc::{PodApp, PodManifest};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, VsockAddr};
use thiserror::Error;

use crate::error::{InitError, STATUS_SETUP_FAILED};
use crate::reaper::{self, SystemWaiter};
use crate::report::Reporter;
use crate::share::SHARE_MOUNT_POINT;

use appns::{AppNamespace, AppNsError};
use cgroup::{CgroupError, Hierarchy};
use control::{Control, EnterTarget, Event, PodView};
use env::EnvError;
use identity::{IdKind, Identity, IdentityError, ImageFiles};
use isolators::{Hardening, IsolatorError};
use manifest::{AppSpec, ManifestError};
use mounts::{DnsFiles, MountError, VolumeShares};
use params::Disabled;
pub use params::{ParamError, PodParams};
use pidns::PodPidNamespace;
use rootfs::AppRoot;
use status::StatusReporter;
use supervisor::{AppPlan, Launcher, Phase, Supervisor};

/// The host's vsock context ID (always 2).
const HOST_CID: u32 = pod_control::ports::HOST_CID;
/// How long an `--interactive` pod's terminal session may take to pass on the app's last
/// output once the app has ended.
const SESSION_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);
/// /etc/passwd and /etc/group bigger than this are refused.
const ID_DATABASE_LIMIT: u64 = 4 << 20;

#[derive(Debug, Error)]
pub enum PodError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),

    #[error("cannot set the host name to {hostname:?}: {errno}; check rkt.hostname=")]
    Hostname { hostname: String, errno: Errno },

    #[error("app {app}: {error}")]
    App { app: String, error: AppError },
}

/// Why one app could not be set up.
#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Isolator(#[from] IsolatorError),
    #[error(transparent)]
    Namespace(#[from] AppNsError),
    #[error(
        "its root file system {} is missing ({reason}); stage0 puts the image there: prepare \
         the pod again",
        path.display()
    )]
    RootMissing { path: PathBuf, reason: String },
    #[error(
        "the working directory {dir} does not exist in the app's root ({reason}); create it in \
         the image or choose another with --working-dir"
    )]
    WorkingDirectory { dir: String, reason: String },
    #[error(
        "no vsock stream to the host and no console for its output ({0}); the guest needs \
         /dev/console"
    )]
    Console(io::Error),
    #[error("its {handler} event handler has nothing to run; give it an exec or remove it")]
    EmptyHandler { handler: &'static str },
    #[error("cannot give it a terminal for --interactive: {0}")]
    Terminal(io::Error),
}

impl PodError {
    /// Every pod set-up problem is a set-up failure.
    pub fn exit_status(&self) -> u8 {
        STATUS_SETUP_FAILED
    }
}

/// Lines on the console: errors always, set-up steps with `rkt.debug=1`.
#[derive(Clone, Copy)]
struct Log<'a> {
    reporter: &'a Reporter,
    debug: bool,
}

impl Log<'_> {
    /// A set-up step, stamped with the guest's uptime (so `rkt run --debug` shows how long
    /// the kernel took to boot and each app to be set up).
    fn step(&self, message: std::fmt::Arguments) {
        if self.debug {
            self.reporter
                .note(&format_args!("[{}] {message}", uptime::stamp()));
        }
    }

    fn error(&self, error: &dyn std::fmt::Display) {
        self.reporter.error(error);
    }
}

/// Runs the pod whose share is mounted at /rkt/share; returns the pod's exit status.
pub fn run(params: &PodParams, reporter: &Reporter) -> u8 {
    let log = Log {
        reporter,
        debug: params.debug,
    };
    let share = Path::new(SHARE_MOUNT_POINT);
    let pod = match manifest::read_pod_manifest(share) {
        Ok(pod) => pod,
        Err(error) => {
            let error = PodError::from(error);
            log.error(&error);
            return error.exit_status();
        }
    };
    if let Some(at) = crate::warm::handed_over_at() {
        log.step(format_args!(
            "restored from a snapshot; handover done at {at}"
        ));
    }
    log.step(format_args!(
        "pod {}: {} app(s)",
        params.uuid,
        pod.apps.len()
    ));
    // First of all: every status, even of a pod that fails to set up, goes this way.
    let mut statuses = match StatusReporter::connect() {
        Ok(statuses) => Statuses { reporter: statuses },
        Err(errno) => {
            log.error(&format_args!(
                "cannot connect the status stream to the host (vsock port {}): {errno}; the \
                 host will report every app's status as missing",
                pod_control::ports::STATUS_PORT
            ));
            Statuses {
                reporter: StatusReporter::none(),
            }
        }
    };
    if let Err(errno) = nix::unistd::sethostname(&params.hostname) {
        log.error(&PodError::Hostname {
            hostname: params.hostname.clone(),
            errno,
        });
        for app in &pod.apps {
            statuses.write(app.name.as_str(), STATUS_SETUP_FAILED, &log);
        }
        statuses.finish(&log);
        return STATUS_SETUP_FAILED;
    }

    // Before any app: they may serve or connect at once. A network problem fails the pod.
    match network::configure(share) {
        Ok(lines) => {
            for line in lines {
                log.step(format_args!("network: {line}"));
            }
        }
        Err(error) => {
            log.error(&format_args!("pod network: {error}"));
            for app in &pod.apps {
                statuses.write(app.name.as_str(), STATUS_SETUP_FAILED, &log);
            }
            statuses.finish(&log);
            return STATUS_SETUP_FAILED;
        }
    }

    // Before any app process: they all go into it (pidns.rs). Without it the apps would see
    // and reach guest-init, so the pod does not run.
    let pid_ns = match PodPidNamespace::create() {
        Ok(pid_ns) => {
            log.step(format_args!(
                "pod pid namespace: reaper is pid {}",
                pid_ns.reaper()
            ));
            pid_ns
        }
        Err(error) => {
            log.error(&error);
            for app in &pod.apps {
                statuses.write(app.name.as_str(), STATUS_SETUP_FAILED, &log);
            }
            statuses.finish(&log);
            return STATUS_SETUP_FAILED;
        }
    };

    // `--interactive` is for a pod of one app (stage0 and stage1 refuse more).
    let interactive = params.interactive && pod.apps.len() == 1;
    let mut setup = PodSetup {
        share,
        pod: &pod,
        interactive,
        hostname: &params.hostname,
        dns: DnsFiles::find(share),
        shares: VolumeShares::default(),
        cgroups: None,
        pid_ns: &pid_ns,
        disabled: params.disabled,
        log,
    };
    // Every app's output streams before any app is set up or runs: the host takes one
    // connection per stream, so an app that starts early cannot take a later app's. Each is
    // a pipe to a relay process (relay.rs: images open /dev/stdout by name).
    let mut relays = relay::Relays::default();
    let mut streams: Vec<Option<AppStreams>> = pod
        .apps
        .iter()
        .enumerate()
        .map(|(index, app)| {
            (!interactive).then(|| connect_app_streams(index, app, &mut relays, log))
        })
        .collect();
    let apps: Vec<Option<PreparedApp>> = pod
        .apps
        .iter()
        .enumerate()
        .map(|(index, app)| {
            let streams = streams.get_mut(index).and_then(Option::take);
            (index, app, streams)
        })
        .map(
            |(index, app, streams)| match setup.prepare(index, app, streams) {
                Ok(prepared) => Some(prepared),
                Err(error) => {
                    log.error(&PodError::App {
                        app: app.name.as_str().to_owned(),
                        error,
                    });
                    None
                }
            },
        )
        .collect();
    let plans = apps
        .iter()
        .map(|app| match app {
            Some(app) => AppPlan {
                ready: Ok(()),
                pre_start: app.pre_start.is_some(),
                post_stop: app.post_stop.is_some(),
            },
            None => AppPlan {
                ready: Err(STATUS_SETUP_FAILED),
                pre_start: false,
                post_stop: false,
            },
        })
        .collect();
    let mut launcher = PodLauncher {
        names: pod
            .apps
            .iter()
            .map(|a| a.name.as_str().to_owned())
            .collect(),
        apps,
        statuses,
        pid_ns: &pid_ns,
        log,
    };
    let mut supervisor = Supervisor::new(plans);
    let mut control = Control::start(interactive, &|line| log.error(&line));
    if control.listening() {
        launcher.statuses.ready(&log);
    }
    // An interactive pod's app starts when the host has attached to its terminal.
    let mut started = !interactive;
    if started {
        supervisor.start(&mut launcher);
    }
    let mut waiter = SystemWaiter;
    // Set by `stop`: when what is left gets SIGKILL.
    let mut kill_at: Option<Instant> = None;
    while !(started && supervisor.all_done()) {
        let timeout = kill_at.map(|at| at.saturating_duration_since(Instant::now()));
        match control.next_event(&mut waiter, &mut launcher, timeout, started) {
            Event::Reaped(reaped) => {
                if let Some(status) = reaper::exit_code(reaped.raw_status) {
                    // Not one of ours: an orphan re-parented to PID 1, or a control handler.
                    supervisor.on_exit(reaped.pid, status, &mut launcher);
                }
            }
            Event::WaitFailed(errno) => {
                log.error(&InitError::Wait(errno));
                supervisor.abandon(STATUS_SETUP_FAILED, &mut launcher);
            }
            Event::Stop { grace } if kill_at.is_none() => {
                log.step(format_args!("pod {}: stop, grace {grace:?}", params.uuid));
                kill_at = Some(Instant::now() + grace);
                if !started {
                    // Never started: each app ends as if SIGTERM had killed it.
                    started = true;
                    supervisor.abandon(128 + libc::SIGTERM as u8, &mut launcher);
                }
                control::signal_all(&supervisor.running_pids(), Signal::SIGTERM);
            }
            Event::Attach if !started => {
                started = true;
                launcher.attached();
                supervisor.start(&mut launcher);
            }
            Event::Stop { .. } | Event::Attach | Event::Idle => {}
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            // Also whatever started since (a post-stop handler): the grace is over.
            control::signal_all(&supervisor.running_pids(), Signal::SIGKILL);
        }
    }
    if interactive {
        control.drain_handlers(&mut waiter, SESSION_DRAIN);
    }
    let status = supervisor.pod_status();
    log.step(format_args!("pod {}: all apps ended", params.uuid));
    // Ends whatever the apps left behind in the pod's namespace (the kernel kills every
    // process of a namespace whose init dies); reaped with every other child at the end of
    // the pod (`Statuses::finish`), not waited for here (the reaper's exit waits for zombies
    // that only their parents, guest-init among them, can reap).
    let _ = nix::sys::signal::kill(pid_ns.reaper(), Signal::SIGKILL);
    // Everything the apps wrote reaches the host before the host hears the pod is over:
    // guest-init's own ends of the output pipes close with the apps, the relays copy what is
    // left and exit at end of file.
    launcher.apps.clear();
    let still_copying = relays.drain(RELAY_DRAIN);
    if still_copying > 0 {
        log.step(format_args!(
            "pod {}: {still_copying} output relay(s) still copying after {RELAY_DRAIN:?}; \
             what they hold may be lost",
            params.uuid
        ));
    }
    launcher.statuses.finish(&log);
    status
}

/// How long the relays get, once the apps have ended, to pass on what is in their pipes (64
/// KiB each at most) and see end of file: the apps' processes are being killed meanwhile.
const RELAY_DRAIN: Duration = Duration::from_secs(5);

/// An app's stdout and stderr, each a vsock stream to the host or else the console.
type AppStreams = (io::Result<Stream>, io::Result<Stream>);

/// Connects app `index`'s output streams (`pod_control::ports`).
fn connect_app_streams(
    index: usize,
    app: &PodApp,
    relays: &mut relay::Relays,
    log: Log,
) -> AppStreams {
    let name = app.name.as_str();
    let port = |port: Option<u32>| port.unwrap_or(u32::MAX);
    (
        connect_stream(
            port(pod_control::ports::stdout_port(index)),
            relays,
            log,
            name,
            "stdout",
        ),
        connect_stream(
            port(pod_control::ports::stderr_port(index)),
            relays,
            log,
            name,
            "stderr",
        ),
    )
}

/// State shared by the set-up of all apps.
struct PodSetup<'a> {
    share: &'a Path,
    pod: &'a PodManifest,
    /// The app gets a terminal instead of the output streams (`rkt.interactive=1`).
    interactive: bool,
    hostname: &'a str,
    dns: DnsFiles,
    shares: VolumeShares,
    /// Mounted on first use: a pod without limits never needs it.
    cgroups: Option<Hierarchy>,
    pid_ns: &'a PodPidNamespace,
    /// `rkt.disable=`: the hardening the user turned off.
    disabled: Disabled,
    log: Log<'a>,
}

/// An app ready to run.
struct PreparedApp {
    root: AppRoot,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    identity: Identity,
    working_dir: String,
    cgroup_procs: Option<PathBuf>,
    pre_start: Option<Vec<String>>,
    post_stop: Option<Vec<String>>,
    stdout: Stream,
    stderr: Stream,
    /// `--interactive`: the app's terminal (its stdin, stdout and stderr are the slave end).
    terminal: Option<AppTerminal>,
    /// The app's mount namespace (its root).
    mnt_ns: AppNamespace,
    hardening: Hardening,
}

/// The interactive app's terminal as PID 1 holds it.
struct AppTerminal {
    /// Until the host's attach handler has its own copy.
    master: Option<OwnedFd>,
    slave: OwnedFd,
}

/// Where an app's stdout or stderr goes.
struct Stream {
    fd: OwnedFd,
    is_console: bool,
}

impl PodSetup<'_> {
    fn prepare(
        &mut self,
        index: usize,
        pod_app: &PodApp,
        streams: Option<AppStreams>,
    ) -> Result<PreparedApp, AppError> {
        let log = self.log;
        let spec = manifest::app_spec(self.share, self.pod, index, pod_app)?;
        let name = spec.name.as_str();
        let rootfs = manifest::app_rootfs(self.share, name);
        check_directory(&rootfs).map_err(|reason| AppError::RootMissing {
            path: rootfs.clone(),
            reason,
        })?;
        let limits = cgroup::limits_from_isolators(&spec.app.isolators)?;
        let hardening = Hardening::from_isolators(&spec.app.isolators, self.disabled)?;
        for isolator in isolators::not_applied(&spec.app.isolators) {
            // The ACE spec: the user must learn which isolators were not enforced.
            log.error(&format_args!(
                "app {name}: isolator {isolator} is not applied (guest-init does not support \
                 it); the app runs without it"
            ));
        }
        let env = env::app_environment(name, &spec.app.environment)?;
        let EventHandlers {
            pre_start,
            post_stop,
        } = handlers(&spec)?;
        let steps = mounts::plan(&spec, &self.dns, self.hostname)?;

        log.step(format_args!("app {name}: mounting in {}", rootfs.display()));
        let root = mounts::bind_root(&rootfs)?;
        mounts::apply(&root, &steps, self.share, &mut self.shares)?;

        let identity = identity::resolve(
            &spec.app.user,
            &spec.app.group,
            &spec.app.supplementary_gids,
            &ImageRoot(&root),
        )?;
        let working_dir = spec
            .app
            .working_directory
            .clone()
            .unwrap_or_else(|| "/".to_owned());
        match root.stat(Path::new(&working_dir)) {
            Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
            Ok(_) => {
                return Err(AppError::WorkingDirectory {
                    dir: working_dir,
                    reason: "not a directory".to_owned(),
                })
            }
            Err(error) => {
                return Err(AppError::WorkingDirectory {
                    dir: working_dir,
                    reason: error.to_string(),
                })
            }
        }
        let mnt_ns = AppNamespace::create(self.pid_ns, root.path(), !self.disabled.paths)?;
        log.step(format_args!(
            "app {name}: own mount namespace{}; {} capabilities, seccomp {}, no_new_privs {}",
            if self.disabled.paths {
                " (paths not masked: rkt.disable=paths)"
            } else {
                ", paths masked"
            },
            hardening.bounding.len(),
            if hardening.seccomp.is_some() {
                "on"
            } else {
                "off"
            },
            hardening.no_new_privs
        ));
        let cgroup_procs = if limits.is_empty() {
            None
        } else {
            log.step(format_args!("app {name}: limits {:?}", limits.files()));
            let hierarchy = match self.cgroups.take() {
                Some(hierarchy) => hierarchy,
                None => Hierarchy::set_up()?,
            };
            let procs = hierarchy.create_app_group(name, &limits);
            self.cgroups = Some(hierarchy);
            Some(procs?)
        };
        let (stdout, stderr, terminal) = if self.interactive {
            let pty = control::terminal::open_in_root(root.path()).map_err(AppError::Terminal)?;
            let stream = |fd: &OwnedFd| {
                fd.try_clone().map(|fd| Stream {
                    fd,
                    is_console: false,
                })
            };
            log.step(format_args!("app {name}: on a terminal (interactive)"));
            (
                stream(&pty.slave),
                stream(&pty.slave),
                Some(AppTerminal {
                    master: Some(pty.master),
                    slave: pty.slave,
                }),
            )
        } else {
            let (stdout, stderr) = streams.unwrap_or_else(|| {
                let missing = || Err(io::Error::other("no output stream was connected"));
                (missing(), missing())
            });
            (stdout, stderr, None)
        };
        log.step(format_args!(
            "app {name}: uid {} gid {} groups {:?}, in {working_dir}, exec {:?}",
            identity.uid, identity.gid, identity.supplementary_gids, spec.app.exec
        ));
        Ok(PreparedApp {
            root,
            argv: spec.app.exec.clone(),
            env,
            identity,
            working_dir,
            cgroup_procs,
            pre_start,
            post_stop,
            stdout: stdout.map_err(AppError::Console)?,
            stderr: stderr.map_err(AppError::Console)?,
            terminal,
            mnt_ns,
            hardening,
        })
    }
}

fn check_directory(path: &Path) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err("not a directory".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// The app's event handlers: the command of each, if it has one.
#[derive(Debug, PartialEq, Eq)]
struct EventHandlers {
    pre_start: Option<Vec<String>>,
    post_stop: Option<Vec<String>>,
}

/// The app's `pre-start` and `post-stop` commands (the first of each name).
fn handlers(spec: &AppSpec) -> Result<EventHandlers, AppError> {
    let find =
        |handler: &'static str| match spec.app.event_handlers.iter().find(|h| h.name == handler) {
            None => Ok(None),
            Some(h) if h.exec.first().is_none_or(String::is_empty) => {
                Err(AppError::EmptyHandler { handler })
            }
            Some(h) => Ok(Some(h.exec.clone())),
        };
    Ok(EventHandlers {
        pre_start: find("pre-start")?,
        post_stop: find("post-stop")?,
    })
}

/// A pipe relayed to a connected vsock stream to the host's `port`, else the console (the
/// contract's fallback).
fn connect_stream(
    port: u32,
    relays: &mut relay::Relays,
    log: Log,
    app: &str,
    which: &str,
) -> io::Result<Stream> {
    match connect_vsock(port) {
        Ok(socket) => {
            let fd = match relays.relay_to(socket) {
                Ok(pipe) => {
                    log.step(format_args!(
                        "app {app}: {which} -> pipe -> vsock port {port}"
                    ));
                    pipe
                }
                // No pipe or no process to spare: the socket itself still carries the output
                // (only opening /dev/stdout by name fails then).
                Err((error, socket)) => {
                    log.step(format_args!(
                        "app {app}: {which} -> vsock port {port} (no relay: {error})"
                    ));
                    socket
                }
            };
            Ok(Stream {
                fd,
                is_console: false,
            })
        }
        Err(errno) => {
            log.step(format_args!(
                "app {app}: {which} -> console (vsock port {port}: {errno})"
            ));
            let console = crate::console::open_console()?;
            Ok(Stream {
                fd: console.into(),
                is_console: true,
            })
        }
    }
}

fn connect_vsock(port: u32) -> Result<OwnedFd, Errno> {
    let fd = socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(HOST_CID, port),
    )?;
    Ok(fd)
}

/// The image's files for `identity`, read inside the app root.
struct ImageRoot<'a>(&'a AppRoot);

impl ImageFiles for ImageRoot<'_> {
    fn database(&self, kind: IdKind) -> io::Result<String> {
        let path = match kind {
            IdKind::User => "/etc/passwd",
            IdKind::Group => "/etc/group",
        };
        let bytes = self.0.read(Path::new(path), ID_DATABASE_LIMIT)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn owner(&self, path: &str) -> io::Result<(u32, u32)> {
        let stat = self.0.stat(Path::new(path))?;
        Ok((stat.st_uid, stat.st_gid))
    }
}

/// The apps' statuses on their way to the host.
struct Statuses {
    reporter: StatusReporter,
}

impl Statuses {
    /// The end of the pod, whichever way it ends: every process the apps left is ended, the
    /// file systems are flushed (the apps' writes reach the host's files through virtio-fs),
    /// and only then is the status stream closed. The host takes that end, with every status
    /// in and every output stream at its end, as "the pod is over and all it wrote is on the
    /// host", and may stop the VM at once rather than wait for the guest kernel's reboot
    /// (stage1-kvm's run.rs, "early stop"). main's own clean-up then finds nothing left.
    fn finish(self, log: &Log) {
        reaper::terminate_all(
            &mut SystemWaiter,
            |signal| {
                if signal == Signal::SIGKILL {
                    // The SIGTERM grace is over and something is left: say what, on the
                    // console whether or not --debug (the pod's end took the whole grace).
                    log.reporter.note(&format_args!(
                        "[{}] pod: left after SIGTERM and {:?}: {}",
                        uptime::stamp(),
                        reaper::TERM_GRACE,
                        reaper::describe_children()
                    ));
                }
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), signal)
            },
            reaper::TERM_GRACE,
            reaper::KILL_GRACE,
        );
        log.step(format_args!("pod: no process left"));
        nix::unistd::sync();
        log.step(format_args!("pod: file systems synced; the pod is over"));
        self.reporter.finish();
    }

    /// Tells the host the pod can be entered and stopped; a failure is said on the console
    /// (the pod then never reads as ready; its apps' statuses cannot reach the host either).
    fn ready(&mut self, log: &Log) {
        match self.reporter.ready() {
            Ok(()) => log.step(format_args!("control server listening; ready reported")),
            Err(error) => log.error(&format_args!(
                "cannot report to the host that the pod is ready: {error}"
            )),
        }
    }

    /// Reports app `name`'s status; a failure is said on the console (the host then reports
    /// the status as missing).
    fn write(&mut self, name: &str, status: u8, log: &Log) {
        match self.reporter.report(name, status) {
            Ok(()) => log.step(format_args!("app {name}: status {status} reported")),
            Err(error) => log.error(&format_args!(
                "app {name}: cannot report its status {status} to the host: {error}"
            )),
        }
    }
}

/// Starts app processes for the supervisor.
struct PodLauncher<'a> {
    names: Vec<String>,
    /// `None`: set-up failed, or the app is over (its streams closed).
    apps: Vec<Option<PreparedApp>>,
    statuses: Statuses,
    pid_ns: &'a PodPidNamespace,
    log: Log<'a>,
}

impl Launcher for PodLauncher<'_> {
    fn start(&mut self, index: usize, phase: Phase) -> Result<nix::unistd::Pid, u8> {
        let name = self.names.get(index).map(String::as_str).unwrap_or("?");
        let Some(app) = self.apps.get(index).and_then(Option::as_ref) else {
            return Err(STATUS_SETUP_FAILED);
        };
        let argv = match phase {
            Phase::PreStart => app.pre_start.as_ref(),
            Phase::Main => Some(&app.argv),
            Phase::PostStop => app.post_stop.as_ref(),
        };
        let Some(argv) = argv else {
            return Err(STATUS_SETUP_FAILED);
        };
        let label = match phase {
            Phase::Main => format!("app {name}"),
            other => format!("{} of app {name}", other.describe()),
        };
        let spec = launch::ProcessSpec {
            label: &label,
            root: app.root.path(),
            argv,
            env: &app.env,
            identity: &app.identity,
            working_dir: &app.working_dir,
            cgroup_procs: app.cgroup_procs.as_deref(),
            stdin: app.terminal.as_ref().map(|t| t.slave.as_fd()),
            stdout: app.stdout.fd.as_fd(),
            stderr: app.stderr.fd.as_fd(),
            stderr_is_console: app.stderr.is_console,
            controlling_tty: app.terminal.is_some(),
            namespaces: Some(launch::Namespaces {
                pid: self.pid_ns,
                mnt: &app.mnt_ns,
            }),
            hardening: &app.hardening,
        };
        match launch::launch(&spec) {
            Ok(pid) => {
                self.log.step(format_args!("{label}: started as pid {pid}"));
                Ok(pid)
            }
            Err(error) => {
                self.log.error(&format_args!("{label}: {error}"));
                Err(error.exit_status())
            }
        }
    }

    fn phase_ended(&mut self, index: usize, phase: Phase, status: u8) {
        let name = self.names.get(index).map(String::as_str).unwrap_or("?");
        match phase {
            Phase::PreStart if status != 0 => self.log.error(&format_args!(
                "app {name}: its pre-start handler failed with status {status}, so the app \
                 was not started; fix the handler or the image"
            )),
            Phase::PostStop if status != 0 => self.log.error(&format_args!(
                "app {name}: its post-stop handler failed with status {status} (the app's \
                 status is kept)"
            )),
            _ => self.log.step(format_args!(
                "app {name}: {} ended with status {status}",
                phase.describe()
            )),
        }
    }

    fn finished(&mut self, index: usize, status: u8) {
        let name = self.names.get(index).cloned().unwrap_or_default();
        // Closing our copies of its streams lets the host see their end.
        if let Some(slot) = self.apps.get_mut(index) {
            *slot = None;
        }
        self.statuses.write(&name, status, &self.log);
    }
}

impl PodLauncher<'_> {
    /// The host's attach handler has its copy of the terminal: PID 1 lets go of its own, so a
    /// second attach is refused.
    fn attached(&mut self) {
        for app in self.apps.iter_mut().flatten() {
            if let Some(terminal) = &mut app.terminal {
                terminal.master = None;
            }
        }
    }
}

impl PodView for PodLauncher<'_> {
    fn apps(&self) -> Vec<pod_control::AppState> {
        self.names
            .iter()
            .zip(&self.apps)
            .map(|(name, app)| pod_control::AppState {
                name: name.clone(),
                running: app.is_some(),
            })
            .collect()
    }

    fn enter_target(&self, name: &str) -> Result<EnterTarget, String> {
        let Some(index) = self.names.iter().position(|n| n == name) else {
            return Err(format!(
                "the pod has no app named {name:?} (its apps: {})",
                self.names.join(", ")
            ));
        };
        match self.apps.get(index).and_then(Option::as_ref) {
            Some(app) => {
                let clone_error =
                    |error: io::Error| format!("cannot hand over app {name}'s namespaces: {error}");
                Ok(EnterTarget {
                    root: app.root.path().to_path_buf(),
                    env: app.env.clone(),
                    cgroup_procs: app.cgroup_procs.clone(),
                    pid_ns: self.pid_ns.try_clone().map_err(clone_error)?,
                    mnt_ns: app.mnt_ns.try_clone().map_err(clone_error)?,
                    hardening: app.hardening.clone(),
                })
            }
            None => Err(format!(
                "app {name} is not running (it has exited, or it could not be set up)"
            )),
        }
    }

    fn interactive_terminal(&self) -> Option<OwnedFd> {
        self.apps
            .iter()
            .flatten()
            .find_map(|app| app.terminal.as_ref()?.master.as_ref()?.try_clone().ok())
    }

    fn release_inherited(&mut self) {
        self.apps.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec_with_handlers(handlers: serde_json::Value) -> AppSpec {
        let share = tempfile::tempdir().unwrap();
        let bytes = manifest::tests::pod_json(
            json!([{"name": "a", "image": {"id": manifest::tests::image_id()},
                    "app": {"exec": ["/x"], "user": "0", "group": "0",
                            "eventHandlers": handlers}}]),
            json!([]),
        );
        fs::write(share.path().join("pod"), bytes).unwrap();
        let pod = manifest::read_pod_manifest(share.path()).unwrap();
        manifest::app_spec(share.path(), &pod, 0, &pod.apps[0]).unwrap()
    }

    #[test]
    fn event_handlers_are_found_by_name() {
        let spec = spec_with_handlers(json!([
            {"name": "post-stop", "exec": ["/bin/cleanup", "now"]},
            {"name": "pre-start", "exec": ["/bin/prepare"]}
        ]));
        let found = handlers(&spec).unwrap();
        assert_eq!(found.pre_start, Some(vec!["/bin/prepare".to_owned()]));
        assert_eq!(
            found.post_stop,
            Some(vec!["/bin/cleanup".to_owned(), "now".to_owned()])
        );
        assert_eq!(
            handlers(&spec_with_handlers(json!([]))).unwrap(),
            EventHandlers {
                pre_start: None,
                post_stop: None
            }
        );
        // An empty list is refused by the appc crate already; an empty program is ours.
        let empty = spec_with_handlers(json!([{"name": "pre-start", "exec": [""]}]));
        assert!(matches!(
            handlers(&empty),
            Err(AppError::EmptyHandler { .. })
        ));
    }

    #[test]
    fn app_errors_name_the_app() {
        let error = PodError::App {
            app: "web".into(),
            error: AppError::WorkingDirectory {
                dir: "/nope".into(),
                reason: "No such file or directory".into(),
            },
        };
        let message = error.to_string();
        assert!(
            message.starts_with("app web: the working directory /nope"),
            "{message}"
        );
        assert!(message.contains("--working-dir"), "{message}");
        assert_eq!(error.exit_status(), 125);
    }
}
