//! The `run` entrypoint: stage0 has moved the pod to `run/`, mounted its overlays and exec'd
//! us in the pod directory with the lock in `RKT_LOCK_FD`. We keep that descriptor for the
//! pod's whole life (the VM runs in this process), write `pid`, lay out what the guest needs,
//! boot the VM with the vmm crate, relay the apps' output, and exit with the pod's status.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appc::PodManifest;
use vmm::{KernelConfig, SerialOutput, VmConfig, VmOutcome, VsockConfig};

use crate::args::{is_hostname, RunArgs};
use crate::control::{self, terminal::RawMode};
use crate::error::Stage1Error;
use crate::output::Router;
use crate::pod::{take_lock, PodPaths};
use crate::resources::vm_size;
use crate::status::StatusReceiver;
use crate::timing::Timeline;
use crate::vmm_process::{self, JailPlan};
use crate::volumes::{create_empty_volumes, shares};
use crate::vsock::{RunDir, GUEST_CID, RUN_DIR};
use crate::{dns, net, status};

/// How long the apps' output may keep arriving after the VM has ended (the VMM closes the
/// connections with the VM; this only bounds a copy that is somehow stuck).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Runs the pod in the current directory; returns the pod's exit code.
pub fn run(args: &RunArgs) -> Result<i32, Stage1Error> {
    let mut timeline = Timeline::new(args.debug);
    let dir = std::env::current_dir().map_err(Stage1Error::io("finding the pod directory"))?;
    let pod = PodPaths::new(dir);
    // Held until we return: the pod is "running" exactly as long as this process lives.
    let _lock = take_lock(&pod.dir)?;
    check_options(args)?;
    // Before anything is set up (stage0 no longer checks the host: it knows nothing of KVM).
    vmm::check_host_early().map_err(|e| Stage1Error::Vmm(e.into()))?;
    timeline.mark("check the host (KVM) and the options");
    let manifest = pod.read_manifest()?;
    crate::isolators::warn_not_applied(&pod, &manifest);
    pod.write_pid()?;
    let apps: Vec<String> = manifest.apps.iter().map(|a| a.name.to_string()).collect();
    if args.interactive && apps.len() != 1 {
        return Err(Stage1Error::Usage(format!(
            "--interactive needs a pod of exactly one app; this one has {}",
            apps.len()
        )));
    }

    let (mut config, run_dir) = prepare_vm(args, &pod, &manifest, Path::new(RUN_DIR))?;
    timeline.mark("lay out the pod's host files and the VM's configuration");
    let _cleanup = RunDirCleanup(run_dir.dir.clone());
    let socket = &run_dir.socket;
    // Released when dropped, after the VM (and on any error from here on).
    let network = net::PodNetwork::setup(
        &net::NetRequest {
            uuid: &args.uuid,
            net: &args.net,
            local_config: args.local_config.as_deref(),
            dns_conf_mode: args.dns_conf_mode.unwrap_or_default(),
            debug: args.debug,
        },
        &pod,
        &manifest,
    )?;
    if let Some(network) = &network {
        config.nets = network.nics.clone();
        timeline.mark("set up the pod network (CNI)");
    }
    // The jailed VMM process starts now, in the pod's network namespace, and sets itself up
    // while the output and status listeners start and the warm-start cache is looked at.
    let network_namespace = network
        .as_ref()
        .map(net::PodNetwork::namespace)
        .transpose()?;
    let plan = JailPlan::new(
        &args.uuid,
        &pod.dir,
        crate::guest_view::ShareContents::of(&manifest),
        &run_dir.jail,
        network_namespace,
        args.debug,
    );
    // Shared with the early stop, which releases the network while the stopped VMM dies.
    let had_network = network.is_some();
    let network = Arc::new(Mutex::new(network));
    plan.start_standby(&config);
    timeline.mark("start the jailed VMM process");
    if args.debug {
        eprintln!(
            "stage1-kvm: VM: {} vCPU(s), {} MiB, shares {}, vsock {}, cmdline {:?}",
            config.vcpus,
            config.mem_mib,
            config
                .shares
                .iter()
                .map(|s| format!(
                    "{}={}{}",
                    s.tag,
                    s.host_dir.display(),
                    if s.read_only { " (ro)" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", "),
            socket.display(),
            config.kernel.cmdline
        );
    }
    let stage1_rootfs = pod.stage1_rootfs();
    let statuses = StatusReceiver::start(
        socket,
        &apps,
        &pod.status_dir(),
        Box::new(move || {
            if let Err(err) = control::ready::mark_ready(&stage1_rootfs) {
                eprintln!("stage1-kvm: cannot mark the pod ready (rkt status --wait-ready): {err}");
            }
        }),
    )?;
    let router = Router::start(
        socket,
        &apps,
        &pod.logs_dir(),
        crate::output::log_limit(),
        Arc::new(Mutex::new(io::stdout())),
        Arc::new(Mutex::new(io::stderr())),
    )?;
    timeline.mark("start the output and status listeners");
    let vm_ended = Arc::new(AtomicBool::new(false));
    // --interactive: the terminal is raw until we return, whichever way we return.
    let _raw = args.interactive.then(RawMode::enter).flatten();
    let attach = args
        .interactive
        .then(|| control::attach::start(socket.clone(), Arc::clone(&vm_ended)));
    // Not with --interactive: its output goes through the terminal session, not the streams
    // the early stop waits for.
    let early_stop = (!args.interactive).then(|| {
        stop_when_pod_over(
            statuses.pod_over(),
            statuses.all_reported(),
            router.ended_streams(),
            plan.stopper(),
            Arc::clone(&network),
            Arc::clone(&vm_ended),
            args.debug.then(crate::timing::rkt_started_at).flatten(),
        )
    });
    let outcome = run_vm(&plan, config, &pod, args, &mut timeline);
    let vm_ended_at = std::time::Instant::now();
    vm_ended.store(true, Ordering::Relaxed);
    // The early stop may still be releasing the network (below).
    if let Some(watcher) = early_stop {
        let _ = watcher.join();
    }
    drop(plan);
    // CNI DEL, the namespace and the taps go now, before the statuses are read, unless the
    // early stop has already released them.
    release_network(&network);
    for (index, at) in router.app_start_times() {
        let app = apps.get(index).map_or("?", String::as_str);
        timeline.mark_at(format!("boot the guest and start app {app}"), at);
    }
    timeline.mark_at("run the apps until the VM stopped", vm_ended_at);
    if had_network {
        timeline.mark("tear down the pod network (CNI DEL)");
    }
    router.finish(OUTPUT_DRAIN);
    if let Some(attach) = attach {
        if let Err(err) = attach.finish(OUTPUT_DRAIN) {
            eprintln!("stage1-kvm: {err}");
        }
    }
    let statuses = statuses.finish(OUTPUT_DRAIN);
    let result = pod_result(args, &pod, &apps, &statuses, outcome);
    timeline.mark("drain the output and read the statuses");
    if args.debug {
        eprintln!("{}", timeline.summary());
    }
    result
}

/// How often the early-stop watcher looks whether the pod is over.
const POD_OVER_POLL: Duration = Duration::from_millis(5);

/// How long guest-init may take, once every app's status is in, to end the apps' leftovers,
/// sync and say the pod is over. It needs at most about 6 s (the output relays' 5 s drain and
/// the half-second SIGTERM grace); a guest that takes longer is wedged or hostile, and its
/// VM is stopped rather than left to hold `rkt run` for ever.
const POD_END_LIMIT: Duration = Duration::from_secs(30);

/// Where the end of the pod stands, for the early-stop watcher.
#[derive(Debug, PartialEq, Eq)]
enum PodEnd {
    /// Apps still run, or guest-init is still ending the pod within its limit.
    Running,
    /// Every status in, guest-init's stream ended, every output stream ended.
    Over,
    /// Every status in for longer than `POD_END_LIMIT`, and guest-init never said the pod is
    /// over.
    Wedged,
}

fn pod_end(pod_over: bool, streams_ended: bool, all_reported_for: Option<Duration>) -> PodEnd {
    if pod_over && streams_ended {
        PodEnd::Over
    } else if all_reported_for.is_some_and(|waited| waited > POD_END_LIMIT) {
        PodEnd::Wedged
    } else {
        PodEnd::Running
    }
}

/// The early stop: once the pod is over (every status in and guest-init's status stream ended,
/// which it does after ending the apps' leftovers and syncing the file systems; and every
/// output stream ended, so all the apps wrote has been copied), the VM is stopped at once
/// instead of waiting for the guest kernel's reboot. Nothing of the pod is left in the VM by
/// then. The thread ends with the VM (`vm_ended`). A guest that never says the pod is over
/// only loses the shortcut, unless every app's status is in: then it gets `POD_END_LIMIT`,
/// after which its VM is stopped, with a warning (the pod's exit status is the apps'). Either
/// way the pod's network is released right after the kill ([`release_network`]).
fn stop_when_pod_over(
    pod_over: Arc<AtomicBool>,
    all_reported: Arc<AtomicBool>,
    streams: crate::output::EndedStreams,
    stopper: Arc<vmm_process::VmStopper>,
    network: Arc<Mutex<Option<net::PodNetwork>>>,
    vm_ended: Arc<AtomicBool>,
    debug_timing_origin: Option<f64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut all_reported_at = None;
        while !vm_ended.load(Ordering::Relaxed) {
            if all_reported_at.is_none() && all_reported.load(Ordering::Acquire) {
                all_reported_at = Some(Instant::now());
            }
            match pod_end(
                pod_over.load(Ordering::Acquire),
                streams.all(),
                all_reported_at.map(|at| at.elapsed()),
            ) {
                PodEnd::Running => std::thread::sleep(POD_OVER_POLL),
                PodEnd::Over => {
                    if let Some(origin) = debug_timing_origin {
                        crate::timing::mark_since(origin, "the pod is over: stopping the VM");
                    }
                    stopper.stop();
                    release_network(&network);
                    return;
                }
                PodEnd::Wedged => {
                    eprintln!(
                        "stage1-kvm: warning: every app has ended, but the guest did not finish \
                         the pod within {POD_END_LIMIT:?} (end the apps' leftovers, sync): \
                         stopping its VM; what the apps had not yet written back may be lost"
                    );
                    stopper.stop();
                    release_network(&network);
                    return;
                }
            }
        }
    })
}

