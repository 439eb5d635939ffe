//! Hostile pods (docs/security.md): apps inside real pods attack the host through everything
//! they can write or reach, and the host must neither execute, connect to nor trust any of
//! it. Each attack first shows that it ran and what it tried (the app's own output), so a test
//! cannot pass because nothing happened. Boots three pods.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{
    assert_all_cleaned, busybox_image_root, guest_tool, pod_status as status,
    status_value as value, uuid_from, RktWorld, POD_LIMIT,
};

/// A busybox ACI whose root also has the vsock probe (`rkt-vsock-probe raw` forges frames).
fn attacker_aci(world: &RktWorld) -> String {
    let build = world.root.path().join("build-attacker");
    let rootfs = build.join("rootfs");
    busybox_image_root(&rootfs);
    fs::copy(
        guest_tool("rkt-vsock-probe"),
        rootfs.join("bin/rkt-vsock-probe"),
    )
    .expect("copy rkt-vsock-probe into the image");
    fs::write(
        build.join("manifest"),
        r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/attacker",
  "labels":[{"name":"version","value":"1"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],
  "app":{"exec":["/bin/true"],"user":"0","group":"0"}}"#,
    )
    .unwrap();
    let aci = world.root.path().join("attacker.aci");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&build)
        .arg("-cf")
        .arg(&aci)
        .args(["manifest", "rootfs"])
        .output()
        .unwrap();
    assert!(tar.status.success(), "{tar:?}");
    aci.display().to_string()
}

