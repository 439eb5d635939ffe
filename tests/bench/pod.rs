//! Pod start-up benchmark: `rkt run --stage1=kvm` of a prefetched hello image, warm (restored
//! from the stage1's snapshot cache, the default) and cold (`--warm-start=false`), against
//! `crun run` of the same root file system and the bare VMM boot of the same kernel, side by
//! side in one run; and `rkt run --net=default` against crun in a namespace attached with the
//! same CNI plugin called directly. Not a test: it reports; it fails (exit 1) only when a run
//! fails or something is left behind.
//!
//! For each run and each peer it measures, from spawning the command:
//! - to first output: the hello line on stdout (the app has run);
//! - to exit: the command has exited (pod torn down; `rkt gc` afterwards is not counted).
//!
//! Peers:
//! - `rkt run --net=none`, warm and cold (image in the store, `--pull-policy=never`, the
//!   installed kvm stage1, data dir on a fresh ext4 file system so that the pod's images are
//!   overlay-mounted; warm-up runs made the snapshots): the pod has loopback only, as crun's
//!   container;
//! - `rkt run --net=default`, warm: rkt's default network (CNI ptp + host-local, ipMasq), set
//!   up before the VM and torn down (CNI DEL, namespace removed) before `rkt run` exits;
//! - `crun run` of a bundle whose rootfs is the same busybox tree (config from `crun spec`,
//!   args replaced, no terminal): its own network namespace, loopback only;
//! - "crun run + netns + CNI ptp": what `--net=default` does, done by hand around the same
//!   crun (`e2e::direct_cni`, as tests/bench/images.rs without portmap: `ip netns add`,
//!   loopback up, ptp ADD with rkt's `default` configuration, `crun run` joining that
//!   namespace, then ptp DEL and `ip netns del`), timed from before `ip netns add` to the
//!   hello line and to the namespace's removal;
//! - `rkt-vmm` booting the stage1's kernel with the busybox initramfs and the same echo as the
//!   guest command, with its seccomp filters (as the jailed VMM runs) and without, so that the
//!   filters' cost shows.
//!
//! The CNI plugins run in the bench's own network namespace (the emulated host's), where
//! `rkt run --net=default` runs them too. After the table, the ratios of medians behind issue
//! 15's targets, then one `rkt --debug run` per network shows where rkt's time goes (its
//! `timing` lines). After every sample, `e2e::pod_leftovers` must find nothing, nor may crun's
//! containers of this bench or its namespace be left.
//!
//! With `--baseline-stage1 ACI` (another build of the kvm stage1, e.g. from before a change),
//! warm `rkt run --net=none` with that stage1 runs beside ours, and the ratio of the medians is
//! printed: the change's cost, measured in one run on one host.
//!
//! Usage: bench-pod [--runs N] [--baseline-stage1 ACI] (at least 5; `tools/bench-pod` runs it
//! in the emulated KVM host here, where absolute times are inflated by the emulation and only
//! the ratios mean much).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::direct_cni::{CniAttachment, DirectCni};
use e2e::{
    busybox_aci, busybox_image_root, busybox_initramfs, min_median_max, pod_leftovers, rkt_binary,
    rkt_vmm, vmlinux, ScratchFs,
};

const HELLO: &str = "hello-from-the-benchmark";
const IMAGE: &str = "example.com/hello";
/// One measurement may take this long before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy)]
struct Sample {
    to_first_output: f64,
    to_exit: f64,
}

struct Setup {
    _root: tempfile::TempDir,
    /// Where the data dir is: an ext4 file system, so that rkt mounts overlays as on a real
    /// host (the emulated host's /tmp is an overlay itself, where rkt would copy the images).
    _scratch: ScratchFs,
    data: PathBuf,
    config: PathBuf,
    /// crun's bundle: its own network namespace, loopback only.
    bundle: PathBuf,
    /// crun's bundle for the CNI peer: the same rootfs, joining `crun_netns`.
    bundle_net: PathBuf,
    /// The CNI peer's network namespace (under /run/netns), made and removed by every run.
    crun_netns: String,
    /// `--baseline-stage1 ACI`: another build of the kvm stage1 to run beside ours.
    baseline_stage1: Option<PathBuf>,
}

