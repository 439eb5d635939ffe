//! Pods in parallel (issue 15): four `rkt run`s started at once, in rounds, through the real
//! `rkt` binary and the installed kvm stage1, on a busybox ACI built here, one data directory
//! (on ext4, so images are overlay-mounted) shared by every pod as on a real host:
//! 1. `--net=none`, the warm-start cache empty: one pod makes the snapshot, the other three
//!    wait for it (the cache's lock) and restore it;
//! 2. `--net=none` again, warm: all four restore the snapshot round 1 made;
//! 3. `--net=default` (CNI ptp, in a network namespace the test made to play the host), its
//!    own snapshot shape (one NIC): four pods, four different addresses;
//! 4. `--net=none --warm-start=false`: four guest kernels booting at once.
//!
//! Every pod prints its own token and exits with its own status; `rkt run` must exit with that
//! status and print that token and no other pod's. After every round `rkt gc` must leave
//! nothing: no pod directory, mount, process, network namespace (taps live there), veth,
//! lease, iptables rule, socket directory or cgroup. Each `rkt run` is bounded by POD_LIMIT,
//! so a hang fails the test. With `--nocapture` it prints each round's and pod's wall time.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use e2e::{
    assert_all_cleaned, busybox_aci, pod_consoles, pod_leftovers, run_with_limit, uuid_from,
    Finished, RktWorld, ScratchFs, POD_LIMIT,
};

const IMAGE: &str = "example.com/busybox";
/// Pods per round.
const PODS: usize = 4;
/// Each pod's exit status, by index: distinct, so a status reaching the wrong `rkt run` shows;
/// one zero, because success must come through as well.
const STATUSES: [i32; PODS] = [0, 7, 42, 113];

/// A network namespace playing the host for the `--net=default` round: the pods' veths, routes
/// and masquerade rules go there, not into the machine's own namespace. Removed on drop.
struct TestHost(String);

