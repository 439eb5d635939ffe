//! Warm-start benchmark: cold boots against restores of one warm snapshot (`rkt-vmm
//! --snapshot-to` / `--restore-from`), same kernel, initramfs, devices (rng, vsock) and guest
//! command. Not a test: it reports, it asserts nothing.
//!
//! - time to first output: wall time from spawning the VMM to the guest command's first line on
//!   the console, and to the VMM's exit; min/median/max over `--runs` runs of each;
//! - host memory: `--vms` idle VMs of each kind kept running at once (the command prints its line
//!   and sleeps), then the sum of their VMMs' PSS from /proc/PID/smaps_rollup (PSS splits pages
//!   shared between processes, such as the page cache of the snapshot's memory file, between
//!   them).
//!
//! Usage: bench-warm [--runs N] [--vms N] [--mem MiB]
//! (`tools/bench-warm` runs it inside the emulated KVM host on kvm_pvm machines).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::{busybox_initramfs, min_median_max, rkt_vmm, vmlinux};

const WARM_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet rkt.warm=1";
const KERNEL_PARAMS: &str = "console=ttyS0 reboot=k panic=-1 quiet";
const READY: &str = "bench-ready";
const LIMIT: Duration = Duration::from_secs(180);

struct Options {
    runs: usize,
    vms: usize,
    mem_mib: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        runs: 7,
        vms: 10,
        mem_mib: 128,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => options.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--vms" => options.vms = value()?.parse().map_err(|e| format!("--vms: {e}"))?,
            "--mem" => options.mem_mib = value()?.parse().map_err(|e| format!("--mem: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.runs < 5 {
        return Err("--runs must be at least 5".into());
    }
    Ok(options)
}

/// `rkt-vmm` with the benchmark's VM shape and its own vsock socket.
fn vmm(o: &Options, socket: &Path) -> Command {
    let mut command = Command::new(rkt_vmm());
    command
        .arg("--kernel")
        .arg(vmlinux())
        .arg("--initrd")
        .arg(busybox_initramfs())
        .arg("--mem")
        .arg(o.mem_mib.to_string())
        .arg("--vsock")
        .arg(socket);
    command
}

enum Kind<'a> {
    Cold,
    Warm(&'a Path),
}

/// Starts one VM running `command` and returns it with a receiver of its console lines.
fn start(
    o: &Options,
    kind: &Kind,
    socket: &Path,
    command: &str,
) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = vmm(o, socket);
    match kind {
        Kind::Cold => cmd
            .arg("--cmdline")
            .arg(format!("{KERNEL_PARAMS} -- {command}")),
        Kind::Warm(snap) => cmd
            .arg("--restore-from")
            .arg(snap)
            .arg("--cmdline")
            .arg(format!("-- {command}")),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rkt-vmm");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_ready(rx: &mpsc::Receiver<String>, started: Instant) -> Option<f64> {
    loop {
        let left = LIMIT.checked_sub(started.elapsed())?;
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(READY) => return Some(started.elapsed().as_secs_f64()),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// One timed run: (to first line, to exit), in seconds.
fn timed_run(o: &Options, kind: &Kind, socket: &Path) -> Option<(f64, f64)> {
    let started = Instant::now();
    let (mut child, rx) = start(o, kind, socket, &format!("/bin/sh -c \"echo {READY}\""));
    let first = wait_ready(&rx, started);
    let status = child.wait().ok()?;
    let exit = started.elapsed().as_secs_f64();
    (status.success()).then_some(())?;
    Some((first?, exit))
}

fn pss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Starts `o.vms` idle VMs at once, returns the sum of their PSS in MiB once all are ready.
fn idle_pss(o: &Options, kind: &Kind, dir: &Path, tag: &str) -> Option<f64> {
    let mut vms = Vec::new();
    for i in 0..o.vms {
        let socket = dir.join(format!("{tag}{i}.sock"));
        let started = Instant::now();
        let (child, rx) = start(
            o,
            kind,
            &socket,
            &format!("/bin/sh -c \"echo {READY}; sleep 600\""),
        );
        vms.push((child, rx, started));
    }
    let mut ok = true;
    for (_, rx, started) in &vms {
        ok &= wait_ready(rx, *started).is_some();
    }
    // Let the guests settle into their sleep.
    std::thread::sleep(Duration::from_secs(2));
    let total: u64 = vms.iter().map(|(c, _, _)| pss_kib(c.id())).sum();
    for (mut child, _, _) in vms {
        let _ = child.kill();
        let _ = child.wait();
    }
    ok.then_some(total as f64 / 1024.0)
}

fn report(name: &str, values: &mut [f64]) {
    if values.is_empty() {
        println!("{name:<34} no successful run");
        return;
    }
    let (min, median, max) = min_median_max(values);
    println!("{name:<34} min {min:7.3}  median {median:7.3}  max {max:7.3}");
}

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-warm: {e}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let snap: PathBuf = dir.path().join("snap");
    let started = Instant::now();
    let saved = vmm(&o, &dir.path().join("snap.sock"))
        .args([
            "--serial",
            "off",
            "--cmdline",
            WARM_CMDLINE,
            "--snapshot-to",
        ])
        .arg(&snap)
        .output()
        .expect("run rkt-vmm --snapshot-to");
    if !saved.status.success() {
        eprintln!(
            "bench-warm: snapshot failed: {}",
            String::from_utf8_lossy(&saved.stderr)
        );
        std::process::exit(1);
    }
    println!(
        "snapshot: {:.3} s; {}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&saved.stderr).trim()
    );

    let (mut cold_first, mut cold_exit, mut warm_first, mut warm_exit) =
        (vec![], vec![], vec![], vec![]);
    for run in 0..o.runs {
        // Interleaved, so that load changes hit both kinds alike.
        if let Some((f, e)) = timed_run(&o, &Kind::Cold, &dir.path().join(format!("c{run}.sock"))) {
            cold_first.push(f);
            cold_exit.push(e);
        }
        if let Some((f, e)) = timed_run(
            &o,
            &Kind::Warm(&snap),
            &dir.path().join(format!("w{run}.sock")),
        ) {
            warm_first.push(f);
            warm_exit.push(e);
        }
    }
    println!(
        "runs: {} of each, {} MiB, 1 vCPU, rng + vsock (seconds)",
        o.runs, o.mem_mib
    );
    report("cold: spawn to first output", &mut cold_first);
    report("warm: spawn to first output", &mut warm_first);
    report("cold: spawn to exit", &mut cold_exit);
    report("warm: spawn to exit", &mut warm_exit);
    if !cold_first.is_empty() && !warm_first.is_empty() {
        let (_, c, _) = min_median_max(&mut cold_first);
        let (_, w, _) = min_median_max(&mut warm_first);
        println!("median first-output ratio cold/warm: {:.1}x", c / w);
    }
    let cold_pss = idle_pss(&o, &Kind::Cold, dir.path(), "ic");
    let warm_pss = idle_pss(&o, &Kind::Warm(&snap), dir.path(), "iw");
    let show = |v: Option<f64>| v.map_or("failed".to_string(), |m| format!("{m:.1} MiB"));
    println!(
        "host memory (sum of PSS) of {} idle VMs: cold {}, restored {}",
        o.vms,
        show(cold_pss),
        show(warm_pss)
    );
}