impl Setup {
    /// The CNI peer's namespace; the plugins run in the bench's own network namespace, as
    /// `rkt run --net=default`'s do.
    fn cni(&self) -> DirectCni<'static> {
        DirectCni::new(&self.crun_netns, None)
    }
}

fn rkt(setup: &Setup) -> Command {
    let mut command = Command::new(rkt_binary());
    command
        .arg(format!("--dir={}", setup.data.display()))
        .arg(format!("--local-config={}", setup.config.display()))
        .arg("--insecure-options=image");
    command
}

/// `rkt run --stage1=kvm --pull-policy=never --net=NET [EXTRA...] IMAGE`.
fn rkt_run_with(setup: &Setup, net: &str, extra: &[&str]) -> Command {
    let mut command = rkt(setup);
    command
        .args(["run", "--stage1=kvm", "--pull-policy=never"])
        .arg(format!("--net={net}"))
        .args(extra)
        .arg(IMAGE);
    command
}

fn rkt_run(setup: &Setup) -> Command {
    rkt_run_with(setup, "none", &[])
}

fn rkt_run_cold(setup: &Setup) -> Command {
    rkt_run_with(setup, "none", &["--warm-start=false"])
}

fn rkt_run_net_default(setup: &Setup) -> Command {
    rkt_run_with(setup, "default", &[])
}

/// Warm `rkt run --net=none` with the baseline stage1 (`--baseline-stage1`), e.g. a build from
/// before a change whose cost is being measured: same rkt, same image, same host, same run.
/// Both stage1s are trusted files of the bench's stage1 directory (`set_up`), so each is
/// imported once and then found by its stamp; a `--stage1-path` elsewhere would be read and
/// hashed on every run (about 0.8 s here), which is not the stage1's own cost.
fn rkt_run_baseline(setup: &Setup) -> Command {
    let mut command = rkt(setup);
    command
        .arg("run")
        .arg(format!("--stage1-from-dir={BASELINE_STAGE1}"))
        .args(["--pull-policy=never", "--net=none", IMAGE]);
    command
}

/// The baseline stage1's file name in the bench's stage1 directory.
const BASELINE_STAGE1: &str = "baseline-stage1.aci";

/// The bench's stage1 directory (rkt's `stage1-images` path, in the bench's own config): ours,
/// as `stage1-kvm.aci` (the default), and the baseline beside it.
fn stage1_images(setup: &Setup) -> Result<(), String> {
    let dir = setup._root.path().join("stage1-images");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = |from: &Path, name: &str| {
        fs::copy(from, dir.join(name))
            .map(drop)
            .map_err(|e| format!("copying {} into {}: {e}", from.display(), dir.display()))
    };
    copy(&e2e::rkt_bin_dir().join("stage1-kvm.aci"), "stage1-kvm.aci")?;
    if let Some(baseline) = &setup.baseline_stage1 {
        copy(baseline, BASELINE_STAGE1)?;
    }
    let paths = setup.config.join("paths.d");
    fs::create_dir_all(&paths).map_err(|e| format!("{}: {e}", paths.display()))?;
    let json = serde_json::json!({
        "rktKind": "paths",
        "rktVersion": "v1",
        "stage1-images": dir,
    });
    fs::write(paths.join("paths.json"), json.to_string())
        .map_err(|e| format!("{}: {e}", paths.display()))
}

/// crun's container names, `bench-pod-PID-...`.
fn crun_name(peer: &str) -> String {
    format!("bench-pod-{}-{peer}", std::process::id())
}

fn crun_run(setup: &Setup) -> Command {
    let mut command = Command::new("crun");
    command
        .arg("run")
        .arg("--bundle")
        .arg(&setup.bundle)
        .arg(crun_name("lo"));
    command
}

