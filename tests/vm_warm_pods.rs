//! Warm start through `rkt run` (docs/stage1-kvm.md, "Warm start"): the kvm stage1 makes a
//! snapshot of a booted, idle guest for the first pod of a VM shape and restores it for every
//! pod. Checked through the real `rkt` binary and the installed stage1 image: a cold
//! (`--warm-start=false`) and warm runs of one command give the same output and exit code;
//! the second pod restores without making a snapshot; restored pods get their own random
//! bytes, boot_id and the host's wall clock; a corrupted snapshot falls back to a cold boot
//! and is replaced; `rkt snapshot list|clear` and `rkt gc`; a warm pod on the default network
//! has its own MAC address and reaches its gateway.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use e2e::{
    assert_all_cleaned, busybox_aci, pod_consoles, run_with_limit, uuid_from, Finished, RktWorld,
    POD_LIMIT,
};

const IMAGE: &str = "example.com/busybox";
const SNAPSHOTS: &str = "stage1-kvm/snapshots";

/// What the pods print: fixed lines, then what must differ between pods and the clock.
const SHOW: &str = "echo out-line; echo err-line >&2; \
                    echo boot_id=$(cat /proc/sys/kernel/random/boot_id); \
                    echo random=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'); \
                    echo now=$(date +%s); exit 3";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The value of the first `key=...` line of the output.
fn value(run: &Finished, key: &str) -> String {
    let prefix = format!("{key}=");
    run.stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= line:\n{run}"))
        .to_string()
}

/// One pod of SHOW; checks what every run of it must give, and that the guest's clock was
/// between the host's before and after the run.
fn show_pod(world: &RktWorld, aci: &str, flags: &[&str]) -> Finished {
    let mut args = vec!["run", "--net=none"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[aci, "--exec=/bin/sh", "--", "-c", SHOW]);
    let before = now();
    let run = world.rkt(&args);
    let after = now();
    assert_eq!(run.code(), 3, "{run}\n{}", pod_consoles(world));
    assert!(run.stdout.lines().any(|l| l.trim() == "out-line"), "{run}");
    assert!(run.stderr.lines().any(|l| l.trim() == "err-line"), "{run}");
    let guest_now: u64 = value(&run, "now").parse().unwrap();
    assert!(
        (before..=after + 1).contains(&guest_now),
        "guest clock {guest_now} outside the run's {before}..{after}: {run}"
    );
    run
}

fn snapshot_ids(world: &RktWorld) -> Vec<String> {
    world
        .ok(&["snapshot", "list", "--no-legend"])
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect()
}

/// Everything in the cache directory (entries, locks, leftovers).
fn cache_names(world: &RktWorld) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(world.data_dir().join(SNAPSHOTS))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn cold_and_warm_pods_agree_and_restored_pods_are_each_unique() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"])
        .display()
        .to_string();

    let cold = show_pod(&world, &aci, &["--warm-start=false"]);
    assert!(
        snapshot_ids(&world).is_empty(),
        "a cold run made a snapshot"
    );

    // The first warm pod makes the snapshot, then restores it.
    let first = show_pod(&world, &aci, &["--debug"]);
    assert!(
        first.stderr.contains("warm start: made snapshot"),
        "{first}"
    );
    assert!(
        first.stderr.contains("warm start: restoring snapshot"),
        "{first}"
    );
    let ids = snapshot_ids(&world);
    assert_eq!(ids.len(), 1, "{ids:?}");

    // The second restores it without making one; so does a run without --debug.
    let second = show_pod(&world, &aci, &["--debug"]);
    // The timing lines, for the record (shown with --nocapture).
    for line in second.stderr.lines().filter(|l| l.contains("timing")) {
        println!("warm: {line}");
    }
    assert!(!first.stderr.contains("failed to restore"), "{first}");
    assert!(!second.stderr.contains("failed to restore"), "{second}");
    assert!(!second.stderr.contains("made snapshot"), "{second}");
    assert!(
        second
            .stderr
            .contains(&format!("warm start: restoring snapshot {}", ids[0])),
        "{second}"
    );
    let quiet = show_pod(&world, &aci, &[]);
    // The same lines, values aside (stage0's own notes on stderr aside).
    let shape = |run: &Finished| {
        let out: Vec<String> = run
            .stdout
            .lines()
            .map(|l| l.split('=').next().unwrap_or_default().to_string())
            .collect();
        let err: Vec<String> = run
            .stderr
            .lines()
            .filter(|l| !l.starts_with("image:") && !l.starts_with("rkt:"))
            .map(String::from)
            .collect();
        (out, err)
    };
    assert_eq!(shape(&cold), shape(&quiet), "cold:\n{cold}\nwarm:\n{quiet}");
    assert_eq!(
        shape(&cold).0,
        ["out-line", "boot_id", "random", "now"],
        "{cold}"
    );
    assert_eq!(snapshot_ids(&world), ids);

    // Every pod its own boot_id and random bytes, though three come from one snapshot.
    let runs = [&cold, &first, &second, &quiet];
    for key in ["boot_id", "random"] {
        let mut values: Vec<String> = runs.iter().map(|r| value(r, key)).collect();
        assert!(values.iter().all(|v| v.len() >= 32), "{key}: {values:?}");
        values.sort();
        values.dedup();
        assert_eq!(values.len(), runs.len(), "{key} repeated: {values:?}");
    }
    assert_all_cleaned(&world);
    // Pods come and go; the snapshot stays for the next one.
    assert_eq!(snapshot_ids(&world), ids);
}

