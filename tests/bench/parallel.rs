//! Parallel pod benchmark (issue 15): N `rkt run --stage1=kvm` of a prefetched hello image
//! started at once, round after round, against N `crun run` of the same root file system at
//! once. It reports throughput and counts failures; it asserts nothing but exits 1 when any
//! pod failed or left something behind.
//!
//! For each N (`--pods`), network (`--net`) and warm-start mode (`--mode`) it runs R rounds
//! (`--rounds`) and measures each round's wall time, from releasing the N spawns to the last
//! exit; pods per second is N / the median round time. crun runs N containers per round in the
//! same rounds (interleaved with rkt's, so drift in the machine's load hits every peer alike);
//! crun's containers have a network namespace of their own with loopback only, whatever
//! `--net` says (crun does not run CNI), so the `default` rows compare a networked pod with an
//! unnetworked container.
//!
//! Modes: `cold`, the stage1's warm-start cache emptied (`rkt snapshot clear`) before every
//! round, so one pod of the round makes the snapshot while the others wait for it and then
//! restore it (the first burst after an install or upgrade); `warm`, the cache filled for the
//! round's shape, so every pod restores; `off`, `--warm-start=false`, every pod boots its
//! kernel.
//!
//! A pod fails when its command exits non-zero, is killed after LIMIT, or does not print its
//! own token (each pod and container gets one: `--exec=/bin/echo -- TOKEN`, and a bundle of its
//! own for crun). After every rkt round `rkt gc --grace-period=0s` runs (twice: mark, sweep;
//! not timed) and everything left is counted (e2e::pod_leftovers: pod directories, mounts,
//! stage1/VMM/rkt and CNI processes, pod network namespaces, which hold the taps, veths, CNI
//! leases and rules, stage1 run directories, VMM cgroups); after every crun round, the
//! containers `crun list` still shows. Leftovers count as failures.
//!
//! Usage: bench-parallel [--pods 1,4,8] [--rounds 3] [--net none,default] [--mode cold,warm]
//! (`tools/bench-parallel` runs it in the emulated KVM host here, where absolute times are
//! inflated by the emulation and only the ratios mean much). The defaults are sized for that
//! host with one vCPU: on 2026-12-06 they took 581 s there (one set of rounds, N = 1, 4 and 8
//! with each network and mode and crun, about 3.2 minutes), 9 m 47 s for `tools/bench-parallel`
//! with its set-up and the host's start; N = 1 is the serial baseline the parallel rows
//! compare with.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use e2e::{
    busybox_aci, busybox_image_root, min_median_max, pod_leftovers, rkt_binary, run_quiet,
    ScratchFs,
};

const IMAGE: &str = "example.com/hello";
/// One pod may take this long before it counts as hung (killed, a failure).
const LIMIT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Net {
    None,
    Default,
}

impl Net {
    fn name(self) -> &'static str {
        match self {
            Net::None => "none",
            Net::Default => "default",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Cold,
    Warm,
    Off,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Warm => "warm",
            Mode::Off => "off",
        }
    }
}

struct Options {
    pods: Vec<usize>,
    rounds: usize,
    nets: Vec<Net>,
    modes: Vec<Mode>,
}

const USAGE: &str = "usage: bench-parallel [--pods N,N...] [--rounds R] [--net none,default] \
                     [--mode cold,warm,off]";

