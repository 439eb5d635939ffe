//! Warm start end to end with `rkt-vmm`: a guest booted with `rkt.warm=1` is saved with
//! `--snapshot-to` when guest-init says it is ready, and restored with `--restore-from`, which
//! hands guest-init the command line of the run over vsock (docs/foundation.md, "warm mode").
//!
//! Checked here: a restored run of a command in a virtio-fs share gives the same output, exit
//! status and status file as a cold boot of it; two restores of one snapshot read different
//! random bytes (/dev/urandom and virtio-rng) and the host's wall clock; virtio-fs, vsock (the
//! handover and a guest connection to the host) and rng work after a restore; a snapshot is
//! refused for another kernel, initramfs or memory size, and when its files are corrupted or
//! truncated, without leaving the vsock socket behind; a guest that never gets ready is not
//! saved; where KVM offers KVM_PRE_FAULT_MEMORY (Linux 6.10), a restore maps the snapshot's
//! memory into KVM's page tables before the guest runs. Needs ordinary KVM: runs inside the
//! emulated KVM host on kvm_pvm machines.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use guest_tools::Summary;

use e2e::{
    busybox_initramfs, bzimage, populate_guest_root, rkt_vmm, run_with_limit, vmlinux, Finished,
    BOOT_LIMIT,
};

/// The kernel command line of the snapshot boot: what the kernel itself needs (it keeps it after
/// a restore) and warm mode.
const WARM_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet rkt.warm=1";
const MEM: &str = "128";

