//! virtio-fs and vsock benchmark: the guest over our devices against the host doing the same
//! work directly, side by side in one run. Not a test: it reports, it asserts nothing.
//!
//! File system (`rkt-fs-probe bench`, the same static binary on both sides, on a fresh ext4
//! file system each time): a sequential write of an N MiB file ending with fsync, its
//! sequential read after dropping it from the reader's page cache, and create + stat + unlink
//! of M one-byte files. Host: the probe runs on the host in the file system's directory.
//! Guest: the probe runs in the VM in the same kind of directory shared over virtio-fs.
//!
//! vsock: `rkt-vsock-probe send` pushes N MiB guest -> host through the VMM's socket, against the
//! host's own vsock loopback (`vsock_loopback`, the same probe on both ends) as the peer.
//!
//! Usage: bench-virtio [--runs N] [--mib N] [--files N] [--vsock-mib N]
//! (run it where KVM is ordinary: `tools/bench-virtio` puts it inside the emulated KVM host
//! here, where absolute numbers are inflated by emulation and only the ratios mean something).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use e2e::{
    boot_vm_with_limit, guest_tool, min_median_max, populate_guest_root, run_with_limit,
    share_cmdline, ScratchFs,
};
use guest_tools::SummaryHasher;

/// How long one side of one measurement may take before the benchmark gives up.
const BENCH_LIMIT: Duration = Duration::from_secs(1800);

struct Options {
    runs: usize,
    mib: u32,
    files: u32,
    vsock_mib: u32,
}

/// One run's seconds per metric, in METRICS order.
type Sample = [f64; 4];
const METRICS: [&str; 4] = [
    "seq write + fsync",
    "seq read (cold cache)",
    "create+stat+unlink files",
    "stream throughput (send)",
];

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        runs: 5,
        mib: 256,
        files: 5000,
        vsock_mib: 256,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u32>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--runs" => options.runs = number()? as usize,
            "--mib" => options.mib = number()?,
            "--files" => options.files = number()?,
            "--vsock-mib" => options.vsock_mib = number()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(options)
}

/// `secs=` of the line starting with `label` in `output`.
fn seconds(output: &str, label: &str) -> Result<f64, String> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix("secs="))
        })
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no {label:?} with secs= in:\n{output}"))
}

fn fs_seconds(output: &str) -> Result<[f64; 3], String> {
    Ok([
        seconds(output, "bench seq-write")?,
        seconds(output, "bench seq-read")?,
        seconds(output, "bench small-files")?,
    ])
}

fn host_fs(o: &Options) -> Result<[f64; 3], String> {
    let scratch = ScratchFs::new();
    let run = run_with_limit(
        Command::new(guest_tool("rkt-fs-probe"))
            .arg("bench")
            .arg(scratch.path())
            .arg(o.mib.to_string())
            .arg(o.files.to_string()),
        BENCH_LIMIT,
    );
    fs_seconds(&run.stdout)
}

fn guest_fs(o: &Options) -> Result<[f64; 3], String> {
    let scratch = ScratchFs::new();
    let root = scratch.path().join("root");
    populate_guest_root(&root);
    std::fs::create_dir(root.join("work")).map_err(|e| e.to_string())?;
    let command = format!("/bin/rkt-fs-probe bench /work {} {}", o.mib, o.files);
    let share = format!("pod={}", scratch.path().display());
    let run = boot_vm_with_limit(
        &share_cmdline("pod", "root", &command),
        512,
        &[OsStr::new("--share"), OsStr::new(&share)],
        BENCH_LIMIT,
    );
    if run.status.code() != Some(0) {
        return Err(format!("guest run failed:\n{run}"));
    }
    fs_seconds(&run.stdout)
}

/// Accepts one connection on `listener`, reads it to the end and answers with the summary line
/// the sender waits for (a sink for `rkt-vsock-probe send`).
fn drain_one(listener: UnixListener) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return 0;
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut hasher = SummaryHasher::new();
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let summary = hasher.finish();
        let _ = stream.write_all(summary.reply_line().as_bytes());
        summary.bytes
    })
}