fn parse_list<T>(value: &str, item: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    let items: Option<Vec<T>> = value.split(',').map(|v| item(v.trim())).collect();
    items.filter(|items| !items.is_empty())
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        pods: vec![1, 4, 8],
        rounds: 3,
        nets: vec![Net::None, Net::Default],
        modes: vec![Mode::Cold, Mode::Warm],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--pods" => {
                options.pods = parse_list(&value, |v| v.parse().ok().filter(|n| *n >= 1))
                    .ok_or("--pods: a list of numbers, each at least 1")?
            }
            "--rounds" => {
                options.rounds = value
                    .parse()
                    .ok()
                    .filter(|r| *r >= 1)
                    .ok_or("--rounds: a number, at least 1")?
            }
            "--net" => {
                options.nets = parse_list(&value, |v| match v {
                    "none" => Some(Net::None),
                    "default" => Some(Net::Default),
                    _ => None,
                })
                .ok_or("--net: a list of none, default")?
            }
            "--mode" => {
                options.modes = parse_list(&value, |v| match v {
                    "cold" => Some(Mode::Cold),
                    "warm" => Some(Mode::Warm),
                    "off" => Some(Mode::Off),
                    _ => None,
                })
                .ok_or("--mode: a list of cold, warm, off")?
            }
            _ => return Err(USAGE.into()),
        }
    }
    Ok(options)
}

/// A network namespace playing the host for `--net=default` pods: their veths, routes and
/// masquerade rules go there, not into the machine's own namespace. Removed on drop.
struct HostNetns(String);

impl HostNetns {
    fn new() -> Result<HostNetns, String> {
        // Not `rkt-...`: that prefix is the pods' own namespaces, counted as leftovers.
        let name = format!("benchpar-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run_quiet(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = HostNetns(name);
        run_quiet(Command::new("ip").args(["-n", &netns.0, "link", "set", "lo", "up"]))?;
        Ok(netns)
    }
}

impl Drop for HostNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Bench {
    root: tempfile::TempDir,
    /// Where the data dir is: an ext4 file system, so that rkt mounts overlays as on a real
    /// host (the emulated host's /tmp is an overlay itself, where rkt would copy the images).
    /// Declared after `root` so that it is unmounted after `root` is removed.
    _scratch: ScratchFs,
    data: PathBuf,
    config: PathBuf,
    netns: HostNetns,
    /// crun's `config.json` from `crun spec`, with the shared rootfs and no terminal; each
    /// container gets a bundle of its own with its own args.
    crun_config: serde_json::Value,
}

impl Bench {
    fn set_up() -> Result<Bench, String> {
        let scratch = ScratchFs::new();
        let root = tempfile::Builder::new()
            .prefix("bench-parallel")
            .tempdir_in(scratch.path())
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut bench = Bench {
            data: root.path().join("data"),
            config: root.path().join("etc-rkt"),
            netns: HostNetns::new()?,
            crun_config: serde_json::Value::Null,
            root,
            _scratch: scratch,
        };
        let aci = busybox_aci(bench.root.path(), IMAGE, &["/bin/echo", "hello"]);
        run_quiet(bench.rkt(Net::None).arg("fetch").arg(&aci))
            .map_err(|e| format!("rkt fetch: {e}"))?;

        let rootfs = bench.root.path().join("crun-rootfs");
        busybox_image_root(&rootfs);
        let spec_dir = bench.root.path().join("crun-spec");
        fs::create_dir_all(&spec_dir).map_err(|e| format!("{}: {e}", spec_dir.display()))?;
        run_quiet(Command::new("crun").arg("spec").current_dir(&spec_dir))
            .map_err(|e| format!("crun spec (Debian's crun): {e}"))?;
        let text = fs::read_to_string(spec_dir.join("config.json"))
            .map_err(|e| format!("crun's config.json: {e}"))?;
        let mut config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("crun's config.json: {e}"))?;
        config["process"]["terminal"] = serde_json::Value::Bool(false);
        config["root"]["path"] = serde_json::Value::String(rootfs.display().to_string());
        bench.crun_config = config;
        Ok(bench)
    }