#[test]
fn a_corrupted_snapshot_falls_back_and_is_replaced_and_list_clear_gc() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"])
        .display()
        .to_string();
    let echo = |flags: &[&str]| {
        let mut args = vec!["run", "--net=none", "--debug"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[aci.as_str(), "--exec=/bin/echo", "--", "warm-ok"]);
        let run = world.rkt(&args);
        assert_eq!(run.code(), 0, "{run}\n{}", pod_consoles(&world));
        assert!(run.stdout.lines().any(|l| l.trim() == "warm-ok"), "{run}");
        run
    };
    echo(&[]);
    let ids = snapshot_ids(&world);
    assert_eq!(ids.len(), 1);
    let listed = world.ok(&["snapshot", "list"]);
    assert!(listed.starts_with("ID"), "{listed}");
    assert!(
        listed.contains("128MiB") && listed.contains("pod"),
        "{listed}"
    );

    // Flip a byte in the middle of the state file: the cache's record of it (its times)
    // no longer matches, so the entry is refused before the VMM reads it.
    let state = world.data_dir().join(SNAPSHOTS).join(&ids[0]).join("state");
    let mut bytes = fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&state, bytes).unwrap();
    let fallback = echo(&[]);
    assert!(
        fallback.stderr.contains("refused") && fallback.stderr.contains("booting cold"),
        "{fallback}"
    );
    assert_eq!(
        fallback
            .stderr
            .lines()
            .filter(|l| l.contains("booting cold"))
            .count(),
        1,
        "one line: {fallback}"
    );
    assert!(
        snapshot_ids(&world).is_empty(),
        "the broken snapshot was kept"
    );
    let replaced = echo(&[]);
    assert!(replaced.stderr.contains("made snapshot"), "{replaced}");
    assert_eq!(snapshot_ids(&world), ids, "same shape, same id");

    // gc keeps a snapshot whose stage1 is in the store and removes one whose stage1 is not.
    let entry = world.data_dir().join(SNAPSHOTS).join(&ids[0]);
    let orphan_id = "0123456789abcdef0123456789abcdef";
    let orphan = world.data_dir().join(SNAPSHOTS).join(orphan_id);
    fs::create_dir(&orphan).unwrap();
    let info = fs::read_to_string(entry.join("info.json")).unwrap();
    let mut info: serde_json::Value = serde_json::from_str(&info).unwrap();
    info["key"]["stage1_tree"] = "deps-sha512-not-in-the-store".into();
    fs::write(orphan.join("info.json"), info.to_string()).unwrap();
    // A build a killed stage1 left behind.
    fs::create_dir(
        world
            .data_dir()
            .join(SNAPSHOTS)
            .join(format!(".build-{}-1", ids[0])),
    )
    .unwrap();
    assert_eq!(snapshot_ids(&world).len(), 2);
    let gc = world.rkt(&["gc", "--grace-period=0s"]);
    assert_eq!(gc.code(), 0, "{gc}");
    assert!(
        gc.stderr
            .contains(&format!("removing warm-start snapshot {orphan_id}")),
        "{gc}"
    );
    assert_eq!(snapshot_ids(&world), ids);
    assert!(
        !cache_names(&world).iter().any(|n| n.starts_with(".build-")),
        "{:?}",
        cache_names(&world)
    );

    let cleared = world.ok(&["snapshot", "clear"]);
    assert_eq!(cleared.trim(), "Removed 1 snapshot(s)");
    assert!(snapshot_ids(&world).is_empty());
    assert_eq!(cache_names(&world), Vec::<String>::new());
    assert_all_cleaned(&world);
}