/// `crun run` of the bundle that joins the CNI peer's namespace (`crun_cni` attaches it).
fn crun_run_net(setup: &Setup) -> Command {
    let mut command = Command::new("crun");
    command
        .arg("run")
        .arg("--bundle")
        .arg(&setup.bundle_net)
        .arg(crun_name("cni"));
    command
}

fn bare_vmm(_: &Setup) -> Command {
    let mut command = Command::new(rkt_vmm());
    command.arg("--seccomp=enforce");
    add_bare_vm(&mut command);
    command
}

/// The same boot with the VMM's seccomp filters off: the difference is what the filters cost.
fn bare_vmm_unfiltered(_: &Setup) -> Command {
    let mut command = Command::new(rkt_vmm());
    command.arg("--seccomp=off");
    add_bare_vm(&mut command);
    command
}

fn add_bare_vm(command: &mut Command) {
    command
        .arg("--kernel")
        .arg(vmlinux())
        .arg("--initrd")
        .arg(busybox_initramfs())
        .args(["--mem", "128", "--cpus", "1", "--cmdline"])
        .arg(format!(
            "console=ttyS0 reboot=k panic=-1 quiet -- /bin/echo {HELLO}"
        ));
}

/// Runs `command`, timing its first `HELLO` line on stdout and its exit.
fn measure(command: Command) -> Result<Sample, String> {
    measure_from(Instant::now(), command)
}

/// As `measure`, the times counted from `started` (before the command's own set-up).
fn measure_from(started: Instant, mut command: Command) -> Result<Sample, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(HELLO) {
                let _ = tx.send(started.elapsed());
            }
        }
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{command:?} did not finish within {LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let to_exit = started.elapsed().as_secs_f64();
    let _ = reader.join();
    if !status.success() {
        return Err(format!("{command:?} failed: {status}"));
    }
    let first = rx
        .try_recv()
        .map_err(|_| format!("{command:?} never printed {HELLO}"))?;
    Ok(Sample {
        to_first_output: first.as_secs_f64(),
        to_exit,
    })
}