    /// `rkt --dir=... ` (inside the host namespace for the default network).
    fn rkt(&self, net: Net) -> Command {
        let mut command = match net {
            Net::None => Command::new(rkt_binary()),
            Net::Default => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/run/netns/{}", self.netns.0))
                    .arg(rkt_binary());
                command
            }
        };
        command
            .arg(format!("--dir={}", self.data.display()))
            .arg(format!("--local-config={}", self.config.display()))
            .arg("--insecure-options=image");
        command
    }

    /// A pod printing `token`.
    fn rkt_run(&self, net: Net, mode: Mode, token: &str) -> Command {
        let mut command = self.rkt(net);
        command.args([
            "run",
            "--stage1=kvm",
            "--pull-policy=never",
            &format!("--net={}", net.name()),
        ]);
        if mode == Mode::Off {
            command.arg("--warm-start=false");
        }
        command.args([IMAGE, "--exec=/bin/echo", "--", token]);
        command
    }

    /// A container printing `token`, with a bundle of its own (`name` is its id).
    fn crun_run(&self, name: &str, token: &str) -> Result<Command, String> {
        let bundle = self.root.path().join("bundles").join(name);
        fs::create_dir_all(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
        let mut config = self.crun_config.clone();
        config["process"]["args"] = serde_json::json!(["/bin/echo", token]);
        let text = serde_json::to_string(&config).map_err(|e| format!("config.json: {e}"))?;
        fs::write(bundle.join("config.json"), text)
            .map_err(|e| format!("{}: {e}", bundle.display()))?;
        let mut command = Command::new("crun");
        command.arg("run").arg("--bundle").arg(&bundle).arg(name);
        Ok(command)
    }

    /// `rkt gc --grace-period=0s` twice (mark, then sweep) where the pods' networks were made.
    fn gc(&self, net: Net) -> Result<(), String> {
        for _ in 0..2 {
            run_quiet(self.rkt(net).args(["gc", "--grace-period=0s"]))
                .map_err(|e| format!("rkt gc: {e}"))?;
        }
        Ok(())
    }

    fn clear_snapshots(&self) -> Result<(), String> {
        run_quiet(self.rkt(Net::None).args(["snapshot", "clear"]))
            .map(drop)
            .map_err(|e| format!("rkt snapshot clear: {e}"))
    }
}