/// Releases the pod's network (CNI DEL, its namespace and taps) if nobody has yet. The early
/// stop calls it right after sending the VMM SIGKILL, so the plugins' DEL runs while the kernel
/// tears the dead VMM down (KVM's and the memory's teardown take tens of milliseconds). The
/// guest cannot send a packet once its vCPUs have taken the signal, which they do within
/// moments, long before the first plugin has even started. `run` calls it once the VMM is gone,
/// for every other way a VM ends.
fn release_network(network: &Mutex<Option<net::PodNetwork>>) {
    let taken = network.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(taken);
}

/// The pod's exit code from how the VM ended and the apps' status files.
fn pod_result(
    args: &RunArgs,
    pod: &PodPaths,
    apps: &[String],
    statuses: &std::collections::BTreeMap<String, u8>,
    outcome: Result<VmOutcome, Stage1Error>,
) -> Result<i32, Stage1Error> {
    let console_hint = if args.debug {
        "its console is above".to_string()
    } else {
        format!("its console is in {}", pod.console_log().display())
    };
    match outcome? {
        VmOutcome::GuestReportedExit(_) | VmOutcome::CleanStop => {
            status::pod_exit_code(statuses, apps).map_err(|err| match err {
                Stage1Error::Status(message) if !args.debug => {
                    Stage1Error::Status(format!("{message} ({console_hint})"))
                }
                other => other,
            })
        }
        failed => Err(Stage1Error::Guest(format!(
            "{} ({console_hint})",
            failed
                .describe()
                .unwrap_or_else(|| "it ended abnormally".to_string())
        ))),
    }
}

