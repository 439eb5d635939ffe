//! Boot benchmark: our VMM (`rkt-vmm`) against QEMU's `microvm` machine, side by side in one run,
//! on the same kernel, initramfs and guest command. Not a test: it reports, it asserts nothing.
//!
//! For each run and each VMM it measures
//! - spawn to first line: wall time from spawning the VMM to the guest command's first line on
//!   the serial console (guest-init has started the command by then);
//! - guest uptime at that point (the command prints /proc/uptime): how long the guest kernel took;
//! - spawn to exit: total wall time until the VMM process has exited;
//! - VMM CPU time (user + system, from wait4);
//! - VMM memory: max RSS minus the resident part of the guest RAM mapping (sampled from
//!   /proc/PID/smaps), i.e. what the monitor itself costs.
//!
//! Usage: bench-boot [--runs N] [--kernel PATH] [--initrd PATH] [--cpus N] [--mem MiB]
//! (run it where KVM is ordinary: `tools/bench-boot` puts it inside the emulated KVM host here).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::{busybox_initramfs, min_median_max, rkt_vmm, vmlinux};

/// The guest command: its first output line is the "reached userspace" mark.
const GUEST_COMMAND: &str =
    r#"/bin/sh -c "read up idle </proc/uptime; echo bench-ready uptime=$up""#;

struct Options {
    runs: usize,
    kernel: PathBuf,
    initrd: PathBuf,
    cpus: u32,
    mem_mib: u64,
}

#[derive(Default, Clone)]
struct Sample {
    to_first_line: f64,
    guest_uptime: f64,
    to_exit: f64,
    cpu: f64,
    vmm_rss_mib: f64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        runs: 7,
        kernel: vmlinux(),
        initrd: busybox_initramfs(),
        cpus: 1,
        mem_mib: 128,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => options.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--kernel" => options.kernel = value()?.into(),
            "--initrd" => options.initrd = value()?.into(),
            "--cpus" => options.cpus = value()?.parse().map_err(|e| format!("--cpus: {e}"))?,
            "--mem" => options.mem_mib = value()?.parse().map_err(|e| format!("--mem: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.runs < 5 {
        return Err("--runs must be at least 5".into());
    }
    Ok(options)
}

fn our_vmm(o: &Options) -> Command {
    let mut command = Command::new(rkt_vmm());
    command
        .arg("--kernel")
        .arg(&o.kernel)
        .arg("--initrd")
        .arg(&o.initrd)
        .arg("--mem")
        .arg(o.mem_mib.to_string())
        .arg("--cpus")
        .arg(o.cpus.to_string())
        .arg("--cmdline")
        .arg(format!(
            "console=ttyS0 reboot=k panic=-1 quiet -- {GUEST_COMMAND}"
        ));
    command
}

fn qemu_microvm(o: &Options) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-M", "microvm", "-accel", "kvm", "-cpu", "host"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-m")
        .arg(o.mem_mib.to_string())
        .arg("-smp")
        .arg(o.cpus.to_string())
        .arg("-kernel")
        .arg(&o.kernel)
        .arg("-initrd")
        .arg(&o.initrd)
        // microvm has no i8042 reset path: reboot=t makes the guest's reboot a triple fault,
        // which ends QEMU under -no-reboot.
        .arg("-append")
        .arg(format!(
            "console=ttyS0 reboot=t panic=-1 quiet -- {GUEST_COMMAND}"
        ));
    command
}

/// The resident KiB of the largest mapping at least as big as the guest RAM: the guest memory.
fn guest_ram_rss_kib(pid: u32, mem_mib: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut best: Option<u64> = None;
    let mut size_kib = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("Size:") => size_kib = fields.next()?.parse().ok()?,
            Some("Rss:") if size_kib >= mem_mib * 1024 => {
                let rss: u64 = fields.next()?.parse().ok()?;
                best = Some(best.map_or(rss, |b| b.max(rss)));
            }
            _ => {}
        }
    }
    best
}

fn measure(mut command: Command, mem_mib: u64) -> Result<Sample, String> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("bench-ready uptime=").nth(1) {
                let _ = tx.send((
                    started.elapsed(),
                    rest.trim().parse::<f64>().unwrap_or(f64::NAN),
                ));
            }
        }
    });
    // Sample the guest RAM's resident size until the process is gone (the last sample wins).
    let mut guest_rss_kib = 0;
    let mut status = 0;
    let mut usage: libc::rusage = zeroed_rusage();
    loop {
        if let Some(kib) = guest_ram_rss_kib(pid, mem_mib) {
            guest_rss_kib = kib;
        }
        // SAFETY: wait4 on our own child's pid with valid pointers to locals.
        let waited = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
        if waited == pid as i32 {
            break;
        }
        if waited < 0 {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            return Err("the VM did not finish within 300 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let to_exit = started.elapsed().as_secs_f64();
    let _ = reader.join();
    let (first_line, uptime) = rx
        .try_recv()
        .map_err(|_| "the guest never printed its ready line".to_string())?;
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    let max_rss_kib = usage.ru_maxrss as u64; // KiB on Linux
    Ok(Sample {
        to_first_line: first_line.as_secs_f64(),
        guest_uptime: uptime,
        to_exit,
        cpu,
        vmm_rss_mib: max_rss_kib.saturating_sub(guest_rss_kib) as f64 / 1024.0,
    })
}

fn zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is a plain C struct of integers, for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// A peer: its name and how to build its command line.
type Peer = (&'static str, fn(&Options) -> Command);
/// A reported metric: label, how to read it from a sample, unit.
type Metric = (&'static str, fn(&Sample) -> f64, &'static str);

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-boot: {e}");
            std::process::exit(2);
        }
    };
    let peers: [Peer; 2] = [("rkt-vmm", our_vmm), ("qemu-microvm", qemu_microvm)];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); peers.len()];
    for run in 0..options.runs {
        // Interleave the peers so that drift in the machine's load hits both alike.
        for (i, (name, make)) in peers.iter().enumerate() {
            match measure(make(&options), options.mem_mib) {
                Ok(s) => samples[i].push(s),
                Err(e) => {
                    eprintln!("bench-boot: {name} run {run}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    println!(
        "boot benchmark: {} runs, {} vCPU, {} MiB, kernel {}, initrd {}",
        options.runs,
        options.cpus,
        options.mem_mib,
        options.kernel.display(),
        options.initrd.display()
    );
    println!(
        "{:<34} {:>28} {:>28} {:>8}",
        "metric (min / median / max)", peers[0].0, peers[1].0, "ratio"
    );
    let metrics: [Metric; 5] = [
        ("spawn to first guest line", |s| s.to_first_line, "s"),
        ("guest uptime at first line", |s| s.guest_uptime, "s"),
        ("spawn to exit", |s| s.to_exit, "s"),
        ("VMM CPU time", |s| s.cpu, "s"),
        ("VMM max RSS minus guest RAM", |s| s.vmm_rss_mib, "MiB"),
    ];
    for (label, get, unit) in metrics {
        let mut cells = Vec::new();
        let mut medians = Vec::new();
        for peer in &samples {
            let mut values: Vec<f64> = peer.iter().map(get).collect();
            let (min, med, max) = min_median_max(&mut values);
            cells.push(format!("{min:.3} / {med:.3} / {max:.3} {unit}"));
            medians.push(med);
        }
        let ratio = medians[0] / medians[1];
        println!(
            "{label:<34} {:>28} {:>28} {ratio:>7.2}x",
            cells[0], cells[1]
        );
    }
    println!("ratio = rkt-vmm median / qemu-microvm median (lower is better for rkt-vmm)");
}