/// Runs `command` (stdout and stderr to files in `dir`) and checks it exits 0 having printed
/// `token` on a line of its own.
fn run_one(
    mut command: Command,
    token: &str,
    dir: &Path,
    data: Option<&Path>,
) -> Result<(), String> {
    let out_path = dir.join(format!("{token}.out"));
    let err_path = dir.join(format!("{token}.err"));
    let file = |path: &Path| fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            // Before the kill: what the pod was doing, if it is a pod (data/pods/... exists).
            if let Some(data) = data {
                eprintln!("bench-parallel: {token} still running after {LIMIT:?}:");
                for line in what_the_pod_is_doing(data, token).lines() {
                    eprintln!("bench-parallel:   | {line}");
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Short enough not to inflate a round by much, long enough not to load the CPU.
        thread::sleep(Duration::from_millis(10));
    };
    let read = |path: &Path| {
        let mut text = String::new();
        let _ = fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
        text
    };
    let stdout = read(&out_path);
    let stderr = read(&err_path);
    let why = match status {
        None => format!("killed after {LIMIT:?}"),
        Some(status) if !status.success() => format!("exited {status}"),
        Some(_) if !stdout.lines().any(|l| l.trim() == token) => "no output".into(),
        Some(_) => {
            let _ = fs::remove_file(&out_path);
            let _ = fs::remove_file(&err_path);
            return Ok(());
        }
    };
    // The last lines of stderr name the cause (stage1-kvm's one line, crun's message).
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    Err(format!("{token}: {why}; stderr: {tail}"))
}

/// For a pod that overran: its directory (found by `token`, which only its manifest holds),
/// the end of its guest console, and every thread of its stage1 (the PID in the pod's `pid`
/// file) and of the stage1's children (its VMM) with its state and kernel wait channel: enough
/// to tell a guest waiting for an interrupt (vCPU threads in `kvm_vcpu_block`) from a VMM or
/// stage1 stuck on the host. By parentage, not by path: the VMM's root is a jail in a mount
/// namespace of its own.
fn what_the_pod_is_doing(data: &Path, token: &str) -> String {
    let mut out = String::new();
    let pods = data.join("pods/run");
    let Some(pod) = fs::read_dir(&pods).ok().and_then(|dirs| {
        dirs.flatten().map(|d| d.path()).find(|dir| {
            fs::read_to_string(dir.join("pod")).is_ok_and(|manifest| manifest.contains(token))
        })
    }) else {
        return format!("no pod under {} runs {token}", pods.display());
    };
    out.push_str(&format!("pod {}\n", pod.display()));
    if let Ok(console) = fs::read_to_string(pod.join("stage1-kvm/console.log")) {
        let lines: Vec<&str> = console.lines().collect();
        out.push_str("guest console (last 15 lines):\n");
        for line in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(&format!("  {line}\n"));
        }
    }
    let read = |path: PathBuf| fs::read_to_string(path).unwrap_or_default();
    let Ok(stage1) = read(pod.join("pid")).trim().parse::<u32>() else {
        out.push_str("no stage1 PID in the pod yet\n");
        return out;
    };
    // A /proc/PID/stat line: "PID (COMM) STATE PPID ...", COMM possibly with blanks.
    let after_comm = |stat: &str| -> Vec<String> {
        stat.rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let mut pods_processes = vec![stage1];
    for (pid, dir) in e2e::processes() {
        let fields = after_comm(&read(dir.join("stat")));
        if fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(stage1) {
            pods_processes.push(pid);
        }
    }
    for pid in pods_processes {
        let tasks = PathBuf::from(format!("/proc/{pid}/task"));
        for task in fs::read_dir(&tasks).into_iter().flatten().flatten() {
            let fields = after_comm(&read(task.path().join("stat")));
            out.push_str(&format!(
                "process {pid} thread {} {}: state {} wchan {}\n",
                task.file_name().to_string_lossy(),
                read(task.path().join("comm")).trim(),
                fields.first().map_or("?", String::as_str),
                read(task.path().join("wchan")).trim(),
            ));
        }
    }
    out
}

/// Spawns every command at once (threads released together by a barrier); the time from the
/// release to the last exit, and what failed. `data`: the rkt data dir, for a pod that
/// overruns (None for crun).
fn at_once(
    commands: Vec<(Command, String)>,
    dir: &Path,
    data: Option<&Path>,
) -> (f64, Vec<String>) {
    let start = Barrier::new(commands.len() + 1);
    thread::scope(|scope| {
        let handles: Vec<_> = commands
            .into_iter()
            .map(|(command, token)| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    run_one(command, &token, dir, data)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let failures: Vec<String> = handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(result) => result.err(),
                Err(_) => Some("a pod's thread panicked".to_string()),
            })
            .collect();
        (started.elapsed().as_secs_f64(), failures)
    })
}

/// One row of the table: a peer at one N.
struct Row {
    pods: usize,
    label: String,
    walls: Vec<f64>,
    failures: usize,
    leftovers: usize,
}

impl Row {
    fn new(pods: usize, label: String) -> Row {
        Row {
            pods,
            label,
            walls: Vec::new(),
            failures: 0,
            leftovers: 0,
        }
    }

    fn median(&self) -> f64 {
        let mut walls = self.walls.clone();
        if walls.is_empty() {
            return f64::NAN;
        }
        min_median_max(&mut walls).1
    }

    fn pods_per_second(&self) -> f64 {
        self.pods as f64 / self.median()
    }
}

