//! Real-image benchmark (issue 16): the nginx image of `tests/images/build` (Debian bookworm
//! with nginx-light, one layer of about 45 MiB gzipped, about 130 MiB unpacked), side by side
//! with the tools a Docker/OCI user would use for the same job, in one run. Not a test: it
//! reports; it fails (exit 1) only when a run fails or something is left behind.
//!
//! 1. **Fetch and first render** from Debian's `docker-registry` on loopback (the image pushed
//!    once with skopeo): `rkt --insecure-options=image,http fetch docker://...` into an empty
//!    `--dir`, which applies the layers into the store's tree (the first render: `prepare`
//!    only reuses that tree, docs/images.md "Layers as Docker applies them"), then
//!    `rkt image render` of it into a directory (a copy of the cached tree, the counterpart
//!    of a bundle on disk); against `skopeo copy docker://... oci:DIR:TAG` and
//!    `umoci unpack --image DIR:TAG BUNDLE`. Each run on a fresh ext4 file system; the two
//!    sides alternate which goes first.
//! 2. **`rkt run` to nginx's first 200**: `rkt run --net=default --port=80-tcp:8080 IMAGE`
//!    (the image fetched from the registry beforehand and found in the store by its name;
//!    this part runs first, the registry idling on loopback meanwhile), warm (restored
//!    from the snapshot a first, uncounted run made) and cold (`--warm-start=false`), from
//!    spawning `rkt run` to the first HTTP 200 on the test host's address, port 8080; against
//!    `crun run` of the same rootfs (umoci's bundle: nginx's Cmd, Docker's default capability
//!    set so that nginx can switch to www-data, no terminal) in a network namespace of its own
//!    that the bench attaches with the same CNI plugins and configuration as rkt's `default`
//!    network (ptp + host-local on 172.16.28.0/24 with ipMasq, portmap chained with
//!    `snat: true`, called as the kvm stage1 calls them: `CNI_*` environment, configuration
//!    on stdin), timed from creating that namespace (namespace, CNI ADD, crun) to the first
//!    200 on the same forwarded port. Everything runs in a network namespace of the bench's
//!    own that plays the host (`e2e::pod_net::TestHost`): the pods' and the container's
//!    host-side links, the iptables rules and the HTTP client are there, and no traffic
//!    leaves it. After each run: `rkt stop` + `rkt gc` (twice), or `crun kill`/`delete` +
//!    CNI DEL + the namespace removed; then `e2e::pod_leftovers` must find nothing.
//!
//! The HTTP client polls with a fresh connection every 10 ms, each connect given 200 ms: a
//! SYN that reaches a pod before its guest is up is dropped, and waiting for the kernel's
//! retransmission (1 s) would add up to a second to rkt's times; this caps that at 200 ms.
//!
//! Usage: bench-images [--runs N] (default 5; `tools/bench-images` runs it in the emulated KVM
//! host, where absolute times are inflated by the emulation and only the ratios mean much).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use e2e::direct_cni::{CniAttachment, DirectCni, PortMapping};
use e2e::pod_net::{TestHost, HOST_IP};
use e2e::registry::{corpus_image, LocalRegistry};
use e2e::{min_median_max, pod_leftovers, rkt_binary, run_quiet, ScratchFs};

/// Where the bench pushes the image in the registry.
const NAME_TAG: &str = "bench/nginx:bookworm";
/// The host port `--port` and portmap forward to nginx's port 80.
const HOST_PORT: u16 = 8080;
/// One fetch, unpack or render may take this long (under emulation) before the bench gives up.
const STEP_LIMIT: Duration = Duration::from_secs(900);
/// From starting a pod or container to its first 200 (boot included, under emulation).
const UP_LIMIT: Duration = Duration::from_secs(300);
/// From `rkt stop` or `crun kill` to the process having exited.
const STOP_LIMIT: Duration = Duration::from_secs(120);
/// Each connection attempt of the poller (see the module comment).
const CONNECT_LIMIT: Duration = Duration::from_millis(200);
/// Docker's default capability set: what a `docker run` of this image would have (nginx's
/// master process needs CAP_SETUID/CAP_SETGID to start its workers as www-data; umoci's
/// config has only three capabilities).
const DOCKER_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// One run of part 1, seconds.
#[derive(Clone, Copy, Default)]
struct FetchSample {
    rkt_fetch: f64,
    rkt_render: f64,
    skopeo: f64,
    umoci: f64,
}

