//! Pod start-up benchmark: `rkt run --stage1=kvm` of a prefetched hello image, warm (restored
//! from the stage1's snapshot cache, the default) and cold (`--warm-start=false`), against
//! `crun run` of the same root file system and the bare VMM boot of the same kernel, side by
//! side in one run. Not a test: it reports, it asserts nothing.
//!
//! For each run and each peer it measures, from spawning the command:
//! - to first output: the hello line on stdout (the app has run);
//! - to exit: the command has exited (pod torn down; `rkt gc` afterwards is not counted).
//!
//! Peers: `rkt run` warm and cold (image in the store, `--pull-policy=never`, the installed
//! kvm stage1, data dir on a fresh ext4 file system so that the pod's images are
//! overlay-mounted; the warm-up run made the snapshot);
//! `crun run` of a bundle whose rootfs is the same busybox tree (config from `crun spec`,
//! args replaced, no terminal); `rkt-vmm` booting the stage1's kernel with the busybox
//! initramfs and the same echo as the guest command. After the table, one `rkt run --debug`
//! shows where rkt's time goes (its `timing` lines).
//!
//! `rkt-vmm` boots twice: with its seccomp filters (as the jailed VMM runs) and without, so the
//! filters' cost shows. With `--baseline-stage1 ACI` (another build of the kvm stage1, e.g. from
//! before a change), warm `rkt run` with that stage1 runs beside ours, and the ratio of the
//! medians is printed: the change's cost, measured in one run on one host.
//!
//! Usage: bench-pod [--runs N] [--baseline-stage1 ACI] (at least 5; `tools/bench-pod` runs it in the emulated KVM host
//! here, where absolute times are inflated by the emulation and only the ratios mean much).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::{
    busybox_aci, busybox_image_root, busybox_initramfs, min_median_max, rkt_binary, rkt_vmm,
    vmlinux, ScratchFs,
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
    bundle: PathBuf,
    /// `--baseline-stage1 ACI`: another build of the kvm stage1 to run beside ours.
    baseline_stage1: Option<PathBuf>,
}

fn rkt(setup: &Setup) -> Command {
    let mut command = Command::new(rkt_binary());
    command
        .arg(format!("--dir={}", setup.data.display()))
        .arg(format!("--local-config={}", setup.config.display()))
        .arg("--insecure-options=image");
    command
}

fn rkt_run(setup: &Setup) -> Command {
    let mut command = rkt(setup);
    command.args(["run", "--stage1=kvm", "--pull-policy=never", IMAGE]);
    command
}

fn rkt_run_cold(setup: &Setup) -> Command {
    let mut command = rkt(setup);
    command.args([
        "run",
        "--stage1=kvm",
        "--pull-policy=never",
        "--warm-start=false",
        IMAGE,
    ]);
    command
}

/// Warm `rkt run` with the baseline stage1 (`--baseline-stage1`), e.g. a build from before a
/// change whose cost is being measured: same rkt, same image, same host, same run.
fn rkt_run_baseline(setup: &Setup) -> Command {
    let mut command = rkt(setup);
    command.arg("run");
    if let Some(aci) = &setup.baseline_stage1 {
        command.arg(format!("--stage1-path={}", aci.display()));
    }
    command.args(["--pull-policy=never", IMAGE]);
    command
}

fn crun_run(setup: &Setup) -> Command {
    let mut command = Command::new("crun");
    command
        .arg("run")
        .arg("--bundle")
        .arg(&setup.bundle)
        .arg(format!("bench-pod-{}", std::process::id()));
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
fn measure(mut command: Command) -> Result<Sample, String> {
    let started = Instant::now();
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

/// The store holds the hello image and the stage1 (one warm-up run fetches the stage1 and
/// makes the warm-start snapshot); the crun bundle has the same busybox tree as rootfs.
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
        _root: root,
        _scratch: scratch,
        baseline_stage1,
    };
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
    measure(rkt_run(&setup)).map_err(|e| format!("warm-up rkt run: {e}"))?;
    if setup.baseline_stage1.is_some() {
        measure(rkt_run_baseline(&setup))
            .map_err(|e| format!("warm-up rkt run, baseline stage1: {e}"))?;
    }
    gc(&setup)?;

    busybox_image_root(&setup.bundle.join("rootfs"));
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
    adjust_crun_config(&setup.bundle.join("config.json"))?;
    Ok(setup)
}