/// Refuses what the kvm stage1 cannot do (yet), before anything is created.
fn check_options(args: &RunArgs) -> Result<(), Stage1Error> {
    net::conf::requests(&args.net)?;
    if args.ipc.as_deref() == Some("parent") {
        return Err(Stage1Error::Unsupported(
            "--ipc=parent is impossible with the kvm stage1: use auto or private".to_string(),
        ));
    }
    if let Some(name) = &args.hostname {
        if !is_hostname(name) {
            return Err(Stage1Error::Usage(format!(
                "--hostname={name:?} is not a host name (letters, digits, dashes and dots)"
            )));
        }
    }
    Ok(())
}

/// The VM, in a jailed process of its own (`vmm_process`): booted, or restored from the warm
/// start cache.
fn run_vm(
    plan: &JailPlan,
    config: VmConfig,
    pod: &PodPaths,
    args: &RunArgs,
    timeline: &mut Timeline,
) -> Result<VmOutcome, Stage1Error> {
    if args.warm_start {
        crate::warm::run(plan, config, pod, args.debug, timeline)
    } else {
        vmm_process::boot(plan, config)
    }
}

/// Everything the guest needs on the host, and the VM's configuration.
fn prepare_vm(
    args: &RunArgs,
    pod: &PodPaths,
    manifest: &PodManifest,
    run_root: &Path,
) -> Result<(VmConfig, RunDir), Stage1Error> {
    for dir in [pod.own_dir(), pod.logs_dir(), pod.status_dir()] {
        fs::create_dir_all(&dir).map_err(Stage1Error::io(format!("creating {}", dir.display())))?;
    }
    create_empty_volumes(pod, manifest)?;
    dns::apply(
        args.dns_conf_mode.unwrap_or_default(),
        &pod.stage1_rootfs(),
        Path::new("/etc"),
    )?;
    for (what, path) in [
        ("guest kernel", pod.kernel()),
        ("pod initramfs", pod.initrd()),
    ] {
        if !path.is_file() {
            return Err(Stage1Error::Unsupported(format!(
                "the stage1 image has no {what} at {}: rebuild stage1-kvm.aci (tools/setup)",
                path.display()
            )));
        }
    }
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let size = vm_size(manifest, host_cpus)?;
    let run_dir = RunDir::of(run_root, &args.uuid);
    run_dir.create(jail::PodIds::of_pod(&args.uuid).gid)?;

    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| format!("rkt-{}", args.uuid));
    // cgroup.memory=nosocket: as in warm::SNAPSHOT_CMDLINE (why: there).
    let mut cmdline = format!(
        "console=ttyS0 reboot=k panic=-1 quiet cgroup.memory=nosocket rkt.share={} \
         rkt.pod={} rkt.hostname={hostname}",
        pod_control::layout::POD_SHARE_TAG,
        args.uuid
    );
    if args.debug {
        cmdline.push_str(" rkt.debug=1");
    }
    if args.interactive {
        cmdline.push_str(" rkt.interactive=1");
    }
    // `--insecure-options=capabilities,paths,seccomp` (stage0's `--disable-*` flags): guest-init
    // leaves out what is named (docs/security.md, "Ring 3").
    let disabled: Vec<&str> = [
        (args.disable_capabilities_restriction, "capabilities"),
        (args.disable_paths, "paths"),
        (args.disable_seccomp, "seccomp"),
    ]
    .into_iter()
    .filter_map(|(off, name)| off.then_some(name))
    .collect();
    if !disabled.is_empty() {
        cmdline.push_str(&format!(" rkt.disable={}", disabled.join(",")));
    }
    let mut config = VmConfig::new(KernelConfig {
        path: pod.kernel(),
        cmdline,
        initrd: Some(pod.initrd()),
    });
    config.vcpus = size.vcpus;
    config.mem_mib = size.mem_mib;
    // The console is ours only with --debug; otherwise it is kept for the error messages.
    config.serial = if args.debug {
        SerialOutput::Stdout
    } else {
        SerialOutput::File(pod.console_log())
    };
    // The pod share is composed inside the VMM's jail (`vmm_process::child`); this path is
    // where it is, in the jail's mount namespace, before the pivot.
    config.shares = shares(&pod_share_mount(&run_dir), manifest)?;
    config.vsock = Some(VsockConfig {
        guest_cid: GUEST_CID,
        uds_path: run_dir.socket.clone(),
        host_ports: pod_control::ports::host_ports(manifest.apps.len()),
    });
    Ok((config, run_dir))
}