impl TestHost {
    fn new() -> TestHost {
        // Not `rkt-...`: that prefix is the pods' own namespaces, which must all be gone.
        let name = format!("parpods-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let host = TestHost(name);
        for args in [
            vec!["netns", "add", host.0.as_str()],
            vec!["-n", host.0.as_str(), "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        }
        host
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `rkt --dir=... ARGS` as the world runs it, inside `host`'s namespace when given.
fn rkt_command(world: &RktWorld, host: Option<&TestHost>, args: &[&str]) -> Command {
    let Some(host) = host else {
        return world.command(args);
    };
    world.command_in_netns(&host.0, args)
}

/// The line pod `index` of round `round` prints, and nothing else does.
fn token(round: usize, index: usize) -> String {
    format!("token-r{round}-p{index}")
}

/// One pod's `rkt run`: its output, UUID and wall time from spawn to exit.
struct Pod {
    run: Finished,
    uuid: String,
    seconds: f64,
}

/// Starts PODS `rkt run --debug FLAGS ACI` at once (threads released together by a barrier),
/// pod i running `echo TOKEN; EXTRA; exit STATUSES[i]`; returns them in index order and the
/// round's wall time.
fn run_round(
    world: &RktWorld,
    aci: &str,
    host: Option<&TestHost>,
    round: usize,
    flags: &[&str],
    extra: &str,
) -> (Vec<Pod>, f64) {
    let start = Barrier::new(PODS + 1);
    let mut started = Instant::now();
    let pods = thread::scope(|scope| {
        let handles: Vec<_> = (0..PODS)
            .map(|index| {
                let uuid_file = world
                    .root
                    .path()
                    .join(format!("round{round}-pod{index}.uuid"));
                let save = format!("--uuid-file-save={}", uuid_file.display());
                let script = format!(
                    "echo {}; {extra} exit {}",
                    token(round, index),
                    STATUSES[index]
                );
                let mut args = vec!["run", "--debug", save.as_str()];
                args.extend_from_slice(flags);
                args.extend_from_slice(&[aci, "--exec=/bin/sh", "--", "-c", script.as_str()]);
                let mut command = rkt_command(world, host, &args);
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    let run = run_with_limit(&mut command, POD_LIMIT);
                    let seconds = began.elapsed().as_secs_f64();
                    let uuid = if uuid_file.exists() {
                        uuid_from(&uuid_file)
                    } else {
                        String::new()
                    };
                    Pod { run, uuid, seconds }
                })
            })
            .collect();
        start.wait();
        started = Instant::now();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Vec<Pod>>()
    });
    let wall = started.elapsed().as_secs_f64();
    let each: Vec<String> = pods.iter().map(|p| format!("{:.1}", p.seconds)).collect();
    println!(
        "round {round} ({flags:?}): {PODS} pods in {wall:.1} s; each pod {} s",
        each.join(" / ")
    );
    (pods, wall)
}

/// Each pod's status and output are its own.
fn assert_own_results(world: &RktWorld, round: usize, pods: &[Pod]) {
    for (index, pod) in pods.iter().enumerate() {
        let run = &pod.run;
        assert_eq!(
            run.code(),
            STATUSES[index],
            "round {round}, pod {index}: {run}\n{}",
            pod_consoles(world)
        );
        let tokens: Vec<&str> = run
            .stdout
            .lines()
            .map(str::trim)
            // Lines that are tokens: with --debug, guest-init's console (which quotes the
            // app's command line, token included) comes on stdout too.
            .filter(|l| l.starts_with("token-"))
            .collect();
        assert_eq!(
            tokens,
            [token(round, index)],
            "round {round}, pod {index}: not its own output: {run}"
        );
        for other in (0..PODS).filter(|&other| other != index) {
            assert!(
                !run.stdout.contains(&token(round, other)),
                "round {round}, pod {index} has pod {other}'s output: {run}"
            );
        }
        assert_eq!(pod.uuid.len(), 36, "round {round}, pod {index}: {run}");
    }
    let mut uuids: Vec<&str> = pods.iter().map(|p| p.uuid.as_str()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), PODS, "UUIDs repeated: {uuids:?}");
}

/// The snapshot ids the pods' `--debug` lines say they restored, and how many pods made one;
/// every pod must have restored one, and none fallen back to a cold boot.
fn warm_starts(round: usize, pods: &[Pod]) -> (Vec<String>, usize) {
    let mut restored = Vec::new();
    let mut made = 0;
    for (index, pod) in pods.iter().enumerate() {
        let err = &pod.run.stderr;
        assert!(
            !err.contains("failed to restore") && !err.contains("booting cold"),
            "round {round}, pod {index} fell back to a cold boot: {}",
            pod.run
        );
        made += err
            .lines()
            .filter(|l| l.contains("warm start: made snapshot"))
            .count();
        let id = err
            .lines()
            .find_map(|l| l.split("warm start: restoring snapshot ").nth(1))
            .unwrap_or_else(|| panic!("round {round}, pod {index} did not restore: {}", pod.run));
        restored.push(id.trim().to_string());
    }
    (restored, made)
}

fn snapshot_ids(world: &RktWorld) -> Vec<String> {
    world
        .ok(&["snapshot", "list", "--no-legend"])
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect()
}

/// `rkt gc` where the pods' networks were made (twice: mark, then sweep), then the support
/// library's clean-up check and the machine-wide one.
fn assert_nothing_left(world: &RktWorld, host: Option<&TestHost>, round: usize) {
    if host.is_some() {
        for _ in 0..2 {
            let gc = run_with_limit(
                &mut rkt_command(world, host, &["gc", "--grace-period=0s"]),
                POD_LIMIT,
            );
            assert_eq!(gc.code(), 0, "round {round}: gc: {gc}");
        }
    }
    assert_all_cleaned(world);
    let left = pod_leftovers(&world.data_dir(), host.map(|h| h.0.as_str()));
    assert!(left.is_empty(), "round {round}: left behind: {left:#?}");
}

#[test]
fn four_pods_at_once_cold_warm_networked_and_without_warm_start() {
    // Declared first, dropped last: the world's files live on it.
    let scratch = ScratchFs::new();
    let world = RktWorld::in_dir(scratch.path());
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"])
        .display()
        .to_string();
    // Into the store once, so the rounds measure pods, not four fetches of one image.
    world.ok(&["fetch", &aci]);
    let none = ["--net=none", "--pull-policy=never"];
    let mut walls = Vec::new();

    // 1. Cold cache: one snapshot made, by one pod; all four restore it.
    assert!(snapshot_ids(&world).is_empty());
    let (pods, wall) = run_round(&world, IMAGE, None, 1, &none, "");
    walls.push(wall);
    assert_own_results(&world, 1, &pods);
    let (restored, made) = warm_starts(1, &pods);
    let ids = snapshot_ids(&world);
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(made, 1, "pods that made a snapshot, of one shape");
    assert!(restored.iter().all(|id| *id == ids[0]), "{restored:?}");
    assert_nothing_left(&world, None, 1);

    // 2. Warm: nothing made, all four restore round 1's snapshot.
    let (pods, wall) = run_round(&world, IMAGE, None, 2, &none, "");
    walls.push(wall);
    assert_own_results(&world, 2, &pods);
    let (restored, made) = warm_starts(2, &pods);
    assert_eq!(made, 0, "a warm round made a snapshot");
    assert!(restored.iter().all(|id| *id == ids[0]), "{restored:?}");
    assert_eq!(snapshot_ids(&world), ids);
    assert_nothing_left(&world, None, 2);

    // 3. The default network: a shape of its own (one NIC), four addresses.
    let host = TestHost::new();
    let show_ip = "echo ip=$(ip -4 addr show dev eth0 | awk '/inet / {print $2}');";
    let (pods, wall) = run_round(
        &world,
        IMAGE,
        Some(&host),
        3,
        &["--net=default", "--pull-policy=never"],
        show_ip,
    );
    walls.push(wall);
    assert_own_results(&world, 3, &pods);
    let (restored, made) = warm_starts(3, &pods);
    assert_eq!(made, 1, "pods that made the one-NIC snapshot");
    let net_ids = snapshot_ids(&world);
    assert_eq!(net_ids.len(), 2, "{net_ids:?}");
    assert!(
        restored
            .iter()
            .all(|id| *id == restored[0] && *id != ids[0]),
        "{restored:?}"
    );
    let mut ips: Vec<String> = pods
        .iter()
        .map(|pod| {
            pod.run
                .stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix("ip="))
                .unwrap_or_default()
                // ptp gives each pod a /32 (its gateway is a host route).
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for (index, ip) in ips.iter().enumerate() {
        assert!(
            ip.starts_with("172.16.28.") && ip.parse::<std::net::Ipv4Addr>().is_ok(),
            "pod {index}: {ip:?}: {}",
            pods[index].run
        );
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), PODS, "addresses repeated: {ips:?}");
    assert_nothing_left(&world, Some(&host), 3);

    // 4. No warm start: four guest kernels boot at the same time.
    let cold = ["--net=none", "--pull-policy=never", "--warm-start=false"];
    let (pods, wall) = run_round(&world, IMAGE, None, 4, &cold, "");
    walls.push(wall);
    assert_own_results(&world, 4, &pods);
    for pod in &pods {
        assert!(!pod.run.stderr.contains("warm start:"), "{}", pod.run);
    }
    assert_nothing_left(&world, None, 4);

    let walls: Vec<String> = walls.iter().map(|w| format!("{w:.1}")).collect();
    println!(
        "rounds (cold cache, warm, default network, no warm start): {} s",
        walls.join(" / ")
    );
}
