//! The VMM's jail (docs/security.md, "The VMM's jail"), read from /proc of a running pod's
//! VMM, cold and warm: its own pid, mount, network, IPC and UTS namespaces; its root is the jail (only
//! what the VM needs); every thread has `no_new_privs` and a seccomp filter; the main, vCPU,
//! net, vsock and rng threads run as the pod's unprivileged uid/gid with no capability; the
//! spawner and virtio-fs threads keep uid 0 with only the file capabilities; the bounding set is
//! those; its cgroup has the limits; and `rkt gc` leaves no cgroup behind.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{assert_all_cleaned, busybox_aci, run_output, start_pod, RktWorld, ScratchFs};

const IMAGE: &str = "example.com/busybox";
/// CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_SETGID, CAP_SETUID.
const FILE_CAPS: u64 = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7);

/// One thread's /proc status lines, by key.
type Status = BTreeMap<String, String>;

fn read_status(path: &Path) -> Status {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn hex(status: &Status, key: &str) -> u64 {
    u64::from_str_radix(&status[key], 16).unwrap()
}

/// The pod's VMM: the child of its stage1 (the pid in the pod directory) named rkt-vmm.
fn vmm_pid(world: &RktWorld, uuid: &str) -> u32 {
    let pid_file = world.data_dir().join("pods/run").join(uuid).join("pid");
    let stage1: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let started = Instant::now();
    loop {
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let Some((comm_part, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let ppid: Option<u32> = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            if ppid == Some(stage1) && comm_part.ends_with("(rkt-vmm") {
                return pid;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no rkt-vmm child of stage1 {stage1}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod_uid(uuid: &str) -> u32 {
    jail::PodIds::of_pod(uuid).uid
}

/// The size of the tmpfs holding `dir`, 0 if it is on another file system.
fn tmpfs_bytes(dir: &Path) -> u64 {
    let fs = nix::sys::statfs::statfs(dir).unwrap();
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return 0;
    }
    fs.blocks() * u64::try_from(fs.block_size()).unwrap()
}

fn check_jail(world: &RktWorld, uuid: &str) {
    let pid = vmm_pid(world, uuid);
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let uid = pod_uid(uuid);

    // Namespaces: all of its own; it is pid 1 of its pid namespace.
    for ns in ["mnt", "net", "pid", "ipc", "uts"] {
        let theirs = fs::read_link(proc_dir.join("ns").join(ns)).unwrap();
        let ours = fs::read_link(Path::new("/proc/self/ns").join(ns)).unwrap();
        assert_ne!(theirs, ours, "the VMM shares our {ns} namespace");
    }
    let leader = read_status(&proc_dir.join("status"));
    let nspid: Vec<&str> = leader["NSpid"].split_whitespace().collect();
    assert_eq!(nspid, [pid.to_string().as_str(), "1"], "{leader:?}");

    // Its root is the jail: only what the VM needs, no host directory.
    let root = proc_dir.join("root");
    let mut names: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The kernel and initramfs: /vm for a cold boot, the snapshot's copies for a restore.
    assert!(
        names == ["dev", "proc", "shares", "sock", "vm"]
            || names == ["dev", "proc", "shares", "snapshot", "sock"],
        "jail root: {names:?}"
    );
    let mut devices: Vec<String> = fs::read_dir(root.join("dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    devices.sort();
    // /dev/net/tun only when the pod has NICs (--net=default here).
    assert!(
        devices == ["kvm"] || devices == ["kvm", "net"],
        "jail /dev: {devices:?}"
    );
    assert!(root.join("shares/pod/pod").is_file(), "the pod share");
    assert!(root.join("sock/vsock").exists(), "the vsock socket");
    // Its /proc shows its own pid namespace only.
    let mut pids: Vec<String> = fs::read_dir(root.join("proc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<u32>().is_ok())
        .collect();
    pids.sort();
    assert_eq!(pids, ["1"], "processes visible in the jail");

    // No shared library is mapped: the VMM is the stage1 image's static binary, so nothing
    // of the host's (its libc, an /etc/ld.so.preload) is in the process a guest may take over.
    let maps = fs::read_to_string(proc_dir.join("maps")).unwrap();
    let libraries: Vec<&str> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.ends_with(".so") || path.contains(".so."))
        .collect();
    assert!(libraries.is_empty(), "the VMM maps {libraries:?}");

    // Every thread: seccomp, no_new_privs, the bounding set; ids and capabilities by kind.
    let mut kinds = Vec::new();
    for task in fs::read_dir(proc_dir.join("task")).unwrap() {
        let task = task.unwrap().path();
        let name = fs::read_to_string(task.join("comm"))
            .unwrap()
            .trim()
            .to_string();
        let status = read_status(&task.join("status"));
        assert_eq!(status["Seccomp"], "2", "{name}: {status:?}");
        assert_eq!(status["NoNewPrivs"], "1", "{name}");
        assert_eq!(hex(&status, "CapBnd"), FILE_CAPS, "{name}");
        assert_eq!(hex(&status, "CapInh"), 0, "{name}");
        assert_eq!(hex(&status, "CapAmb"), 0, "{name}");
        let ids: Vec<&str> = status["Uid"].split_whitespace().collect();
        let gids: Vec<&str> = status["Gid"].split_whitespace().collect();
        let file_server = name == "spawner" || name == "virtio-fs";
        let (want_id, want_caps) = if file_server {
            ("0".to_string(), FILE_CAPS)
        } else {
            (uid.to_string(), 0)
        };
        assert_eq!(ids, [want_id.as_str(); 4], "{name}: Uid");
        if !file_server {
            assert_eq!(gids, [want_id.as_str(); 4], "{name}: Gid");
            assert_eq!(status["Groups"], "", "{name}: Groups");
        }
        assert_eq!(hex(&status, "CapEff"), want_caps, "{name}: CapEff");
        assert_eq!(hex(&status, "CapPrm"), want_caps, "{name}: CapPrm");
        kinds.push(if name.starts_with("vcpu") {
            "vcpu".to_string()
        } else {
            name
        });
    }
    kinds.sort();
    kinds.dedup();
    for kind in ["rkt-vmm", "spawner", "vcpu", "virtio-fs", "virtio-vsock"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} thread: {kinds:?}"
        );
    }

    // Its cgroup and limits.
    let cgroup = fs::read_to_string(proc_dir.join("cgroup")).unwrap();
    assert_eq!(cgroup.trim(), format!("0::/rkt-kvm/{uuid}"));
    let dir = Path::new("/sys/fs/cgroup/rkt-kvm").join(uuid);
    let memory_max: u64 = fs::read_to_string(dir.join("memory.max"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // 128 MiB of guest RAM (the default) plus 128 MiB of documented overhead, plus the size
    // of the data directory's file system when it is a tmpfs (the pod's own files there are
    // memory charged to the VMM: docs/security.md). In the emulated host TMPDIR is a tmpfs.
    assert_eq!(memory_max, (256 << 20) + tmpfs_bytes(&world.data_dir()));
    let pids_max: u64 = fs::read_to_string(dir.join("pids.max"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((16..64).contains(&pids_max), "pids.max {pids_max}");
    let limits = fs::read_to_string(proc_dir.join("limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {limits}"))
            .split_whitespace()
            .rev()
            .nth(2)
            .unwrap()
            .to_string()
    };
    assert_eq!(limit("Max core file size"), "0");
    let files: u64 = limit("Max open files").parse().unwrap();
    assert!(files < 1 << 20, "RLIMIT_NOFILE {files}");
}

/// Runs a pod with `extra` flags, checks its VMM's jail, and with `expect_in_log` that
/// `rkt run`'s output says so (e.g. that the VM was restored, not booted).
fn jailed_pod(extra: &[&str], expect_in_log: Option<&str>) {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    let mut args = extra.to_vec();
    args.extend_from_slice(&[aci.as_str(), "--exec=/bin/sleep", "--", "600"]);
    let (mut run, uuid) = start_pod(&world, &args);
    check_jail(&world, &uuid);
    if let Some(expected) = expect_in_log {
        let log = run_output(&world);
        assert!(log.contains(expected), "{expected:?} not in\n{log}");
        assert!(
            !log.contains("booting cold"),
            "it fell back to a cold boot\n{log}"
        );
    }
    let stopped = world.rkt(&["stop", "--force", &uuid]);
    assert_eq!(stopped.code(), 0, "{stopped}");
    let started = Instant::now();
    while run.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rkt run did not end\n{}",
            run_output(&world)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_all_cleaned(&world);
}

#[test]
fn a_cold_booted_vmm_is_jailed() {
    jailed_pod(&["--warm-start=false"], None);
}

#[test]
fn a_restored_vmm_is_jailed() {
    // The first warm pod makes the snapshot (in a jailed VMM too) and then restores it.
    jailed_pod(
        &["--debug"],
        Some("stage1-kvm: warm start: restoring snapshot"),
    );
}

/// `--disk-limit` on a data directory whose file system keeps project quotas: what the guest
/// writes into its root file system (the overlay's upper directory) and into an empty volume
/// stops at the limit with EDQUOT, the pod directory stays under it, and gc leaves nothing.
#[test]
fn a_disk_limit_bounds_what_the_guest_writes() {
    let scratch = ScratchFs::with_project_quotas();
    let world = RktWorld::in_dir(scratch.path());
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    let script = "dd if=/dev/zero of=/big bs=1M count=64 2>&1; echo rootfs-dd=$?; sync; \
                  rm -f /big; \
                  dd if=/dev/zero of=/scratch/big bs=1M count=64 2>&1; echo volume-dd=$?";
    let run = world.rkt(&[
        "run",
        "--disk-limit=24M",
        "--volume=scratch,kind=empty,mode=0777",
        &aci,
        "--mount=volume=scratch,target=/scratch",
        "--exec=/bin/sh",
        "--",
        "-c",
        script,
    ]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("Disk quota exceeded"), "{run}");
    assert!(!out.contains("rootfs-dd=0"), "{run}");
    assert!(!out.contains("volume-dd=0"), "{run}");
    assert!(out.contains("volume-dd="), "{run}");
    let du = |args: &[&str]| {
        let out = std::process::Command::new("du")
            .args(args)
            .arg(world.data_dir().join("pods"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // -x: not into the overlays still mounted over the pod's own directories.
    let kib: u64 = du(&["-skx"])
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        kib <= 28 * 1024,
        "the pods hold {kib} KiB with a 24 MiB limit\n{}\n{run}",
        du(&["-kx", "--max-depth=6"])
    );
    // The host's own writes (the app's status, through stage1's overlay) are not bounded by
    // what the guest filled: the pod's exit status is the app's.
    assert_eq!(run.code(), 0, "{run}");
    assert!(!run.stderr.contains("os error 122"), "{run}");
    assert_all_cleaned(&world);
}