/// Prints `items` under a heading, on stderr as the run goes.
fn report(heading: &str, items: &[String]) {
    if !items.is_empty() {
        eprintln!("bench-parallel:   {heading}:");
        for item in items {
            eprintln!("bench-parallel:     {item}");
        }
    }
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("bench-parallel: {e}");
            std::process::exit(2);
        }
    };
    // The exit status after `run` returned, so that its scratch file system is unmounted and
    // its network namespace removed (process::exit runs no destructors).
    let code = match Bench::set_up() {
        Ok(bench) => run(&bench, &options),
        Err(e) => {
            eprintln!("bench-parallel: set-up: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Every round of every peer, then the table; 0 when nothing failed or was left behind.
fn run(bench: &Bench, options: &Options) -> i32 {
    let outputs = bench.root.path().join("outputs");
    if let Err(e) = fs::create_dir_all(&outputs) {
        eprintln!("bench-parallel: {}: {e}", outputs.display());
        return 1;
    }
    let began = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut crun_rows: Vec<Row> = Vec::new();
    // Whether the cache holds the snapshot for a network's shape (the NIC count is part of
    // the key): a warm round needs it, a cold one removes it.
    let mut warmed = [false, false];
    let mut sequence = 0usize;
    let mut token = |label: &str| {
        sequence += 1;
        format!("bench-{label}-{sequence}")
    };
    for &n in &options.pods {
        let first_row = rows.len();
        for &net in &options.nets {
            for &mode in &options.modes {
                rows.push(Row::new(
                    n,
                    format!("rkt net={} {}", net.name(), mode.name()),
                ));
            }
        }
        let mut crun = Row::new(n, "crun".into());
        for round in 0..options.rounds {
            let mut row = first_row;
            for &net in &options.nets {
                for &mode in &options.modes {
                    let shape = (net == Net::Default) as usize;
                    let mut failures = Vec::new();
                    // Not timed: the cache made ready for the mode.
                    match mode {
                        Mode::Cold => match bench.clear_snapshots() {
                            Ok(()) => warmed = [false, false],
                            Err(e) => failures.push(e),
                        },
                        Mode::Warm if !warmed[shape] => {
                            let t = token("warm-up");
                            let (_, failed) = at_once(
                                vec![(bench.rkt_run(net, mode, &t), t)],
                                &outputs,
                                Some(&bench.data),
                            );
                            failures.extend(failed.into_iter().map(|f| format!("warm-up: {f}")));
                            if let Err(e) = bench.gc(net) {
                                failures.push(e);
                            }
                        }
                        _ => {}
                    }
                    let commands: Vec<(Command, String)> = (0..n)
                        .map(|_| {
                            let t = token(&format!("{}-{}", net.name(), mode.name()));
                            (bench.rkt_run(net, mode, &t), t)
                        })
                        .collect();
                    let (wall, failed) = at_once(commands, &outputs, Some(&bench.data));
                    failures.extend(failed);
                    if mode != Mode::Off {
                        warmed[shape] = true;
                    }
                    if let Err(e) = bench.gc(net) {
                        failures.push(e);
                    }
                    let left = pod_leftovers(
                        &bench.data,
                        (net == Net::Default).then_some(bench.netns.0.as_str()),
                    );
                    eprintln!(
                        "bench-parallel: N={n} round {round} {}: {wall:.2} s, {} failed, {} left",
                        rows[row].label,
                        failures.len(),
                        left.len()
                    );
                    report("failures", &failures);
                    report("left after gc", &left);
                    let r = &mut rows[row];
                    r.walls.push(wall);
                    r.failures += failures.len();
                    r.leftovers += left.len();
                    row += 1;
                }
            }
            let commands: Result<Vec<(Command, String)>, String> = (0..n)
                .map(|i| {
                    let t = token("crun");
                    let name = format!("benchpar-{}-{n}-{round}-{i}", std::process::id());
                    bench.crun_run(&name, &t).map(|c| (c, t))
                })
                .collect();
            let (wall, failures) = match commands {
                Ok(commands) => at_once(commands, &outputs, None),
                Err(e) => (f64::NAN, vec![e]),
            };
            let left: Vec<String> = match run_quiet(Command::new("crun").args(["list", "-q"])) {
                Ok(list) => list
                    .lines()
                    .filter(|l| l.starts_with("benchpar-"))
                    .map(|l| format!("crun container {l}"))
                    .collect(),
                Err(e) => vec![e],
            };
            eprintln!(
                "bench-parallel: N={n} round {round} crun: {wall:.2} s, {} failed, {} left",
                failures.len(),
                left.len()
            );
            report("failures", &failures);
            report("left", &left);
            if wall.is_finite() {
                crun.walls.push(wall);
            }
            crun.failures += failures.len();
            crun.leftovers += left.len();
        }
        crun_rows.push(crun);
    }

    println!(
        "parallel pod benchmark: {} rounds of N pods started at once, {:.0} s in all; \
         round time = release of the N spawns to the last exit",
        options.rounds,
        began.elapsed().as_secs_f64()
    );
    println!(
        "{:>3}  {:<22} {:>24} {:>8} {:>8} {:>9} {:>8} {:>9}",
        "N", "peer", "round s min/median/max", "pods/s", "crun/s", "vs crun", "FAILED", "LEFTOVER"
    );
    let mut bad = 0;
    for row in rows.iter().chain(&crun_rows) {
        let crun = crun_rows
            .iter()
            .find(|c| c.pods == row.pods)
            .map_or(f64::NAN, Row::pods_per_second);
        let mut walls = row.walls.clone();
        let spread = if walls.is_empty() {
            "-".to_string()
        } else {
            let (min, med, max) = min_median_max(&mut walls);
            format!("{min:.2} / {med:.2} / {max:.2}")
        };
        println!(
            "{:>3}  {:<22} {:>24} {:>8.2} {:>8.2} {:>8.3}x {:>8} {:>9}",
            row.pods,
            row.label,
            spread,
            row.pods_per_second(),
            crun,
            row.pods_per_second() / crun,
            row.failures,
            row.leftovers
        );
        bad += row.failures + row.leftovers;
    }
    println!(
        "pods/s = N / median round time; vs crun = pods/s / crun's pods/s at the same N \
         (crun's containers have no network in any row)"
    );
    if bad > 0 {
        println!("FAILURES: {bad} (failed pods and leftovers; details above on stderr)");
        return 1;
    }
    println!("failures: 0");
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in pod: its manifest holds the token, its console has lines, and its `pid`
    /// names a shell (the stage1) whose child sleeps (the VMM).
    #[test]
    fn an_overrunning_pod_is_described_by_its_console_and_its_processes_threads() {
        let root = tempfile::tempdir().unwrap();
        let pod = root
            .path()
            .join("data/pods/run/0f7c5e1a-0000-4000-8000-000000000001");
        fs::create_dir_all(pod.join("stage1-kvm")).unwrap();
        fs::write(
            pod.join("pod"),
            r#"{"apps":[{"exec":["/bin/echo","tok-123"]}]}"#,
        )
        .unwrap();
        let console: String = (0..30).map(|i| format!("console line {i}\n")).collect();
        fs::write(pod.join("stage1-kvm/console.log"), console).unwrap();
        let data = root.path().join("data");
        assert!(what_the_pod_is_doing(&data, "tok-123").ends_with("no stage1 PID in the pod yet\n"));
        let mut stage1 = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        fs::write(pod.join("pid"), format!("{}\n", stage1.id())).unwrap();
        // Until the child sleeps and the shell waits.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = String::new();
        while Instant::now() < deadline {
            text = what_the_pod_is_doing(&data, "tok-123");
            if text.contains("sleep: state S") && text.contains("sh: state S") {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("pkill")
            .args(["-P", &stage1.id().to_string()])
            .status();
        let _ = stage1.kill();
        let _ = stage1.wait();
        assert!(text.contains(&format!("pod {}", pod.display())), "{text}");
        assert!(text.contains("console line 29"), "{text}");
        assert!(
            !text.contains("console line 14\n"),
            "only the last 15 lines: {text}"
        );
        assert!(
            text.contains(&format!("process {} thread", stage1.id())),
            "{text}"
        );
        assert!(text.contains("sleep: state S wchan "), "{text}");
        assert!(what_the_pod_is_doing(&data, "tok-999").starts_with("no pod"));
    }
}