/// Where the jailed VMM composes the pod share before it enters its jail.
fn pod_share_mount(run_dir: &RunDir) -> PathBuf {
    run_dir
        .jail
        .join("shares")
        .join(pod_control::layout::POD_SHARE_TAG)
}

/// Removes the pod's runtime directory under /run when the run ends, however it ends.
struct RunDirCleanup(PathBuf);

impl Drop for RunDirCleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::parse;

    const UUID: &str = "2e1a7c3b-51f0-4f55-8a3e-0d9b5c7e6f10";

    fn args(words: &[&str]) -> RunArgs {
        let mut all: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        all.push(UUID.to_string());
        parse(&all).unwrap()
    }

    #[test]
    fn the_pod_is_over_when_guest_init_says_so_or_wedged_past_the_limit() {
        let second = Duration::from_secs(1);
        assert_eq!(pod_end(true, true, Some(second)), PodEnd::Over);
        // Output still in flight, or guest-init still ending the pod: wait.
        assert_eq!(pod_end(true, false, Some(second)), PodEnd::Running);
        assert_eq!(pod_end(false, true, Some(second)), PodEnd::Running);
        assert_eq!(pod_end(false, true, None), PodEnd::Running);
        // Apps running (not every status in): no limit at all.
        assert_eq!(pod_end(false, false, None), PodEnd::Running);
        // Every status in, and guest-init silent past the limit: stopped.
        let past = POD_END_LIMIT + second;
        assert_eq!(pod_end(false, true, Some(past)), PodEnd::Wedged);
        assert_eq!(pod_end(true, false, Some(past)), PodEnd::Wedged);
        assert_eq!(pod_end(false, false, Some(POD_END_LIMIT)), PodEnd::Running);
    }

    #[test]
    fn no_host_network() {
        assert!(check_options(&args(&["--net=default"])).is_ok());
        assert!(check_options(&args(&["--net=none"])).is_ok());
        assert!(check_options(&args(&["--net=mynet:IP=10.1.1.1"])).is_ok());
        for (words, says) in [
            (&["--net=host"][..], "--net=host is impossible"),
            (&["--net=default,host"][..], "--net=host"),
            (&["--ipc=parent"][..], "--ipc=parent"),
            (&["--hostname=a_b"][..], "host name"),
        ] {
            let err = check_options(&args(words)).unwrap_err().to_string();
            assert!(err.contains(says), "{words:?}: {err}");
        }
    }

    #[test]
    fn the_vm_is_configured_from_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodPaths::new(dir.path().to_path_buf());
        let rootfs = pod.stage1_rootfs();
        fs::create_dir_all(&rootfs).unwrap();
        fs::write(pod.kernel(), "k").unwrap();
        fs::write(pod.initrd(), "i").unwrap();
        let host = tempfile::tempdir().unwrap();
        let manifest = PodManifest::from_json(
            format!(
                r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[],"volumes":[
                    {{"name":"e","kind":"empty"}},
                    {{"name":"h","kind":"host","source":"{}","readOnly":true}}]}}"#,
                host.path().display()
            )
            .as_bytes(),
        )
        .unwrap();
        let run_root = dir.path().join("run");
        let (config, run_dir) = prepare_vm(
            &args(&["--debug", "--hostname=box"]),
            &pod,
            &manifest,
            &run_root,
        )
        .unwrap();
        assert_eq!(
            config.kernel.cmdline,
            format!(
                "console=ttyS0 reboot=k panic=-1 quiet cgroup.memory=nosocket rkt.share=pod \
                 rkt.pod={UUID} rkt.hostname=box rkt.debug=1"
            )
        );
        assert_eq!(config.kernel.initrd, Some(pod.initrd()));
        assert_eq!((config.vcpus, config.mem_mib), (1, 128));
        assert_eq!(config.serial, SerialOutput::Stdout);
        let tags: Vec<_> = config
            .shares
            .iter()
            .map(|s| (s.tag.as_str(), s.read_only))
            .collect();
        assert_eq!(tags, [("pod", false), ("vol1", true)]);
        assert_eq!(config.shares[0].host_dir, run_dir.jail.join("shares/pod"));
        assert!(pod.empty_volume("e").is_dir());
        assert!(pod.status_dir().is_dir() && pod.logs_dir().is_dir());
        let vsock = config.vsock.unwrap();
        assert_eq!(vsock.uds_path, run_root.join(UUID).join("sock/vsock"));
        assert_eq!(vsock.host_ports, vec![pod_control::ports::STATUS_PORT]);

        let (insecure, _) = prepare_vm(
            &args(&["--disable-seccomp", "--disable-capabilities-restriction"]),
            &pod,
            &manifest,
            &run_root,
        )
        .unwrap();
        assert!(insecure
            .kernel
            .cmdline
            .ends_with(" rkt.disable=capabilities,seccomp"));
        let (quiet, _) = prepare_vm(&args(&[]), &pod, &manifest, &run_root).unwrap();
        assert!(quiet
            .kernel
            .cmdline
            .contains(&format!("rkt.hostname=rkt-{UUID}")));
        assert!(!quiet.kernel.cmdline.contains("rkt.debug"));
        assert_eq!(quiet.serial, SerialOutput::File(pod.console_log()));

        fs::remove_file(pod.kernel()).unwrap();
        let err = prepare_vm(&args(&[]), &pod, &manifest, &run_root)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no guest kernel"), "{err}");
    }
}