fn guest_vsock(o: &Options) -> Result<f64, String> {
    let scratch = ScratchFs::new();
    populate_guest_root(&scratch.path().join("root"));
    let sockets = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = sockets.path().join("vsock");
    let listener = UnixListener::bind(format!("{}_6000", socket.display()))
        .map_err(|e| format!("bind: {e}"))?;
    let sink = drain_one(listener);
    let share = format!("pod={}", scratch.path().display());
    let command = format!("/bin/rkt-vsock-probe send 2 6000 {}M", o.vsock_mib);
    let run = boot_vm_with_limit(
        &share_cmdline("pod", "root", &command),
        256,
        &[
            OsStr::new("--share"),
            OsStr::new(&share),
            OsStr::new("--vsock"),
            socket.as_os_str(),
            OsStr::new("--vsock-port"),
            OsStr::new("6000"),
        ],
        BENCH_LIMIT,
    );
    let received = sink.join().unwrap_or(0);
    if received != u64::from(o.vsock_mib) << 20 {
        return Err(format!("host received {received} bytes:\n{run}"));
    }
    seconds(&run.stdout, "sent")
}

fn host_vsock(o: &Options) -> Result<f64, String> {
    // The host's own vsock loopback transport; modprobe is harmless when it is loaded already.
    let _ = Command::new("modprobe").arg("vsock_loopback").status();
    let probe = guest_tool("rkt-vsock-probe");
    let mut listener = Command::new(&probe)
        .args(["listen", "7000"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the loopback listener: {e}"))?;
    thread::sleep(Duration::from_millis(500));
    let run = run_with_limit(
        Command::new(&probe).args(["send", "1", "7000", &format!("{}M", o.vsock_mib)]),
        Duration::from_secs(600),
    );
    let _ = listener.kill();
    let _ = listener.wait();
    seconds(&run.stdout, "sent")
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-virtio: {e}");
            std::process::exit(2);
        }
    };
    let mut guest: Vec<Sample> = Vec::new();
    let mut host: Vec<Sample> = Vec::new();
    for run in 0..options.runs {
        // Interleave the two sides so drift in the machine's load hits both alike.
        let result = (|| -> Result<(Sample, Sample), String> {
            let [gw, gr, gf] = guest_fs(&options)?;
            let [hw, hr, hf] = host_fs(&options)?;
            let gv = guest_vsock(&options)?;
            let hv = host_vsock(&options)?;
            Ok(([gw, gr, gf, gv], [hw, hr, hf, hv]))
        })();
        match result {
            Ok((g, h)) => {
                guest.push(g);
                host.push(h);
            }
            Err(e) => {
                eprintln!("bench-virtio: run {run}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "virtio benchmark: {} runs; file: {} MiB, {} small files, on a fresh ext4 each time; \
         vsock: {} MiB guest -> host",
        options.runs, options.mib, options.files, options.vsock_mib
    );
    println!(
        "{:<28} {:>30} {:>30} {:>8}",
        "seconds (min / median / max)", "guest over virtio", "host directly", "ratio"
    );
    for (i, label) in METRICS.iter().enumerate() {
        let mut g: Vec<f64> = guest.iter().map(|s| s[i]).collect();
        let mut h: Vec<f64> = host.iter().map(|s| s[i]).collect();
        let (gmin, gmed, gmax) = min_median_max(&mut g);
        let (hmin, hmed, hmax) = min_median_max(&mut h);
        println!(
            "{label:<28} {:>30} {:>30} {:>7.2}x",
            format!("{gmin:.3} / {gmed:.3} / {gmax:.3}"),
            format!("{hmin:.3} / {hmed:.3} / {hmax:.3}"),
            gmed / hmed
        );
    }
    let mib = f64::from(options.mib);
    let vmib = f64::from(options.vsock_mib);
    let med = |v: &[Sample], i: usize| {
        let mut x: Vec<f64> = v.iter().map(|s| s[i]).collect();
        min_median_max(&mut x).1
    };
    println!(
        "throughput (median): write {:.0} vs {:.0} MiB/s, read {:.0} vs {:.0} MiB/s, \
         vsock {:.0} vs {:.0} MiB/s (guest vs host)",
        mib / med(&guest, 0),
        mib / med(&host, 0),
        mib / med(&guest, 1),
        mib / med(&host, 1),
        vmib / med(&guest, 3),
        vmib / med(&host, 3)
    );
    println!(
        "ratio = guest median / host median seconds (1.00x = as fast as the host; the host's \
         vsock peer is its own loopback transport)"
    );
}