/// What `rkt run --net=default` does for the network, done by hand around `crun run`: the
/// namespace made, ptp ADD, crun in it, ptp DEL, the namespace removed; timed from before the
/// namespace is made to the hello line and to its removal. Undone whatever happened.
fn crun_cni(setup: &Setup) -> Result<Sample, String> {
    let cni = setup.cni();
    let name = crun_name("cni");
    let started = Instant::now();
    let mut attached = CniAttachment::default();
    let sample = cni
        .attach(&name, &[], &mut attached)
        .and_then(|()| measure_from(started, crun_run_net(setup)));
    if sample.is_err() {
        // `crun run` deletes its container when it ends; this is for one that did not.
        let _ = Command::new("crun")
            .args(["delete", "--force", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let undone = cni.undo(&name, attached);
    let to_exit = started.elapsed().as_secs_f64();
    let sample = sample?;
    undone?;
    Ok(Sample { to_exit, ..sample })
}

/// Removes the pods `rkt run` left (not timed).
fn gc(setup: &Setup) -> Result<(), String> {
    for _ in 0..2 {
        let out = rkt(setup)
            .args(["gc", "--grace-period=0s"])
            .output()
            .map_err(|e| format!("rkt gc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "rkt gc: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// What the runs left: `e2e::pod_leftovers` (pods, mounts, engine and plugin processes, pod
/// namespaces, leases, host-side links and CNI rules), crun's containers of this bench and
/// the CNI peer's namespace.
fn leftovers(setup: &Setup) -> Vec<String> {
    let mut left = pod_leftovers(&setup.data, None);
    let prefix = crun_name("");
    match Command::new("crun").arg("list").output() {
        Ok(out) => left.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .map(|l| format!("crun container {l}")),
        ),
        Err(e) => left.push(format!("cannot list crun's containers: {e}")),
    }
    left.extend(setup.cni().leftover());
    left
}

/// The store holds the hello image and the stage1 (warm-up runs fetch the stage1 and make the
/// warm-start snapshots, one per network: the snapshot's key counts the NICs); the crun
/// bundles have the same busybox tree as rootfs.
fn set_up(baseline_stage1: Option<PathBuf>) -> Result<Setup, String> {
    let scratch = ScratchFs::new();
    let root = tempfile::Builder::new()
        .prefix("bench-pod")
        .tempdir_in(scratch.path())
        .map_err(|e| format!("temp dir: {e}"))?;
    let setup = Setup {
        data: root.path().join("data"),
        config: root.path().join("etc-rkt"),
        bundle: root.path().join("bundle"),
        bundle_net: root.path().join("bundle-net"),
        crun_netns: format!("bench-pod-crun-{}", std::process::id()),
        _root: root,
        _scratch: scratch,
        baseline_stage1,
    };
    let left = leftovers(&setup);
    if !left.is_empty() {
        return Err(format!(
            "this host is not clean before the bench (it would count as the bench's leftovers): {left:?}"
        ));
    }
    stage1_images(&setup)?;
    let aci = busybox_aci(setup._root.path(), IMAGE, &["/bin/echo", HELLO]);
    let fetch = rkt(&setup)
        .arg("fetch")
        .arg(&aci)
        .output()
        .map_err(|e| format!("rkt fetch: {e}"))?;
    if !fetch.status.success() {
        return Err(format!(
            "rkt fetch: {}",
            String::from_utf8_lossy(&fetch.stderr).trim()
        ));
    }
    measure(rkt_run(&setup)).map_err(|e| format!("warm-up rkt run --net=none: {e}"))?;
    measure(rkt_run_net_default(&setup))
        .map_err(|e| format!("warm-up rkt run --net=default: {e}"))?;
    if setup.baseline_stage1.is_some() {
        measure(rkt_run_baseline(&setup))
            .map_err(|e| format!("warm-up rkt run, baseline stage1: {e}"))?;
    }
    gc(&setup)?;

    let rootfs = setup.bundle.join("rootfs");
    busybox_image_root(&rootfs);
    let spec = Command::new("crun")
        .arg("spec")
        .current_dir(&setup.bundle)
        .output()
        .map_err(|e| format!("crun spec (Debian's crun): {e}"))?;
    if !spec.status.success() {
        return Err(format!(
            "crun spec: {}",
            String::from_utf8_lossy(&spec.stderr)
        ));
    }
    let config = setup.bundle.join("config.json");
    fs::create_dir_all(&setup.bundle_net)
        .map_err(|e| format!("{}: {e}", setup.bundle_net.display()))?;
    adjust_crun_config(&config, &config, None)?;
    adjust_crun_config(
        &config,
        &setup.bundle_net.join("config.json"),
        Some((&rootfs, &setup.cni().netns_path())),
    )?;
    Ok(setup)
}

/// `crun spec`'s config at `from` with our command and no terminal (stdout is a pipe), written
/// to `to`. With `net` (a rootfs and a network namespace's path): that rootfs (the bundle is
/// another directory) and that namespace joined instead of a new one.
fn adjust_crun_config(from: &Path, to: &Path, net: Option<(&Path, &Path)>) -> Result<(), String> {
    let text = fs::read_to_string(from).map_err(|e| format!("config.json: {e}"))?;
    let mut config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("config.json: {e}"))?;
    config["process"]["terminal"] = serde_json::Value::Bool(false);
    config["process"]["args"] = serde_json::json!(["/bin/echo", HELLO]);
    if let Some((rootfs, netns)) = net {
        config["root"]["path"] = serde_json::json!(rootfs);
        let namespaces = config["linux"]["namespaces"]
            .as_array_mut()
            .ok_or("crun spec's config.json has no linux.namespaces")?;
        let network = namespaces
            .iter_mut()
            .find(|ns| ns["type"] == "network")
            .ok_or("crun spec's config.json has no network namespace")?;
        network["path"] = serde_json::json!(netns);
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| format!("config.json: {e}"))?;
    fs::write(to, text).map_err(|e| format!("{}: {e}", to.display()))
}

/// How a peer is run and what it leaves to clean up.
#[derive(Clone, Copy)]
enum Run {
    /// `rkt run`: `rkt gc` afterwards (not timed).
    Rkt(fn(&Setup) -> Command),
    /// A command that cleans up after itself.
    Plain(fn(&Setup) -> Command),
    /// `crun_cni`: crun in a namespace attached by the bench.
    CrunCni,
}

// The peers' places in the table and in `samples`.
const WARM: usize = 0;
const COLD: usize = 1;
const NET_DEFAULT: usize = 2;
const CRUN: usize = 3;
const CRUN_CNI: usize = 4;
const BARE: usize = 5;
const BARE_UNFILTERED: usize = 6;
const BASELINE: usize = 7;

fn peers(with_baseline: bool) -> Vec<(&'static str, Run)> {
    let mut peers = vec![
        ("rkt --net=none, warm", Run::Rkt(rkt_run)),
        ("rkt --net=none, cold", Run::Rkt(rkt_run_cold)),
        ("rkt --net=default, warm", Run::Rkt(rkt_run_net_default)),
        ("crun run", Run::Plain(crun_run)),
        ("crun + netns + CNI ptp", Run::CrunCni),
        ("bare rkt-vmm boot", Run::Plain(bare_vmm)),
        ("bare, no seccomp", Run::Plain(bare_vmm_unfiltered)),
    ];
    if with_baseline {
        peers.push(("warm, baseline s1", Run::Rkt(rkt_run_baseline)));
    }
    peers
}

/// One sample of a peer; then nothing of it may be left.
fn sample(setup: &Setup, run: Run) -> Result<Sample, String> {
    let sample = match run {
        Run::Rkt(make) => {
            let sample = measure(make(setup));
            let collected = gc(setup);
            let sample = sample?;
            collected?;
            sample
        }
        Run::Plain(make) => measure(make(setup))?,
        Run::CrunCni => crun_cni(setup)?,
    };
    let left = leftovers(setup);
    if !left.is_empty() {
        return Err(format!("left behind: {left:?}"));
    }
    Ok(sample)
}

/// A reported metric: its label and how to read it from a sample.
type Metric = (&'static str, fn(&Sample) -> f64);
const FIRST_OUTPUT: Metric = ("to first output", |s| s.to_first_output);
const EXIT: Metric = ("to exit", |s| s.to_exit);

fn median(samples: &[Sample], (_, get): Metric) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(get).collect();
    min_median_max(&mut values).1
}

/// One `rkt --debug run` with `--net=NET`: its timing lines (not timed, not in the table).
fn debug_run(setup: &Setup, net: &str) {
    println!(
        "\none `rkt --debug run --net={net}`, its timing lines (ms since the command started):"
    );
    match rkt(setup)
        .arg("--debug")
        .args(["run", "--stage1=kvm", "--pull-policy=never"])
        .arg(format!("--net={net}"))
        .arg(IMAGE)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            for line in text.lines().filter(|l| {
                l.contains("timing")
                    || l.contains("warm start")
                    || (l.contains("rkt-guest-init") && l.contains("]"))
            }) {
                println!("  {line}");
            }
        }
        Err(e) => println!("  rkt --debug run: {e}"),
    }
    if let Err(e) = gc(setup) {
        println!("  {e}");
    }
}

fn main() {
    let mut runs = 7;
    let mut baseline = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--runs", Some(n)) if n.parse::<usize>().is_ok_and(|n| n >= 5) => {
                runs = n.parse().unwrap_or(runs)
            }
            ("--baseline-stage1", Some(aci)) => baseline = Some(PathBuf::from(aci)),
            _ => {
                eprintln!(
                    "bench-pod: usage: bench-pod [--runs N] [--baseline-stage1 ACI], N at least 5"
                );
                std::process::exit(2);
            }
        }
    }
    let with_baseline = baseline.is_some();
    let setup = match set_up(baseline) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("bench-pod: {e}");
            std::process::exit(1);
        }
    };
    let peers = peers(with_baseline);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); peers.len()];
    for run in 0..runs {
        // Interleaved, so that drift in the machine's load hits every peer alike.
        for (i, (name, how)) in peers.iter().enumerate() {
            match sample(&setup, *how) {
                Ok(s) => {
                    // As it goes, so that a run cut short still shows its samples.
                    eprintln!(
                        "bench-pod: run {run} {name}: first output {:.3} s, exit {:.3} s",
                        s.to_first_output, s.to_exit
                    );
                    samples[i].push(s)
                }
                Err(e) => {
                    eprintln!("bench-pod: {name}, run {run}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    println!("pod start-up benchmark: {runs} runs each, interleaved; times in seconds");
    println!(
        "{:<16} {:<24} {:>27} {:>10} {:>10}",
        "", "min / median / max", "", "/crun", "/cold rkt"
    );
    for (label, get) in [FIRST_OUTPUT, EXIT] {
        let stats: Vec<(f64, f64, f64)> = samples
            .iter()
            .map(|peer| {
                let mut values: Vec<f64> = peer.iter().map(get).collect();
                min_median_max(&mut values)
            })
            .collect();
        let (crun_median, cold_median) = (stats[CRUN].1, stats[COLD].1);
        for ((name, _), (min, med, max)) in peers.iter().zip(&stats) {
            println!(
                "{label:<16} {name:<24} {:>27} {:>9.2}x {:>9.2}x",
                format!("{min:.3} / {med:.3} / {max:.3}"),
                med / crun_median,
                med / cold_median
            );
        }
    }
    println!("ratios: the peer's median / crun's median, and / cold rkt --net=none's median");

    let m = |peer: usize, metric: Metric| median(&samples[peer], metric);
    println!("\nissue 15's targets, ratios of medians (rkt: --net=none unless said):");
    let ratio = |what: &str, a: f64, b: f64, target: &str| {
        println!("  {what}: {a:.3} / {b:.3} = {:.2} (target {target})", a / b);
    };
    ratio(
        "warm rkt first output / crun first output",
        m(WARM, FIRST_OUTPUT),
        m(CRUN, FIRST_OUTPUT),
        "<= 3",
    );
    ratio(
        "warm rkt first output / bare rkt-vmm boot first output",
        m(WARM, FIRST_OUTPUT),
        m(BARE, FIRST_OUTPUT),
        "<= 0.5",
    );
    ratio(
        "warm rkt exit / crun exit",
        m(WARM, EXIT),
        m(CRUN, EXIT),
        "<= 3",
    );
    ratio(
        "warm rkt exit / cold rkt exit",
        m(WARM, EXIT),
        m(COLD, EXIT),
        "<= 0.3",
    );
    ratio(
        "(warm rkt --net=default exit - warm rkt exit) / (crun+CNI exit - crun exit)",
        m(NET_DEFAULT, EXIT) - m(WARM, EXIT),
        m(CRUN_CNI, EXIT) - m(CRUN, EXIT),
        "<= 1.5",
    );
    if with_baseline {
        for metric in [FIRST_OUTPUT, EXIT] {
            println!(
                "warm rkt run {}: this stage1 / the baseline stage1 = {:.3} / {:.3} = {:.3}",
                metric.0,
                m(WARM, metric),
                m(BASELINE, metric),
                m(WARM, metric) / m(BASELINE, metric)
            );
        }
    }
    println!(
        "seccomp filters in the bare VMM, first output: with / without = {:.3}",
        m(BARE, FIRST_OUTPUT) / m(BARE_UNFILTERED, FIRST_OUTPUT)
    );

    // Where rkt's time goes: one more run with --debug per network, its timing lines.
    debug_run(&setup, "none");
    debug_run(&setup, "default");

    let left = leftovers(&setup);
    println!("\nleftovers after the runs: {}", left.len());
    for item in &left {
        println!("  {item}");
    }
    if !left.is_empty() {
        eprintln!("bench-pod: {} leftovers (listed above)", left.len());
        std::process::exit(1);
    }
}