/// A `Status` frame (pod_control) for `app`, written as octal escapes for busybox printf.
fn forged_status_frame(app: &str, status: u8) -> String {
    let payload = format!(r#"{{"app":"{app}","status":{status}}}"#);
    let mut frame = vec![9u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload.as_bytes());
    frame.iter().map(|b| format!("\\{b:03o}")).collect()
}

/// What the first pod's attacker does. Every attempt prints what happened.
fn attack_script(canary_dir: &Path, pwned: &Path) -> String {
    let payload = format!("#!/bin/sh\\ntouch {}\\n", pwned.display());
    format!(
        r#"echo attack-ran
echo "share: $(ls /proc/1/root/rkt/share 2>&1 | tr '\n' ' ')"
if ls /proc/1/root/rkt >/dev/null 2>&1; then echo "init-root=visible"; else echo "init-root=hidden"; fi
if head -c 16 /proc/1/mem >/dev/null 2>&1; then echo "init-mem=read"; else echo "init-mem=refused"; fi
for f in /proc/1/root/rkt/share/stage1/rootfs/gc /proc/1/root/rkt/share/stage1/rootfs/enter_kvm \
         /proc/1/root/rkt/share/stage1/rootfs/manifest /proc/1/root/rkt/share/pod \
         /proc/1/root/rkt/share/planted /proc/1/root/rkt/share/stage1/rootfs/rkt/status/victim; do
  if printf '{payload}' > $f 2>/dev/null; then echo "wrote $f"; else echo "refused $f"; fi
done
printf '{forged}' | rkt-vsock-probe raw 2 3 >/dev/null 2>&1; echo forge-status=$?
echo fake-victim-line | rkt-vsock-probe raw 2 1002 >/dev/null 2>&1; echo grab-stdout=$?
ln -s {secret} /vsock_7; echo payload | rkt-vsock-probe raw 2 7 >/dev/null 2>&1; echo port7=$?
echo '{{"version":1,"request":{{"type":"ping"}}}}' | rkt-vsock-probe raw 1 1 >/dev/null 2>&1; echo ctl-local=$?
echo '{{"version":1,"request":{{"type":"ping"}}}}' | rkt-vsock-probe raw 3 1 >/dev/null 2>&1; echo ctl-self=$?
cp /bin/busybox /vol/suid && chmod 4755 /vol/suid && echo suid-made
cp /bin/busybox /vol/sgid && chmod 2755 /vol/sgid && echo sgid-made
cp /bin/busybox /vol/later && chmod 755 /vol/later && chmod u+s /vol/later && echo chmod-suid-made
ln -s {canary} /canary-link && ln -s {canary}/keep /canary-file && echo links-planted
mkfifo /fifo && dd if=/dev/zero of=/huge bs=1 count=1 seek=8G 2>/dev/null && echo junk-planted
echo attacks-done
"#,
        forged = forged_status_frame("victim", 0),
        secret = canary_dir.join("hostsecret.sock").display(),
        canary = canary_dir.display(),
    )
}

#[test]
fn a_hostile_pod_cannot_write_host_state_forge_reports_or_reach_host_sockets() {
    let world = RktWorld::new();
    let aci = attacker_aci(&world);
    let canary = world.root.path().join("canary");
    fs::create_dir_all(&canary).unwrap();
    fs::write(canary.join("keep"), "host file\n").unwrap();
    let pwned = world.root.path().join("PWNED");
    // A root-only host socket the guest must never reach (the old attack: a planted
    // `vsock_7` symlink made the VMM connect to it).
    let secret = UnixListener::bind(canary.join("hostsecret.sock")).unwrap();
    secret.set_nonblocking(true).unwrap();
    fs::set_permissions(
        canary.join("hostsecret.sock"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let volume = world.root.path().join("vol");
    fs::create_dir_all(&volume).unwrap();
    let uuid_file = world.root.path().join("uuid");

    let run = world.rkt(&[
        "run",
        &format!("--uuid-file-save={}", uuid_file.display()),
        "--net=none",
        &format!("--volume=vol,kind=host,source={}", volume.display()),
        &aci,
        "--name=attacker",
        "--exec=/bin/sh",
        "--mount=volume=vol,target=/vol",
        "--",
        "-c",
        &attack_script(&canary, &pwned),
        "---",
        &aci,
        "--name=victim",
        "--exec=/bin/sh",
        "--",
        "-c",
        "sleep 4; echo victim-out; exit 5",
    ]);
    let uuid = uuid_from(&uuid_file);
    let out = &run.stdout;
    // The attack ran and tried everything.
    assert!(
        out.contains("attack-ran") && out.contains("attacks-done"),
        "{run}"
    );
    // guest-init's root and memory are out of reach (the pod's own pid namespace: PID 1 there
    // is not guest-init).
    assert!(out.contains("init-root=hidden"), "{run}");
    assert!(out.contains("init-mem=refused"), "{run}");
    // No host file was writable through the share; nothing of the host is in it.
    assert!(!out.contains("wrote "), "{run}");
    assert_eq!(out.matches("refused ").count(), 6, "{run}");
    for host_only in ["stage1", "pid", "stage1-kvm", "net-info.json"] {
        assert!(
            !out.lines()
                .any(|l| l.starts_with("share:") && l.split(' ').any(|w| w == host_only)),
            "{host_only} visible to the guest: {run}"
        );
    }
    // Forged status and stolen output stream: refused; the victim's own status stands.
    assert!(out.contains("forge-status=1"), "{run}");
    assert!(out.contains("grab-stdout=1"), "{run}");
    assert!(
        out.contains("victim-out") && !out.contains("fake-victim-line"),
        "{run}"
    );
    assert_eq!(
        run.code(),
        5,
        "the victim's status, not the forged 0: {run}"
    );
    let st = status(&world, &uuid);
    assert_eq!(value(&st, "app-victim"), Some("5"), "{st:?}");
    assert_eq!(value(&st, "app-attacker"), Some("0"), "{st:?}");
    // An unregistered host port is refused, and the planted link was never followed.
    assert!(out.contains("port7=1"), "{run}");
    // guest-init's control server (enter, stop) is not reachable from an app over vsock:
    // the guest kernel has no vsock loopback, and its own CID goes to the VMM, which refuses.
    assert!(
        out.contains("ctl-local=1") && out.contains("ctl-self=1"),
        "{run}"
    );
    assert!(
        secret.accept().is_err(),
        "the host's secret socket got a connection"
    );
    // Set-id bits made in a host volume do not exist on the host.
    assert!(
        out.contains("suid-made") && out.contains("sgid-made"),
        "{run}"
    );
    assert!(out.contains("chmod-suid-made"), "{run}");
    for name in ["suid", "sgid", "later"] {
        let mode = fs::metadata(volume.join(name)).unwrap().mode();
        assert_eq!(mode & 0o6000, 0, "{name} has mode {mode:o} on the host");
    }
    assert!(
        out.contains("links-planted") && out.contains("junk-planted"),
        "{run}"
    );

    // Host commands answer promptly over the planted links, FIFO and sparse file, and
    // removing the pod follows none of them.
    for args in [
        &["status", uuid.as_str()][..],
        &["list", "--full"],
        &["cat-manifest", uuid.as_str()],
    ] {
        let started = Instant::now();
        world.ok(args);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?} was slow"
        );
    }
    assert_all_cleaned(&world);
    assert_eq!(
        fs::read_to_string(canary.join("keep")).unwrap(),
        "host file\n"
    );
    assert!(canary.join("hostsecret.sock").exists());
    assert!(!pwned.exists(), "a host command ran what the guest wrote");
}

#[test]
fn enter_and_stop_of_a_hostile_pod_run_only_host_code() {
    let world = RktWorld::new();
    let aci = attacker_aci(&world);
    let pwned = world.root.path().join("PWNED");
    let uuid_file = world.root.path().join("uuid");
    let script = format!(
        r#"{attack}
trap 'echo got-term; exit 0' TERM
while :; do sleep 1; done"#,
        attack = attack_script(world.root.path(), &pwned)
            .lines()
            .filter(|l| !l.contains("/vol/"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out_path = world.root.path().join("run.out");
    let mut child = world
        .command(&[
            "run",
            &format!("--uuid-file-save={}", uuid_file.display()),
            "--net=none",
            &aci,
            "--name=attacker",
            "--exec=/bin/sh",
            "--",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(world.root.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let output = || fs::read_to_string(&out_path).unwrap_or_default();
    while !output().contains("attacks-done") {
        assert!(
            started.elapsed() < POD_LIMIT,
            "the attack did not finish: {}",
            output()
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "rkt run ended early ({status}): {}\n--- stderr:\n{}",
                output(),
                fs::read_to_string(world.root.path().join("run.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!output().contains("wrote "), "{}", output());
    let uuid = uuid_from(&uuid_file);
    let entered = world.rkt(&["enter", "--app=attacker", &uuid, "/bin/echo", "entered"]);
    assert_eq!(entered.code(), 0, "{entered}");
    assert_eq!(entered.stdout.trim(), "entered");
    let stop = world.rkt(&["stop", &uuid]);
    assert_eq!(stop.code(), 0, "{stop}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", output());
    assert!(output().contains("got-term"), "{}", output());
    assert_all_cleaned(&world);
    assert!(!pwned.exists(), "a host command ran what the guest wrote");
}

/// The largest an app's log may grow: the cap on each of its two files (docs/security.md).
const LOG_CAP: u64 = 8 << 20;

#[test]
fn an_app_flooding_its_output_cannot_fill_the_disk_or_the_memory_of_rkt_run() {
    let world = RktWorld::new();
    let aci = attacker_aci(&world);
    let uuid_file = world.root.path().join("uuid");
    // 2 GiB on stdout (RKT_TEST_FLOOD_MIB to change it by hand); the pod then ends normally.
    let flood_mib: u64 = std::env::var("RKT_TEST_FLOOD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let mut command = world.command(&[
        "run",
        &format!("--uuid-file-save={}", uuid_file.display()),
        "--net=none",
        &aci,
        "--name=flood",
        "--exec=/bin/sh",
        "--",
        "-c",
        &format!("dd if=/dev/zero bs=1M count={flood_mib} 2>/dev/null; echo flood-done"),
    ]);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = child.wait().unwrap();
    let elapsed = started.elapsed();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(elapsed < Duration::from_secs(900), "{stderr}");
    // The largest child this test has waited for: `rkt run` (tar ran before, much smaller).
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for the call.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let uuid = uuid_from(&uuid_file);
    let logs = world
        .data_dir()
        .join("pods/run")
        .join(&uuid)
        .join("stage1-kvm/logs");
    let mut on_disk = 0;
    for entry in fs::read_dir(&logs).unwrap() {
        let entry = entry.unwrap();
        on_disk += entry.metadata().unwrap().len();
    }
    let current = fs::read(logs.join("flood.log")).unwrap();
    assert!(
        String::from_utf8_lossy(&current).contains("flood-done"),
        "the log keeps the newest output"
    );
    assert!(on_disk <= 2 * LOG_CAP, "{on_disk} bytes of logs");
    // ru_maxrss counts the guest's RAM too (it is mapped in this process): 128 MiB + 64.
    let max_rss_mib = usage.ru_maxrss / 1024;
    println!(
        "{flood_mib} MiB of app output: {:.1} s, rkt run's peak RSS {max_rss_mib} MiB, logs {on_disk} bytes",
        elapsed.as_secs_f64()
    );
    assert!(max_rss_mib < 400, "rkt run grew to {max_rss_mib} MiB");
    assert_all_cleaned(&world);
}