/// `crun spec`'s config with our command and no terminal (stdout is a pipe).
fn adjust_crun_config(path: &Path) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("config.json: {e}"))?;
    let mut config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("config.json: {e}"))?;
    config["process"]["terminal"] = serde_json::Value::Bool(false);
    config["process"]["args"] = serde_json::json!(["/bin/echo", HELLO]);
    let text = serde_json::to_string_pretty(&config).map_err(|e| format!("config.json: {e}"))?;
    fs::write(path, text).map_err(|e| format!("config.json: {e}"))
}

type Peer = (&'static str, fn(&Setup) -> Command);
/// A reported metric: its label and how to read it from a sample.
type Metric = (&'static str, fn(&Sample) -> f64);

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
    let mut peers: Vec<Peer> = vec![
        ("rkt run (kvm, warm)", rkt_run),
        ("rkt run (kvm, cold)", rkt_run_cold),
        ("crun run", crun_run),
        ("bare rkt-vmm boot", bare_vmm),
        ("bare, no seccomp", bare_vmm_unfiltered),
    ];
    if with_baseline {
        peers.push(("warm, baseline s1", rkt_run_baseline));
    }
    let is_rkt = |i: usize| i < 2 || i == 5;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); peers.len()];
    for run in 0..runs {
        // Interleaved, so that drift in the machine's load hits every peer alike.
        for (i, (name, make)) in peers.iter().enumerate() {
            let sample = measure(make(&setup)).and_then(|s| {
                if is_rkt(i) {
                    gc(&setup)?;
                }
                Ok(s)
            });
            match sample {
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
        "{:<16} {:<20} {:>27} {:>10} {:>10}",
        "", "min / median / max", "", "/crun", "/cold rkt"
    );
    let metrics: [Metric; 2] = [
        ("to first output", |s| s.to_first_output),
        ("to exit", |s| s.to_exit),
    ];
    for (label, get) in metrics {
        let stats: Vec<(f64, f64, f64)> = samples
            .iter()
            .map(|peer| {
                let mut values: Vec<f64> = peer.iter().map(get).collect();
                min_median_max(&mut values)
            })
            .collect();
        let (crun_median, cold_median) = (stats[2].1, stats[1].1);
        for ((name, _), (min, med, max)) in peers.iter().zip(&stats) {
            println!(
                "{label:<16} {name:<20} {:>27} {:>9.2}x {:>9.2}x",
                format!("{min:.3} / {med:.3} / {max:.3}"),
                med / crun_median,
                med / cold_median
            );
        }
    }
    println!("ratios: the peer's median / crun's median, and / cold rkt run's median");
    if with_baseline {
        for (label, get) in metrics {
            let median = |i: usize| {
                let mut values: Vec<f64> = samples[i].iter().map(get).collect();
                min_median_max(&mut values).1
            };
            println!(
                "warm rkt run {label}: this stage1 / the baseline stage1 = {:.3} / {:.3} = {:.3}",
                median(0),
                median(5),
                median(0) / median(5)
            );
        }
    }
    println!(
        "seccomp filters in the bare VMM, first output: with / without = {:.3}",
        {
            let median = |i: usize| {
                let mut values: Vec<f64> = samples[i].iter().map(|s| s.to_first_output).collect();
                min_median_max(&mut values).1
            };
            median(3) / median(4)
        }
    );

    // Where rkt's time goes: one more run with --debug, its timing lines.
    println!("\none `rkt --debug run`, its timing lines (ms since the command started):");
    match rkt(&setup)
        .arg("--debug")
        .args(["run", "--stage1=kvm", "--pull-policy=never", IMAGE])
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
    let _ = gc(&setup);
}
