//! The stage1 side of a pod: its entrypoints (named by annotations in
//! `stage1/manifest`), the argument list `rkt run` execs the `run`
//! entrypoint with (stage1 interface version 6), and the gc hook.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use appc::ImageManifest;

use super::dns::{ConfMode, Hosts, Resolv};
use super::state::{Pod, PodState};
use super::PodError;
use super::{layout, safe_read};

/// Annotations a stage1 image names its entrypoints with.
pub const ENTRYPOINT_RUN: &str = "coreos.com/rkt/stage1/run";
pub const ENTRYPOINT_ENTER: &str = "coreos.com/rkt/stage1/enter";
pub const ENTRYPOINT_STOP: &str = "coreos.com/rkt/stage1/stop";
pub const ENTRYPOINT_GC: &str = "coreos.com/rkt/stage1/gc";
pub const INTERFACE_VERSION: &str = "coreos.com/rkt/stage1/interface-version";
/// The environment variable carrying the locked pod directory descriptor.
pub const ENV_LOCK_FD: &str = "RKT_LOCK_FD";

/// Whether `manifest` describes a stage1 image (it names a `run` entrypoint).
pub fn is_stage1(manifest: &ImageManifest) -> bool {
    manifest.annotation(ENTRYPOINT_RUN).is_some()
}

/// The stage1 image manifest copied into the pod at prepare.
pub fn stage1_manifest(pod_dir: &Path) -> Result<ImageManifest, PodError> {
    let path = layout::stage1_manifest(pod_dir);
    // Through the pod directory's descriptor, no links followed, size capped (safe_read).
    let dir = safe_read::open_host_dir(pod_dir)
        .map_err(PodError::io(format!("opening {}", pod_dir.display())))?;
    let rel = layout::stage1_manifest(Path::new(""));
    let bytes = safe_read::read(dir.as_fd(), &rel, safe_read::cap::MANIFEST).map_err(|source| {
        PodError::PodFile {
            context: format!("reading the stage1 manifest of {}", pod_dir.display()),
            source,
        }
    })?;
    ImageManifest::from_json(&bytes).map_err(|err| PodError::BadFile {
        path,
        problem: err.to_string(),
    })
}

/// The host path of entrypoint `annotation` (e.g. [`ENTRYPOINT_RUN`]):
/// the annotation's value taken inside `stage1/rootfs`.
pub fn entrypoint(pod_dir: &Path, annotation: &str) -> Result<PathBuf, PodError> {
    let manifest = stage1_manifest(pod_dir)?;
    let value = manifest.annotation(annotation).ok_or_else(|| {
        PodError::Invalid(format!(
            "the pod's stage1 ({}) has no {annotation} entrypoint",
            manifest.name
        ))
    })?;
    Ok(layout::stage1_rootfs(pod_dir).join(value.trim_start_matches('/')))
}

/// The stage1 interface version its manifest declares (1 when absent).
pub fn interface_version(pod_dir: &Path) -> Result<u32, PodError> {
    let manifest = stage1_manifest(pod_dir)?;
    match manifest.annotation(INTERFACE_VERSION) {
        None => Ok(1),
        Some(text) => text.trim().parse().map_err(|_| {
            PodError::Invalid(format!(
                "stage1 {} declares interface version {text:?}, which is not a number",
                manifest.name
            ))
        }),
    }
}

/// The pod-wide settings `rkt run` / `run-prepared` pass to stage1.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub debug: bool,
    /// `--net` as the user gave it (`default` when absent).
    pub net: String,
    pub interactive: bool,
    pub local_config: PathBuf,
    /// Default `rkt-<uuid>`.
    pub hostname: Option<String>,
    /// `--dns*` flags: written to `etc/rkt-resolv.conf` by the handover,
    /// and told to stage1 with `--dns-conf-mode` (v4).
    pub resolv: Resolv,
    /// `--hosts-entry` flags: `etc/rkt-hosts`, and `--dns-conf-mode`.
    pub hosts: Hosts,
    pub disable_capabilities: bool,
    pub disable_paths: bool,
    pub disable_seccomp: bool,
    /// `--ipc` (v6): auto, private or parent.
    pub ipc: Option<String>,
    /// `--warm-start=false` (our extension): passed on only when set, so
    /// other stage1s never see the flag unless asked.
    pub no_warm_start: bool,
}