/// One run of part 2, seconds.
#[derive(Clone, Copy, Default)]
struct UpSample {
    /// From start to the first 200.
    to_200: f64,
    /// crun only: the part of `to_200` spent making the namespace and in CNI ADD.
    network: f64,
}

/// Runs `command` with its output in `log`, within `limit`; its time in seconds.
fn timed(command: &mut Command, log: &Path, limit: Duration) -> Result<f64, String> {
    let started = Instant::now();
    let mut child = spawn_logged(command, log)?;
    let status = wait_within(&mut child, limit);
    let elapsed = started.elapsed().as_secs_f64();
    match status {
        Some(status) if status.success() => Ok(elapsed),
        Some(status) => Err(format!("{command:?}: {status}\n{}", tail(log))),
        None => Err(format!(
            "{command:?} did not finish within {limit:?}\n{}",
            tail(log)
        )),
    }
}

fn spawn_logged(command: &mut Command, log: &Path) -> Result<Child, String> {
    let out = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))
}

/// Waits for `child` up to `limit`; None (and the child killed) when it did not exit in time.
fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < limit => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(25);
    format!("--- {}:\n{}", log.display(), lines[start..].join("\n"))
}

// ---- Part 1: fetch and first render ----

/// One run of part 1 on a fresh file system; `rkt_first` says which side goes first.
fn fetch_run(reference: &str, rkt_first: bool) -> Result<FetchSample, String> {
    let scratch = ScratchFs::new();
    let dir = scratch.path();
    let data = dir.join("rkt-data");
    let rkt = |args: &[&str]| {
        let mut command = Command::new(rkt_binary());
        command
            .arg(format!("--dir={}", data.display()))
            .arg("--insecure-options=image,http")
            .args(args);
        command
    };
    let render = dir.join("rkt-render");
    let layout = format!("{}:bookworm", dir.join("oci").display());
    let bundle = dir.join("bundle");
    let mut sample = FetchSample::default();
    let rkt_side = |sample: &mut FetchSample| -> Result<(), String> {
        sample.rkt_fetch = timed(
            &mut rkt(&["fetch", &format!("docker://{reference}")]),
            &dir.join("rkt-fetch.log"),
            STEP_LIMIT,
        )?;
        sample.rkt_render = timed(
            &mut rkt(&["image", "render", reference, &render.display().to_string()]),
            &dir.join("rkt-render.log"),
            STEP_LIMIT,
        )?;
        Ok(())
    };
    let peer_side = |sample: &mut FetchSample| -> Result<(), String> {
        sample.skopeo = timed(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{layout}")),
            &dir.join("skopeo.log"),
            STEP_LIMIT,
        )?;
        sample.umoci = timed(
            Command::new("umoci")
                .args(["unpack", "--image", &layout])
                .arg(&bundle),
            &dir.join("umoci.log"),
            STEP_LIMIT,
        )?;
        Ok(())
    };
    if rkt_first {
        rkt_side(&mut sample)?;
        peer_side(&mut sample)?;
    } else {
        peer_side(&mut sample)?;
        rkt_side(&mut sample)?;
    }
    for root in [render.join("rootfs"), bundle.join("rootfs")] {
        let nginx = root.join("usr/sbin/nginx");
        if !nginx.is_file() {
            return Err(format!("{} is missing after the render", nginx.display()));
        }
    }
    let left = pod_leftovers(&data, None);
    if !left.is_empty() {
        return Err(format!("fetch run left behind: {left:?}"));
    }
    Ok(sample)
}

// ---- Part 2: start to first 200 ----

struct PodBench {
    host: TestHost,
    _scratch: ScratchFs,
    data: PathBuf,
    config: PathBuf,
    /// umoci's bundle of the image, its config adjusted for crun (see the module comment).
    bundle: PathBuf,
    /// The crun container's network namespace, made and removed by every crun run.
    crun_netns: String,
    logs: PathBuf,
    /// The image's name in rkt's store (the registry reference).
    reference: String,
}

