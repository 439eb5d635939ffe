//! The crash campaign: rounds of concurrent `rkt fetch`, `prepare`, `image
//! render`, `image gc`, `image rm` and `gc` on a few small images, each
//! killed with SIGKILL at a random moment, and after every round the store
//! must be whole: the next `image gc` leaves no temporary file, `image
//! verify --all` (every image re-hashed; index, blobs, trees and pod records
//! agree) and `image list` succeed, every prepared pod still has what it was
//! prepared from, every render destination is complete or absent, and the
//! files outside the store are unchanged.
//!
//! Seeded: the seed is printed, and `RKT_CRASH_SEED=N` replays a run
//! (`RKT_CRASH_ROUNDS=N` changes the number of rounds, 25 by default). No VM
//! is ever started: pods are only prepared.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Env;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// A command still running this long after its round started is killed
/// anyway; kill points are drawn below this.
const KILL_WINDOW: Duration = Duration::from_millis(1500);

/// A recovery or check command that takes longer than this is hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Files per image (1 KiB each).
const FILES: usize = 300;

const NAMES: [&str; 3] = [
    "example.com/crash-base",
    "example.com/crash-other",
    "example.com/crash-app",
];

struct Campaign {
    env: Env,
    /// The ACI files (outside the store), each with its SHA-256: canaries.
    images: Vec<(String, String)>,
    stage1: String,
    rng: StdRng,
    /// Per command: (finished before its kill, started).
    outcomes: std::collections::BTreeMap<String, (usize, usize)>,
}

fn sha256_of(path: &str) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// A small ACI: `manifest`, an executable `/bin/sh` (never run) and
/// `files` little files under `/data/<tag>/` (so copies and renders take a
/// moment, and a kill can land inside one).
fn small_aci(manifest: &str, tag: &str, files: usize) -> Vec<u8> {
    let entry = |kind: tar::EntryType, mode: u32, size: usize| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        header.set_size(size as u64);
        header
    };
    let file = |size: usize| entry(tar::EntryType::Regular, 0o644, size);
    let dir = || entry(tar::EntryType::Directory, 0o755, 0);
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |mut header: tar::Header, path: &str, data: &[u8]| {
        builder.append_data(&mut header, path, data).unwrap();
    };
    append(file(manifest.len()), "manifest", manifest.as_bytes());
    let data = format!("rootfs/data/{tag}/");
    for path in ["rootfs/", "rootfs/bin/", "rootfs/data/", data.as_str()] {
        append(dir(), path, b"");
    }
    let program = b"#!/bin/false\n";
    append(
        entry(tar::EntryType::Regular, 0o755, program.len()),
        "rootfs/bin/sh",
        program,
    );
    let content = vec![b'x'; 1024];
    for n in 0..files {
        append(file(content.len()), &format!("{data}{n}"), &content);
    }
    builder.into_inner().unwrap()
}

fn app_manifest(name: &str, dependency: Option<&str>) -> String {
    let mut manifest = common::linux_amd64_manifest(name);
    manifest["app"] = serde_json::json!({"exec": ["/bin/sh"], "user": "0", "group": "0"});
    if let Some(dependency) = dependency {
        manifest["dependencies"] = serde_json::json!([{ "imageName": dependency }]);
    }
    manifest.to_string()
}

impl Campaign {
    fn new(seed: u64) -> Campaign {
        let env = Env::new();
        let mut images = Vec::new();
        let built = [
            ("base.aci", app_manifest(NAMES[0], None), "base"),
            ("other.aci", app_manifest(NAMES[1], None), "other"),
            // With a dependency: its tree holds two images.
            ("app.aci", app_manifest(NAMES[2], Some(NAMES[0])), "app"),
        ];
        for (file, manifest, tag) in built {
            let path = env.path(file);
            fs::write(&path, small_aci(&manifest, tag, FILES)).unwrap();
            let digest = sha256_of(&path);
            images.push((path, digest));
        }
        let stage1 = env.path("stage1.aci");
        let manifest = common::test_stage1_manifest("example.com/crash-stage1");
        fs::write(&stage1, small_aci(&manifest, "stage1", FILES)).unwrap();
        Campaign {
            env,
            images,
            stage1,
            rng: StdRng::seed_from_u64(seed),
            outcomes: Default::default(),
        }
    }