/// What to exec for a pod's `run` entrypoint: `program` with `args`, in the
/// pod directory, with `RKT_LOCK_FD` set to the locked pod directory fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage1Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub working_dir: PathBuf,
    pub lock_fd: i32,
}

/// Builds the `run` entrypoint's argument list for a pod that [`Pod::mark_running`]
/// has moved to `run/` (and so holds locked). Flags newer than the stage1's
/// interface version are left out, as rkt does.
pub fn run_invocation(pod: &Pod, options: &RunOptions) -> Result<Stage1Invocation, PodError> {
    if pod.state() != PodState::Running {
        return Err(PodError::WrongState {
            uuid: pod.uuid.to_string(),
            state: pod.state().as_str(),
            action: "hand over to stage1",
        });
    }
    let dir = pod.path();
    let program = entrypoint(&dir, ENTRYPOINT_RUN)?;
    let version = interface_version(&dir)?;
    let mut args = Vec::new();
    if options.debug {
        args.push("--debug".to_string());
    }
    let net = if options.net.is_empty() {
        "default"
    } else {
        &options.net
    };
    args.push(format!("--net={net}"));
    if options.interactive {
        args.push("--interactive".to_string());
    }
    if options.no_warm_start {
        args.push("--warm-start=false".to_string());
    }
    args.push(format!("--local-config={}", options.local_config.display()));
    if version >= 2 {
        let hostname = options
            .hostname
            .clone()
            .unwrap_or_else(|| format!("rkt-{}", pod.uuid));
        args.push(format!("--hostname={hostname}"));
    }
    if version >= 3 {
        if options.disable_capabilities {
            args.push("--disable-capabilities-restriction".to_string());
        }
        if options.disable_paths {
            args.push("--disable-paths".to_string());
        }
        if options.disable_seccomp {
            args.push("--disable-seccomp".to_string());
        }
    }
    let (resolv, hosts) = (options.resolv.mode, options.hosts.mode);
    if version >= 4 && (resolv != ConfMode::Default || hosts != ConfMode::Default) {
        args.push(format!(
            "--dns-conf-mode=resolv={},hosts={}",
            resolv.as_str(),
            hosts.as_str()
        ));
    }
    if version >= 6 {
        if let Some(ipc) = &options.ipc {
            args.push(format!("--ipc={ipc}"));
        }
    }
    args.push(pod.uuid.to_string());
    Ok(Stage1Invocation {
        program,
        args,
        working_dir: dir,
        lock_fd: pod.lock().fd(),
    })
}

/// Runs the stage1 `gc` entrypoint of an exited pod (`<gc> [--local-config=DIR]
/// UUID`, from the pod directory, `--local-config` from interface version
/// 5), so stage1 releases what it allocated outside the pod directory
/// (the kvm stage1: its socket directory under /run). A failure keeps the
/// pod (the caller then leaves its files for a later gc).
///
/// A pod without a stage1 manifest or gc entrypoint has nothing to release.
/// Neither has one whose stage1 overlay is no longer mounted (after a
/// reboot): rkt remounted it to run gc; the kvm stage1 keeps nothing that
/// outlives a reboot (/run is a tmpfs), so we skip it.
pub fn run_stage1_gc(pod: &Pod, local_config: &Path) -> Result<(), PodError> {
    let dir = pod.path();
    let Ok(program) = entrypoint(&dir, ENTRYPOINT_GC) else {
        return Ok(());
    };
    if !program.is_file() {
        return Ok(());
    }
    let mut command = std::process::Command::new(&program);
    if interface_version(&dir)? >= 5 {
        command.arg(format!("--local-config={}", local_config.display()));
    }
    let status = command
        .arg(pod.uuid.as_str())
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(PodError::io(format!(
            "running the stage1 gc entrypoint {} of pod {}",
            program.display(),
            pod.uuid
        )))?;
    if status.success() {
        Ok(())
    } else {
        Err(PodError::Invalid(format!(
            "the stage1 gc entrypoint of pod {} failed ({status}); the pod is kept for \
             the next gc",
            pod.uuid
        )))
    }
}