/// Everything one test needs: a share with a guest root, and a snapshot made against it.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        populate_guest_root(&dir.path().join("share/root"));
        World { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn share(&self) -> PathBuf {
        self.path("share")
    }

    /// `rkt-vmm` with the VM shape every run here has: 128 MiB, rng, the share `pod`, vsock.
    fn vmm(&self, kernel: &Path, initrd: &Path, socket: &str, mem: &str) -> Command {
        let mut command = Command::new(rkt_vmm());
        command
            .arg("--kernel")
            .arg(kernel)
            .arg("--initrd")
            .arg(initrd)
            .args(["--mem", mem])
            .arg("--share")
            .arg(format!("pod={}", self.share().display()))
            .arg("--vsock")
            .arg(self.path(socket))
            // The one host port a guest here connects to (after a restore).
            .args(["--vsock-port", "6000"]);
        command
    }

    fn snapshot(&self, name: &str) -> PathBuf {
        self.snapshot_and_size(name).0
    }

    /// A snapshot and the bytes of guest memory it wrote (its memory file's data).
    fn snapshot_and_size(&self, name: &str) -> (PathBuf, u64) {
        let snap = self.path(name);
        let run = run_with_limit(
            self.vmm(
                &vmlinux(),
                &busybox_initramfs(),
                &format!("{name}.sock"),
                MEM,
            )
            .args(["--cmdline", WARM_CMDLINE, "--serial", "off"])
            .arg("--snapshot-to")
            .arg(&snap),
            BOOT_LIMIT,
        );
        assert_eq!(run.code(), 0, "snapshot failed:\n{run}");
        assert!(run.stderr.contains("snapshot saved"), "{run}");
        assert!(snap.join("state").is_file() && snap.join("memory").is_file());
        assert!(
            !self.path(&format!("{name}.sock")).exists(),
            "socket left behind"
        );
        // "rkt-vmm: snapshot saved in DIR (N KiB of guest memory, M KiB of state)"
        let kib = run
            .stderr
            .split_once(" KiB of guest memory")
            .and_then(|(before, _)| before.rsplit_once('(')?.1.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no memory size in the report:\n{run}"));
        (snap, kib * 1024)
    }

    /// `rkt-vmm --restore-from SNAP --cmdline PARAMS` with this kernel, initramfs and memory.
    fn restore_command(
        &self,
        snap: &Path,
        socket: &str,
        kernel: &Path,
        initrd: &Path,
        mem: &str,
        params: &str,
    ) -> Command {
        let mut command = self.vmm(kernel, initrd, socket, mem);
        command
            .arg("--restore-from")
            .arg(snap)
            .args(["--cmdline", params]);
        command
    }

    fn restore_with(
        &self,
        snap: &Path,
        socket: &str,
        kernel: &Path,
        initrd: &Path,
        mem: &str,
        params: &str,
    ) -> Finished {
        run_with_limit(
            &mut self.restore_command(snap, socket, kernel, initrd, mem, params),
            BOOT_LIMIT,
        )
    }

    fn restore(&self, snap: &Path, socket: &str, params: &str) -> Finished {
        self.restore_with(snap, socket, &vmlinux(), &busybox_initramfs(), MEM, params)
    }
}

/// guest-init's parameters for `command` run in the share's `root`, status in `status`.
fn share_params(command: &str) -> String {
    format!("rkt.share=pod rkt.root=root rkt.status=status -- {command}")
}

/// The lines of a run's console that the command printed (between the kernel's and guest-init's).
fn lines_with(run: &Finished, prefix: &str) -> Vec<String> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.trim_end().to_string())
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn cold_and_restored_runs_of_a_command_agree_and_devices_work() {
    let world = World::new();
    let snap = world.snapshot("snap");
    // virtio-fs (a file written and read back in the share), rng (bytes from virtio-rng) and
    // vsock (a guest connection to host port 6000, which the test accepts) after the restore.
    let command = r#"/bin/sh -c "echo out: start; echo data > /written; cat /written | sed s/^/out:\ /; head -c 32 /dev/hwrng | wc -c | sed s/^/out:\ rng\ /; echo out: end; exit 7""#;

    let cold = run_with_limit(
        world
            .vmm(&vmlinux(), &busybox_initramfs(), "cold.sock", MEM)
            .arg("--cmdline")
            .arg(format!(
                "console=ttyS0 reboot=k panic=-1 quiet {}",
                share_params(command)
            )),
        BOOT_LIMIT,
    );
    assert_eq!(cold.code(), 7, "{cold}");
    let cold_status = fs::read_to_string(world.share().join("status")).unwrap();
    fs::remove_file(world.share().join("status")).unwrap();
    fs::remove_file(world.share().join("root/written")).unwrap();

    let warm = world.restore(&snap, "warm.sock", &share_params(command));
    assert_eq!(warm.code(), 7, "{warm}");
    let warm_status = fs::read_to_string(world.share().join("status")).unwrap();
    assert_eq!(cold_status, "7\n");
    assert_eq!(warm_status, cold_status);
    let cold_lines = lines_with(&cold, "out:");
    assert_eq!(
        cold_lines,
        vec!["out: start", "out: data", "out: rng 32", "out: end"],
        "{cold}"
    );
    assert_eq!(lines_with(&warm, "out:"), cold_lines, "{warm}");
    assert!(
        warm.stdout.contains("rkt-guest-init: exit-status=7"),
        "{warm}"
    );
    assert!(!world.path("warm.sock").exists(), "socket left behind");

    // vsock from the guest to the host after a restore: 64 KiB of pattern, checked by SHA-256.
    let listener = UnixListener::bind(world.path("vs.sock_6000")).unwrap();
    let serving = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut data = Vec::new();
        stream.read_to_end(&mut data).unwrap();
        let summary = Summary::of_bytes(&data);
        stream.write_all(summary.reply_line().as_bytes()).unwrap();
        summary
    });
    let vsock = world.restore(
        &snap,
        "vs.sock",
        &share_params(r#"/bin/sh -c "rkt-vsock-probe send 2 6000 64K --seed 3""#),
    );
    assert_eq!(vsock.code(), 0, "{vsock}");
    assert_eq!(serving.join().unwrap(), Summary::of_pattern(3, 0, 64 << 10));
}

#[test]
fn restored_guests_get_fresh_randomness_and_the_hosts_clock() {
    let world = World::new();
    let snap = world.snapshot("snap");
    // Long enough that a guest keeping the snapshot's clock would be visibly behind.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let command = r#"/bin/sh -c "echo urandom: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' '); echo hwrng: $(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' '); echo clock: $(date +%s)""#;
    let mut seen = Vec::new();
    for socket in ["a.sock", "b.sock"] {
        let before = now();
        let run = world.restore(&snap, socket, &share_params(command));
        let after = now();
        assert_eq!(run.code(), 0, "{run}");
        let clock: u64 = lines_with(&run, "clock: ")
            .first()
            .and_then(|l| l["clock: ".len()..].parse().ok())
            .unwrap_or_else(|| panic!("no clock line:\n{run}"));
        assert!(
            clock + 1 >= before && clock <= after + 1,
            "guest clock {clock} outside the host's {before}..{after}"
        );
        let urandom = lines_with(&run, "urandom: ");
        let hwrng = lines_with(&run, "hwrng: ");
        assert_eq!(urandom.len(), 1, "{run}");
        assert_eq!(hwrng.len(), 1, "{run}");
        assert_eq!(urandom[0].len(), "urandom: ".len() + 32, "{run}");
        seen.push((urandom[0].clone(), hwrng[0].clone()));
    }
    assert_ne!(
        seen[0].0, seen[1].0,
        "both restores read the same /dev/urandom bytes"
    );
    assert_ne!(
        seen[0].1, seen[1].1,
        "both restores read the same virtio-rng bytes"
    );
}