    fn spawn(&self, args: &[String]) -> Child {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.env
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The commands of one round, with random arguments.
    fn round_commands(&mut self, round: usize) -> Vec<Vec<String>> {
        let insecure = "--insecure-options=image".to_string();
        let file = |rng: &mut StdRng, images: &[(String, String)]| {
            images[rng.gen_range(0..images.len())].0.clone()
        };
        let name = |rng: &mut StdRng| NAMES[rng.gen_range(0..NAMES.len())].to_string();
        let mut commands = Vec::new();
        commands.push(vec![
            insecure.clone(),
            "fetch".into(),
            file(&mut self.rng, &self.images),
        ]);
        for _ in 0..2 {
            let mut prepare = vec![
                insecure.clone(),
                "prepare".into(),
                "--quiet".into(),
                format!("--stage1-path={}", self.stage1),
            ];
            if self.rng.gen_bool(0.5) {
                prepare.push("--no-overlay".into());
            }
            prepare.push(file(&mut self.rng, &self.images));
            commands.push(prepare);
        }
        commands.push(vec![
            "image".into(),
            "render".into(),
            name(&mut self.rng),
            self.render_dest(round).display().to_string(),
        ]);
        commands.push(vec![
            "image".into(),
            "gc".into(),
            "--grace-period=0s".into(),
        ]);
        commands.push(vec!["image".into(), "rm".into(), name(&mut self.rng)]);
        let expire = if self.rng.gen_bool(0.3) { "0s" } else { "24h" };
        commands.push(vec![
            "gc".into(),
            "--grace-period=0s".into(),
            format!("--expire-prepared={expire}"),
        ]);
        commands
    }

    fn render_dest(&self, round: usize) -> PathBuf {
        self.env.work.join(format!("render-{round}"))
    }

    /// Starts every command of the round at once and kills each at its own
    /// random moment (unless it finished first).
    fn run_round(&mut self, round: usize) {
        let commands = self.round_commands(round);
        let start = Instant::now();
        let mut running: Vec<(String, Child, Duration)> = Vec::new();
        for args in &commands {
            let kill_at =
                Duration::from_millis(self.rng.gen_range(0..KILL_WINDOW.as_millis() as u64));
            // "fetch", "prepare", "image gc", ...: the words before the first argument.
            let kind: Vec<&str> = args
                .iter()
                .filter(|arg| !arg.starts_with("--"))
                .take(2)
                .map(String::as_str)
                .filter(|word| word.chars().all(|c| c.is_ascii_lowercase()))
                .collect();
            running.push((kind.join(" "), self.spawn(args), kill_at));
        }
        while !running.is_empty() {
            let elapsed = start.elapsed();
            let mut still = Vec::new();
            for (kind, mut child, kill_at) in running {
                let finished = child.try_wait().unwrap().is_some();
                if !finished && elapsed < kill_at {
                    still.push((kind, child, kill_at));
                    continue;
                }
                if !finished {
                    // SIGKILL: no destructor, no clean-up, as a crash.
                    child.kill().unwrap();
                    child.wait().unwrap();
                }
                let outcome = self.outcomes.entry(kind).or_default();
                outcome.0 += usize::from(finished);
                outcome.1 += 1;
            }
            running = still;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Runs a check command to its end (it must not hang); returns its exit
    /// code and stderr.
    fn check_command(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut child = self
            .env
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                return (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                );
            }
            if start.elapsed() > CHECK_TIMEOUT {
                let _ = child.kill();
                panic!("rkt {args:?} hung for {CHECK_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn check_ok(&self, round: usize, seed: u64, args: &[&str]) {
        let (code, stderr) = self.check_command(args);
        assert_eq!(
            code,
            Some(0),
            "round {round} (seed {seed}): rkt {args:?} failed: {stderr}"
        );
    }

    /// Everything that must hold after a round.
    fn check_store(&self, round: usize, seed: u64) {
        let at = format!("round {round} (seed {seed})");
        // The clean-up: removes nothing any image or pod uses (no image is
        // this old), only what the killed commands stranded.
        self.check_ok(round, seed, &["image", "gc", "--grace-period=87600h"]);
        let tmp: Vec<_> = fs::read_dir(self.env.dir.join("cas/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(tmp.is_empty(), "{at}: left in cas/tmp: {tmp:?}");
        // That one clean-up was complete: a second finds nothing stranded.
        let (code, stderr) = self.check_command(&["image", "gc", "--grace-period=87600h"]);
        assert_eq!(code, Some(0), "{at}: {stderr}");
        assert!(
            stderr.contains(
                "0 image(s) removed; 0 stray tree(s), 0 stray blob(s), 0 temporary file(s)"
            ),
            "{at}: the first clean-up left something: {stderr}"
        );
        self.check_ok(round, seed, &["image", "verify", "--all"]);
        self.check_ok(round, seed, &["image", "list"]);
        self.check_ok(round, seed, &["list"]);

        for pod in common::pod_dirs(&self.env.dir) {
            if pod.starts_with("prepared/") {
                self.check_prepared_pod(&self.env.dir.join("pods").join(&pod), &at);
            }
        }
        let dest = self.render_dest(round);
        if dest.exists() {
            assert!(
                dest.join("rootfs/bin/sh").is_file() && dest.join("manifest").is_file(),
                "{at}: {} is half-written",
                dest.display()
            );
        }
        for (path, digest) in &self.images {
            assert_eq!(&sha256_of(path), digest, "{at}: {path} changed");
        }
    }

    /// A prepared pod is complete: its manifest, and either its copied
    /// rootfs or (overlay) the store trees it will mount.
    fn check_prepared_pod(&self, pod: &Path, at: &str) {
        assert!(
            pod.join("pod").is_file(),
            "{at}: {} has no manifest",
            pod.display()
        );
        let tree = |id_file: &Path| {
            let id = fs::read_to_string(id_file).unwrap();
            let tree = self.env.dir.join("cas/tree").join(id.trim());
            assert!(
                tree.join("rootfs/bin/sh").is_file(),
                "{at}: {} uses tree {id}, which is gone",
                pod.display()
            );
        };
        tree(&pod.join("stage1TreeStoreID"));
        let apps: Vec<_> = fs::read_dir(pod.join("appsinfo"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!apps.is_empty(), "{at}: {} has no apps", pod.display());
        for app in apps {
            if pod.join("overlay-prepared").exists() {
                tree(&pod.join("appsinfo").join(&app).join("treeStoreID"));
            } else {
                let program = pod
                    .join("stage1/rootfs/opt/stage2")
                    .join(&app)
                    .join("rootfs/bin/sh");
                assert!(
                    program.is_file(),
                    "{at}: {} is incomplete",
                    program.display()
                );
            }
        }
    }

    /// Undoes what a killed `prepare` may leave mounted (its overlay support
    /// check mounts in a scratch directory under --dir).
    fn unmount_leftovers(&self) {
        let dir = fs::canonicalize(&self.env.dir).unwrap_or_else(|_| self.env.dir.clone());
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| Path::new(point).starts_with(&dir))
            .collect();
        points.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn kill_9_at_random_points_never_damages_the_store() {
    let seed = std::env::var("RKT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let rounds: usize = std::env::var("RKT_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    eprintln!("store_crash: seed {seed}, {rounds} rounds (replay with RKT_CRASH_SEED={seed})");
    let mut campaign = Campaign::new(seed);
    // A store with every image and a pod in it before the first round.
    let stage1 = format!("--stage1-path={}", campaign.stage1);
    let files: Vec<String> = campaign.images.iter().map(|(f, _)| f.clone()).collect();
    for file in &files {
        campaign
            .env
            .ok(&["--insecure-options=image", "fetch", file]);
    }
    campaign
        .env
        .ok(&["--insecure-options=image", "prepare", &stage1, &files[2]]);

    for round in 0..rounds {
        campaign.run_round(round);
        campaign.check_store(round, seed);
    }
    campaign.unmount_leftovers();
    let (mut finished, mut started) = (0, 0);
    for (kind, (done, of)) in &campaign.outcomes {
        eprintln!("store_crash: {kind}: {done} of {of} finished before their kill");
        finished += done;
        started += of;
    }
    // The campaign means something only if it killed commands mid-way and
    // let others finish.
    assert!(
        finished > 0 && finished < started,
        "{finished} of {started} finished"
    );
}