/// A network namespace for the pod's default network (its veth and routes stay in there).
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("rkt-warm-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success());
        let netns = Netns(name);
        let status = Command::new("ip")
            .args(["-n", &netns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(status.success());
        netns
    }

    fn rkt(&self, world: &RktWorld, args: &[&str]) -> Finished {
        run_with_limit(&mut world.command_in_netns(&self.0, args), POD_LIMIT)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn network_file(world: &RktWorld, uuid: &str) -> PathBuf {
    world
        .data_dir()
        .join("pods/run")
        .join(uuid)
        .join("stage1/rootfs/rkt/network.json")
}

#[test]
fn warm_pods_on_the_default_network_get_their_own_mac_and_reach_their_gateway() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"])
        .display()
        .to_string();
    let netns = Netns::new();
    let script = "echo mac=$(cat /sys/class/net/eth0/address); \
                  gw=$(ip route | awk '/^default/ {print $3}'); echo gw=$gw; \
                  if ping -c 1 -W 20 $gw >/dev/null; then echo ping=ok; else echo ping=failed; fi";
    let mut macs = Vec::new();
    for round in 0..2 {
        let uuid_file = world.root.path().join(format!("uuid-{round}"));
        let run = netns.rkt(
            &world,
            &[
                "run",
                "--net=default",
                "--debug",
                &format!("--uuid-file-save={}", uuid_file.display()),
                &aci,
                "--exec=/bin/sh",
                "--",
                "-c",
                script,
            ],
        );
        assert_eq!(run.code(), 0, "{run}");
        assert!(
            run.stderr.contains("warm start: restoring snapshot"),
            "{run}"
        );
        assert_eq!(run.stderr.contains("made snapshot"), round == 0, "{run}");
        assert!(!run.stderr.contains("failed to restore"), "{run}");
        assert_eq!(value(&run, "ping"), "ok", "{run}");
        let uuid = uuid_from(&uuid_file);
        let described: serde_json::Value =
            serde_json::from_slice(&fs::read(network_file(&world, &uuid)).unwrap()).unwrap();
        let pod_mac = described["interfaces"][0]["mac"]
            .as_str()
            .unwrap()
            .to_lowercase();
        assert_eq!(
            value(&run, "mac"),
            pod_mac,
            "the guest kept the snapshot's MAC: {run}"
        );
        assert_eq!(
            described["interfaces"][0]["bootMac"].as_str(),
            Some("02:72:6b:74:00:00")
        );
        macs.push(pod_mac);
    }
    assert_ne!(macs[0], macs[1], "two pods, two MACs");
    let listed = world.ok(&["snapshot", "list", "--no-legend"]);
    let columns: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert_eq!(columns.get(4), Some(&"1"), "one NIC: {listed}");
    // gc in the namespace, where the pods' networks were made.
    for _ in 0..2 {
        let gc = netns.rkt(&world, &["gc", "--grace-period=0s"]);
        assert_eq!(gc.code(), 0, "{gc}");
    }
    assert!(world.pods_in("run").is_empty() && world.pods_in("exited-garbage").is_empty());
}