/// The `key=value` line `key` of a `--stats` report, if present.
fn stat(run: &Finished, key: &str) -> Option<String> {
    run.stderr
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// Whether the running kernel is at least `major.minor` (from /proc/sys/kernel/osrelease).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(['.', '-', '+']);
    let mut next = || -> u32 { parts.next().and_then(|p| p.parse().ok()).unwrap_or(0) };
    (next(), next()) >= (major, minor)
}

#[test]
fn a_restore_maps_the_snapshots_memory_ahead_of_the_guest_where_kvm_can() {
    let world = World::new();
    let (snap, saved) = world.snapshot_and_size("snap");
    let run = run_with_limit(
        world
            .restore_command(
                &snap,
                "pf.sock",
                &vmlinux(),
                &busybox_initramfs(),
                MEM,
                &share_params("/bin/true"),
            )
            .arg("--stats"),
        BOOT_LIMIT,
    );
    assert_eq!(run.code(), 0, "{run}");
    // KVM_PRE_FAULT_MEMORY came with Linux 6.10; CI's emulated host runs 6.12, so there the
    // mapping must have happened, not been skipped.
    if !kernel_at_least(6, 10) {
        assert_eq!(
            stat(&run, "snapshot.prefault").as_deref(),
            Some("unsupported"),
            "{run}"
        );
        return;
    }
    assert_eq!(stat(&run, "snapshot.prefault_stopped"), None, "{run}");
    let bytes: u64 = stat(&run, "snapshot.prefault_bytes")
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot.prefault_bytes:\n{run}"));
    // At least the pages the snapshot wrote (its data extents), at most the guest's RAM.
    let ram = 128u64 << 20;
    assert!(
        bytes >= saved.min(ram) && bytes <= ram,
        "{bytes} vs {saved} saved:\n{run}"
    );
    // And KVM did map them: its page tables still hold most of them at the end (the host zaps
    // a mapping when it replaces the page, e.g. on the guest's first write to a copy-on-write
    // page; a guest's run of /bin/true alone touches far fewer than 3/4 of them).
    let pages = |key: &str, size: u64| -> u64 {
        stat(&run, key).and_then(|v| v.parse().ok()).unwrap_or(0) * size
    };
    let mapped = pages("kvm.vm.pages_4k", 1)
        + pages("kvm.vm.pages_2m", 512)
        + pages("kvm.vm.pages_1g", 1 << 18);
    assert!(
        mapped * 4 >= bytes / 4096 * 3,
        "{mapped} pages mapped after {bytes} pre-faulted:\n{run}"
    );
}

fn assert_refused(run: &Finished, words: &str) {
    assert_eq!(run.code(), 254, "{run}");
    assert!(run.stderr.contains(words), "expected {words:?}:\n{run}");
    assert_eq!(run.stderr.lines().count(), 1, "one error line:\n{run}");
}

#[test]
fn snapshots_for_another_kernel_initramfs_or_memory_size_are_refused() {
    let world = World::new();
    let snap = world.snapshot("snap");
    let params = share_params("/bin/true");
    let bz = world.restore_with(
        &snap,
        "k.sock",
        &bzimage(),
        &busybox_initramfs(),
        MEM,
        &params,
    );
    assert_refused(&bz, "another kernel");
    let initramfs = e2e::artefact("target/guest/initramfs.cpio");
    let other = world.restore_with(&snap, "i.sock", &vmlinux(), &initramfs, MEM, &params);
    assert_refused(&other, "another initramfs");
    let big = world.restore_with(
        &snap,
        "m.sock",
        &vmlinux(),
        &busybox_initramfs(),
        "256",
        &params,
    );
    assert_refused(&big, "another memory size");
    for socket in ["k.sock", "i.sock", "m.sock"] {
        assert!(!world.path(socket).exists(), "{socket} left behind");
    }
}