impl PodBench {
    /// The store holds the image (fetched from the registry), and the crun bundle is unpacked
    /// from the same registry; the test host is made.
    fn new(reference: &str) -> Result<PodBench, String> {
        let scratch = ScratchFs::new();
        let root = scratch.path().to_path_buf();
        let bench = PodBench {
            host: TestHost::new("bench-images"),
            data: root.join("rkt-data"),
            config: root.join("etc-rkt"),
            bundle: root.join("bundle"),
            crun_netns: format!("bench-images-crun-{}", std::process::id()),
            logs: root.join("logs"),
            reference: reference.to_string(),
            _scratch: scratch,
        };
        for dir in [&bench.config, &bench.logs] {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        timed(
            Command::new(rkt_binary())
                .arg(format!("--dir={}", bench.data.display()))
                .arg("--insecure-options=image,http")
                .arg("fetch")
                .arg(format!("docker://{reference}")),
            &bench.logs.join("fetch.log"),
            STEP_LIMIT,
        )?;
        let layout = format!("{}:bookworm", root.join("oci").display());
        timed(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{layout}")),
            &bench.logs.join("skopeo.log"),
            STEP_LIMIT,
        )?;
        timed(
            Command::new("umoci")
                .args(["unpack", "--image", &layout])
                .arg(&bench.bundle),
            &bench.logs.join("umoci.log"),
            STEP_LIMIT,
        )?;
        bench.adjust_crun_config()?;
        Ok(bench)
    }

    /// umoci's config.json with no terminal, Docker's capabilities and the namespace the bench
    /// attaches.
    fn adjust_crun_config(&self) -> Result<(), String> {
        let path = self.bundle.join("config.json");
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config["process"]["terminal"] = serde_json::Value::Bool(false);
        for set in [
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ] {
            config["process"]["capabilities"][set] = serde_json::json!(DOCKER_CAPABILITIES);
        }
        let netns = self.cni().netns_path().display().to_string();
        let namespaces = config["linux"]["namespaces"]
            .as_array_mut()
            .ok_or("umoci's config.json has no linux.namespaces")?;
        let network = namespaces
            .iter_mut()
            .find(|ns| ns["type"] == "network")
            .ok_or("umoci's config.json has no network namespace")?;
        network["path"] = serde_json::Value::String(netns);
        let text =
            serde_json::to_string_pretty(&config).map_err(|e| format!("config.json: {e}"))?;
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `rkt --dir --local-config --insecure-options=image ARGS` in the test host.
    fn rkt(&self, args: &[&str]) -> Command {
        let mut command = self.host.command(rkt_binary());
        command
            .arg(format!("--dir={}", self.data.display()))
            .arg(format!("--local-config={}", self.config.display()))
            .arg("--insecure-options=image")
            .args(args);
        command
    }

    /// `rkt run` of the image, forwarding port 8080, until the first 200; then stopped and
    /// gc'd whatever happened.
    fn rkt_up(&self, label: &str, warm: bool) -> Result<UpSample, String> {
        let uuid_file = self.logs.join(format!("{label}.uuid"));
        let _ = fs::remove_file(&uuid_file);
        let log = self.logs.join(format!("{label}.log"));
        let mut args = vec![
            "run".to_string(),
            "--net=default".to_string(),
            format!("--port=80-tcp:{HOST_PORT}"),
            format!("--uuid-file-save={}", uuid_file.display()),
        ];
        if !warm {
            args.push("--warm-start=false".to_string());
        }
        args.push(self.reference.clone());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.rkt(&refs);
        let started = Instant::now();
        let mut child = spawn_logged(&mut command, &log)?;
        let up = first_200(&self.host, started, &mut child, &log);
        let stopped = self.rkt_stop(&uuid_file, &mut child, &log);
        let to_200 = up?;
        stopped?;
        Ok(UpSample {
            to_200,
            network: 0.0,
        })
    }

    /// `rkt stop` of the pod (when it got so far as to have a UUID), waits for `rkt run` to
    /// end, then `rkt gc --grace-period=0s` twice (mark, sweep).
    fn rkt_stop(&self, uuid_file: &Path, child: &mut Child, log: &Path) -> Result<(), String> {
        let mut problems = Vec::new();
        match fs::read_to_string(uuid_file) {
            Ok(uuid) if uuid.trim().len() == 36 => {
                if let Err(e) = run_quiet(&mut self.rkt(&["stop", uuid.trim()])) {
                    problems.push(e);
                }
            }
            _ => problems.push(format!("no pod UUID in {}", uuid_file.display())),
        }
        if wait_within(child, STOP_LIMIT).is_none() {
            problems.push(format!(
                "rkt run did not end within {STOP_LIMIT:?} of rkt stop (killed)\n{}",
                tail(log)
            ));
        }
        for _ in 0..2 {
            if let Err(e) = run_quiet(&mut self.rkt(&["gc", "--grace-period=0s"])) {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// A namespace attached with ptp + portmap as rkt's default network, `crun run` of the
    /// bundle in it, until the first 200; then everything undone whatever happened.
    fn crun_up(&self, label: &str) -> Result<UpSample, String> {
        let name = format!("bench-images-{}-{label}", std::process::id());
        let log = self.logs.join(format!("{label}.log"));
        let started = Instant::now();
        let mut attached = CniAttachment::default();
        let mut child = None;
        let up = (|| -> Result<UpSample, String> {
            let port = PortMapping {
                host_port: HOST_PORT,
                container_port: 80,
            };
            self.cni().attach(&name, &[port], &mut attached)?;
            let network = started.elapsed().as_secs_f64();
            let running = child.insert(spawn_logged(
                Command::new("crun")
                    .args(["run", "--bundle"])
                    .arg(&self.bundle)
                    .arg(&name),
                &log,
            )?);
            let to_200 = first_200(&self.host, started, running, &log)?;
            Ok(UpSample { to_200, network })
        })();
        let undone = self.crun_undo(&name, child, attached, &log);
        let sample = up?;
        undone?;
        Ok(sample)
    }

    /// `crun kill` (TERM: nginx's fast shutdown), wait, `crun delete --force`, CNI DEL of
    /// portmap then ptp, the namespace removed: each step whatever the others did.
    fn crun_undo(
        &self,
        name: &str,
        child: Option<Child>,
        attached: CniAttachment,
        log: &Path,
    ) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(mut child) = child {
            if child.try_wait().ok().flatten().is_none() {
                if let Err(e) = run_quiet(Command::new("crun").args(["kill", name, "TERM"])) {
                    problems.push(e);
                }
                if wait_within(&mut child, STOP_LIMIT).is_none() {
                    problems.push(format!(
                        "crun run did not end within {STOP_LIMIT:?} of crun kill (killed)\n{}",
                        tail(log)
                    ));
                }
            }
            // `crun run` deletes its container when it ends; this is for one that did not.
            let _ = Command::new("crun")
                .args(["delete", "--force", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Err(e) = self.cni().undo(name, attached) {
            problems.push(e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The crun container's namespace, attached by calling the CNI plugins in the test host.
    fn cni(&self) -> DirectCni<'_> {
        DirectCni::new(&self.crun_netns, Some(&self.host))
    }

    /// What the last run left: `e2e::pod_leftovers` (pods, mounts, engine and plugin
    /// processes, pod namespaces, leases, host-side links and CNI rules in the test host),
    /// plus crun's containers of this bench and its namespace.
    fn leftovers(&self) -> Vec<String> {
        let mut left = pod_leftovers(&self.data, Some(self.host.name()));
        left.extend(crun_leftovers());
        left.extend(self.cni().leftover());
        left
    }
}

/// crun containers of this bench (`crun list`).
fn crun_leftovers() -> Vec<String> {
    let prefix = format!("bench-images-{}-", std::process::id());
    match run_quiet(Command::new("crun").arg("list")) {
        Ok(list) => list
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| format!("crun container {l}"))
            .collect(),
        Err(e) => vec![format!("cannot list crun's containers: {e}")],
    }
}

/// Polls `http://HOST_IP:8080/` from inside the test host until it answers 200 (seconds since
/// `started`), or `child` (what serves it) ends, or `UP_LIMIT` passes.
fn first_200(
    host: &TestHost,
    started: Instant,
    child: &mut Child,
    log: &Path,
) -> Result<f64, String> {
    let ns = fs::File::open(host.path()).map_err(|e| format!("the test host: {e}"))?;
    let give_up = Arc::new(AtomicBool::new(false));
    let stop = give_up.clone();
    let poller = thread::spawn(move || -> Option<f64> {
        // SAFETY: setns only moves this thread; `ns` is an open namespace file.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let addr: SocketAddr = format!("{HOST_IP}:{HOST_PORT}").parse().ok()?;
        while !stop.load(Ordering::Relaxed) {
            if answers_200(&addr) {
                return Some(started.elapsed().as_secs_f64());
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    });
    loop {
        if poller.is_finished() {
            return poller
                .join()
                .ok()
                .flatten()
                .ok_or_else(|| "the HTTP poller could not enter the test host".to_string());
        }
        let ended = child.try_wait().ok().flatten();
        if ended.is_some() || started.elapsed() > UP_LIMIT {
            give_up.store(true, Ordering::Relaxed);
            let _ = poller.join();
            return Err(match ended {
                Some(status) => format!("ended ({status}) before answering 200\n{}", tail(log)),
                None => format!("no 200 within {UP_LIMIT:?}\n{}", tail(log)),
            });
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// One HTTP/1.0 GET of `/` at `addr`: whether it answered 200.
fn answers_200(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, CONNECT_LIMIT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .next()
        .is_some_and(|status| status.starts_with("HTTP/1.") && status.contains(" 200 "))
}

// ---- The run and the report ----

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut values = values.to_vec();
    min_median_max(&mut values)
}

fn row(label: &str, values: &[f64], reference: Option<f64>) {
    if values.is_empty() {
        println!("{label:<44} {:>27}", "(no samples)");
        return;
    }
    let (min, med, max) = stats(values);
    let ratio = reference
        .map(|r| format!("{:>9.2}x", med / r))
        .unwrap_or_default();
    println!(
        "{label:<44} {:>27} {ratio}",
        format!("{min:.3} / {med:.3} / {max:.3}")
    );
}

/// Everything collected, printed whether or not every run went through.
#[derive(Default)]
struct Results {
    fetch: Vec<FetchSample>,
    first_rkt_run: Option<f64>,
    warm: Vec<UpSample>,
    cold: Vec<UpSample>,
    crun: Vec<UpSample>,
    leftovers: Vec<String>,
}

impl Results {
    fn print(&self, runs: usize) {
        println!(
            "images benchmark: tests/images/build's nginx (Debian bookworm, nginx-light), {runs} runs each; times in seconds"
        );
        println!("\n1. fetch + first render from a local docker-registry (fresh ext4 per run, sides alternate)");
        println!("{:<44} {:>27} {:>10}", "", "min / median / max", "/peer");
        let get = |f: fn(&FetchSample) -> f64| self.fetch.iter().map(f).collect::<Vec<f64>>();
        let peer = get(|s| s.skopeo + s.umoci);
        let peer_median = (!peer.is_empty()).then(|| stats(&peer).1);
        row(
            "rkt fetch docker:// (layers applied)",
            &get(|s| s.rkt_fetch),
            peer_median,
        );
        row(
            "rkt image render (tree copied out)",
            &get(|s| s.rkt_render),
            None,
        );
        row(
            "rkt fetch + image render",
            &get(|s| s.rkt_fetch + s.rkt_render),
            peer_median,
        );
        row("skopeo copy docker:// oci:", &get(|s| s.skopeo), None);
        row("umoci unpack", &get(|s| s.umoci), None);
        row("skopeo copy + umoci unpack (peer)", &peer, peer_median);
        println!(
            "ratios: median / the peer's median (skopeo copy + umoci unpack); rkt fetch alone is\n\
             what rkt run needs (prepare reuses the store's tree), image render adds a copy of it"
        );

        println!("\n2. start to nginx's first 200 on {HOST_IP}:{HOST_PORT} (--port / portmap), in the bench's test-host namespace");
        if let Some(first) = self.first_rkt_run {
            println!(
                "(first rkt run, which made the warm-start snapshot, not counted: {first:.3} s)"
            );
        }
        println!("{:<44} {:>27} {:>10}", "", "min / median / max", "/crun");
        let up = |samples: &[UpSample]| samples.iter().map(|s| s.to_200).collect::<Vec<f64>>();
        let crun = up(&self.crun);
        let crun_median = (!crun.is_empty()).then(|| stats(&crun).1);
        row(
            "rkt run --net=default (kvm, warm)",
            &up(&self.warm),
            crun_median,
        );
        row(
            "rkt run --net=default (kvm, cold)",
            &up(&self.cold),
            crun_median,
        );
        row("crun run + netns + CNI ptp/portmap", &crun, crun_median);
        row(
            "  of which netns + CNI ADD",
            &self.crun.iter().map(|s| s.network).collect::<Vec<f64>>(),
            None,
        );
        if let (Some(crun), false, false) =
            (crun_median, self.warm.is_empty(), self.cold.is_empty())
        {
            println!(
                "ratios: warm rkt / crun = {:.2}, cold rkt / crun = {:.2} (medians)",
                stats(&up(&self.warm)).1 / crun,
                stats(&up(&self.cold)).1 / crun
            );
        }
        println!("\nleftovers after the runs: {}", self.leftovers.len());
        for item in &self.leftovers {
            println!("  {item}");
        }
    }
}

fn bench(runs: usize, results: &mut Results) -> Result<(), String> {
    let layout = corpus_image("nginx");
    let registry = LocalRegistry::start();
    let reference = registry.push(&format!("oci:{layout}"), NAME_TAG);
    eprintln!("bench-images: {layout} pushed as {reference}");

    // The pods first (they find the image in the store by its name; the registry idles
    // meanwhile), then the fetches; the pods' file system and test host are gone by then.
    let pods = PodBench::new(&reference)?;
    let result = pod_runs(&pods, runs, results);
    results.leftovers.extend(pods.leftovers());
    drop(pods);
    result?;

    for run in 0..runs {
        let sample =
            fetch_run(&reference, run % 2 == 0).map_err(|e| format!("fetch run {run}: {e}"))?;
        eprintln!(
            "bench-images: fetch run {run}: rkt fetch {:.3} s + render {:.3} s; skopeo {:.3} s + umoci {:.3} s",
            sample.rkt_fetch, sample.rkt_render, sample.skopeo, sample.umoci
        );
        results.fetch.push(sample);
    }
    drop(registry);
    Ok(())
}

fn pod_runs(pods: &PodBench, runs: usize, results: &mut Results) -> Result<(), String> {
    // The leftovers themselves are listed by the caller, which looks again after a failure.
    let check = |what: &str| {
        let left = pods.leftovers();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{what} left {} things behind", left.len()))
        }
    };
    let first = pods
        .rkt_up("first", true)
        .map_err(|e| format!("first rkt run: {e}"))?;
    eprintln!(
        "bench-images: first rkt run (makes the snapshot): {:.3} s",
        first.to_200
    );
    results.first_rkt_run = Some(first.to_200);
    check("the first rkt run")?;
    for run in 0..runs {
        // Interleaved, so that drift in the machine's load hits every peer alike.
        let warm = pods
            .rkt_up(&format!("warm-{run}"), true)
            .map_err(|e| format!("warm rkt run, run {run}: {e}"))?;
        results.warm.push(warm);
        check("a warm rkt run")?;
        let cold = pods
            .rkt_up(&format!("cold-{run}"), false)
            .map_err(|e| format!("cold rkt run, run {run}: {e}"))?;
        results.cold.push(cold);
        check("a cold rkt run")?;
        let crun = pods
            .crun_up(&format!("crun-{run}"))
            .map_err(|e| format!("crun run, run {run}: {e}"))?;
        results.crun.push(crun);
        check("a crun run")?;
        eprintln!(
            "bench-images: run {run}: first 200: rkt warm {:.3} s, cold {:.3} s, crun {:.3} s (netns + CNI {:.3} s)",
            warm.to_200, cold.to_200, crun.to_200, crun.network
        );
    }
    Ok(())
}

/// docker-registry processes still running (the bench's registry is stopped by then).
fn registry_leftovers() -> Vec<String> {
    e2e::processes_named(&["docker-registry"])
        .into_iter()
        .map(|process| format!("process {process}"))
        .collect()
}

fn main() {
    let mut runs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--runs", Some(n)) if n.parse::<usize>().is_ok_and(|n| n >= 1) => {
                runs = n.parse().unwrap_or(runs)
            }
            _ => {
                eprintln!("bench-images: usage: bench-images [--runs N], N at least 1");
                std::process::exit(2);
            }
        }
    }
    let mut results = Results::default();
    let outcome = bench(runs, &mut results);
    results.leftovers.extend(registry_leftovers());
    results.print(runs);
    let mut failed = false;
    if let Err(e) = outcome {
        eprintln!("bench-images: {e}");
        failed = true;
    }
    if !results.leftovers.is_empty() {
        eprintln!(
            "bench-images: {} leftovers (listed above)",
            results.leftovers.len()
        );
        failed = true;
    }
    if failed {
        std::process::exit(1);
    }
}