#[test]
fn corrupted_or_truncated_snapshots_are_refused() {
    let world = World::new();
    let snap = world.snapshot("snap");
    let state = fs::read(snap.join("state")).unwrap();
    let params = share_params("/bin/true");
    let copy = |name: &str| {
        let dir = world.path(name);
        fs::create_dir_all(&dir).unwrap();
        fs::copy(snap.join("memory"), dir.join("memory")).unwrap();
        fs::write(dir.join("state"), &state).unwrap();
        dir
    };

    let flipped = copy("flipped");
    let mut bad = state.clone();
    let at = bad.len() - 10;
    bad[at] ^= 0x20;
    fs::write(flipped.join("state"), &bad).unwrap();
    assert_refused(
        &world.restore(&flipped, "f.sock", &params),
        "checksum mismatch",
    );

    let truncated = copy("truncated");
    fs::write(truncated.join("state"), &state[..state.len() / 2]).unwrap();
    assert_refused(&world.restore(&truncated, "t.sock", &params), "truncated");

    let short_memory = copy("short-memory");
    let memory = fs::File::options()
        .write(true)
        .open(short_memory.join("memory"))
        .unwrap();
    memory.set_len(64 << 20).unwrap();
    assert_refused(
        &world.restore(&short_memory, "s.sock", &params),
        "truncated or from another VM",
    );

    let garbage = copy("garbage");
    fs::write(
        garbage.join("state"),
        b"hello, this is not a snapshot at all............",
    )
    .unwrap();
    assert_refused(
        &world.restore(&garbage, "g.sock", &params),
        "not a snapshot",
    );

    let missing = world.path("missing");
    assert_refused(&world.restore(&missing, "n.sock", &params), "missing/state");
    for socket in ["f.sock", "t.sock", "s.sock", "g.sock", "n.sock"] {
        assert!(!world.path(socket).exists(), "{socket} left behind");
    }
}

#[test]
fn a_guest_that_never_gets_ready_is_not_saved() {
    let world = World::new();
    let snap = world.path("never");
    let run = run_with_limit(
        world
            .vmm(&vmlinux(), &busybox_initramfs(), "n.sock", MEM)
            .args(["--serial", "off", "--cmdline"])
            .arg("console=ttyS0 reboot=k panic=-1 quiet -- /bin/true")
            .arg("--snapshot-to")
            .arg(&snap),
        BOOT_LIMIT,
    );
    assert_refused(&run, "before guest-init said it was ready");
    assert!(!snap.join("state").exists());
}

/// A two-vCPU guest comes back with its TSC where the snapshot left it, on both vCPUs (the VMM
/// reads each vCPU's TSC back after setting it and refuses the restore otherwise: KVM used to
/// drop the saved TSC of a guest saved less than a second into its life, and the restored
/// guest's timers then fired up to a second late), and both vCPUs run and keep time: the guest
/// sees two CPUs and its sleeps on each end.
#[test]
fn a_restored_two_vcpu_guest_has_its_tsc_back_and_both_vcpus_keep_time() {
    let world = World::new();
    let snap = world.path("two");
    let saved = run_with_limit(
        world
            .vmm(&vmlinux(), &busybox_initramfs(), "two.sock", MEM)
            .args(["--cpus", "2", "--cmdline", WARM_CMDLINE, "--serial", "off"])
            .arg("--snapshot-to")
            .arg(&snap),
        BOOT_LIMIT,
    );
    assert_eq!(saved.code(), 0, "snapshot failed:\n{saved}");
    let command = r#"/bin/sh -c "echo cpus: $(nproc); for cpu in 0 1; do taskset -c $cpu sh -c 'for i in 1 2 3 4 5; do sleep 0.02; done' && echo slept on $cpu; done""#;
    let run = run_with_limit(
        world
            .vmm(&vmlinux(), &busybox_initramfs(), "two-back.sock", MEM)
            .args(["--cpus", "2"])
            .arg("--restore-from")
            .arg(&snap)
            .args(["--cmdline", &share_params(command)]),
        BOOT_LIMIT,
    );
    assert_eq!(run.code(), 0, "{run}");
    assert!(
        !run.stderr.contains("did not put the guest's TSC back"),
        "{run}"
    );
    assert_eq!(lines_with(&run, "cpus: "), vec!["cpus: 2"], "{run}");
    assert_eq!(
        lines_with(&run, "slept on "),
        vec!["slept on 0", "slept on 1"],
        "{run}"
    );
}
