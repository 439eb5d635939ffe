//! Apps isolated and hardened inside the guest, observed from inside the apps through the real
//! `rkt` and the installed stage1 image: the pod's own pid namespace (`/proc` lists the pod's
//! processes only; its PID 1 is guest-init's reaper, whose root is empty), each app's own mount
//! namespace (no mount of guest-init's in its mountinfo), rkt's default capability bounding set,
//! seccomp filter and no_new_privs, the masked and read-only paths, and what `--caps-retain`,
//! `--caps-remove`, `--seccomp`, `--oom-score-adj`, `--cpu-shares` and `--user` change; an
//! `enter` command gets the app's namespaces and hardening. Each test first checks that the
//! apps ran (their first line), then what they saw.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{
    assert_all_cleaned, busybox_aci, pod_consoles, pod_status as status, rkt_binary,
    run_with_limit, status_value as value, Finished, RktWorld, POD_LIMIT,
};

const IMAGE: &str = "example.com/busybox";

/// rkt's default bounding set (14 capabilities), as /proc/self/status prints it.
const DEFAULT_CAPS: &str = "00000000a80425fb";
/// The default set without CAP_NET_RAW (bit 13).
const DEFAULT_WITHOUT_NET_RAW: &str = "00000000a80405fb";
/// CAP_SYS_ADMIN (bit 21) alone.
const SYS_ADMIN_ONLY: &str = "0000000000200000";
/// Every capability of a 6.1 kernel (0..=40) but CAP_SYS_BOOT (22).
const ALL_BUT_BOOT: &str = "000001ffffbfffff";

/// What every probing app prints, each line prefixed with `NAME-`: that it ran, its status
/// fields, the processes it sees, its mounts, what the pod's PID 1 is and shows.
fn probe(name: &str) -> String {
    format!(
        "echo {name}-ran; \
         grep -E '^(CapBnd|CapEff|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t' \
           | sed 's/^/{name}-/'; \
         echo {name}-comms=$(cat /proc/[0-9]*/comm | sort | tr '\\n' ,); \
         echo {name}-pid1=$(cat /proc/1/comm); \
         if ls -A /proc/1/root/ 2>/dev/null | grep -q .; then echo {name}-pid1-root-has-files; \
         else echo {name}-pid1-root-empty-or-closed; fi; \
         echo {name}-mounts=$(awk '{{print $5}}' /proc/self/mountinfo | tr '\\n' ,); \
         echo {name}-oom=$(cat /proc/self/oom_score_adj)"
    )
}

/// The value of `NAME-KEY:`/`NAME-KEY=` lines.
fn field<'a>(run: &'a Finished, name: &str, key: &str) -> &'a str {
    let prefix = format!("{name}-{key}");
    run.stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_prefix(':').or_else(|| rest.strip_prefix('=')))
        })
        .unwrap_or_else(|| panic!("no {prefix} line: {run}"))
}

fn has_line(run: &Finished, line: &str) -> bool {
    run.stdout.lines().any(|l| l == line)
}

fn assert_ran(run: &Finished, world: &RktWorld, names: &[&str]) {
    for name in names {
        assert!(
            has_line(run, &format!("{name}-ran")),
            "app {name} did not run: {run}\n{}",
            pod_consoles(world)
        );
    }
}

/// Common checks of the pid and mount namespaces, for an app `name`.
fn assert_namespaces(run: &Finished, name: &str) {
    // The pod's PID 1 is the reaper, not guest-init: a pid namespace of its own. No kernel
    // thread (kthreadd is in every guest's root namespace) and only the apps' processes (three
    // shells with their pipelines at most, and app processes still being set up, which show
    // guest-init's name until they exec).
    assert_eq!(field(run, name, "pid1"), "rkt-pod-reaper", "{run}");
    let comms = field(run, name, "comms");
    assert!(
        !comms.split(',').any(|c| c == "kthreadd"),
        "{name}: {comms}"
    );
    assert!(comms.split(',').count() <= 30, "{name}: too many: {comms}");
    assert!(
        has_line(run, &format!("{name}-pid1-root-empty-or-closed")),
        "{run}"
    );
    // Nothing of guest-init's mounts: no pod share, no /rkt, no cgroup tree of the guest.
    let mounts = field(run, name, "mounts");
    for mount in mounts.split(',').filter(|m| !m.is_empty()) {
        assert!(
            !mount.starts_with("/rkt") && !mount.starts_with("/sys/fs/cgroup"),
            "{name}: {mount} in {mounts}"
        );
    }
    assert!(mounts.split(',').any(|m| m == "/proc"), "{mounts}");
}

#[test]
fn default_hardening_namespaces_and_masked_paths() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    // The default app waits (up to 20 s) until the user app runs, and lists the uids at once,
    // before its slower probe: under emulation the probe can outlast the user app's sleep. `cat`
    // reads the status files, not busybox awk: awk stops at the first process that has gone.
    let default = format!(
        "i=0; while [ $i -lt 200 ] && ! grep -qs '^Uid:[[:space:]]*1000' /proc/[0-9]*/status; \
         do sleep 0.1; i=$((i+1)); done; \
         echo default-uids=$(cat /proc/[0-9]*/status 2>/dev/null | awk '/^Uid:/ {{print $2}}' | sort -u | tr '\\n' ,); \
         {}; \
         echo default-timer_list=$( [ -e /proc/timer_list ] && wc -c < /proc/timer_list || echo absent); \
         echo default-firmware=$(ls -A /sys/firmware | wc -l); \
         echo default-ro=$(awk '$5 == \"/proc/sys\" || $5 == \"/sys/firmware\" || $5 == \"/sys\" \
           {{ split($6, o, \",\"); print $5 \":\" o[1] }}' /proc/self/mountinfo | sort -u | tr '\\n' ,); \
         sh -c 'echo x > /proc/sys/kernel/domainname' 2>&1 | sed 's/^/default-sysctl: /'; \
         mkdir -p /tmp/m; mount -t tmpfs t /tmp/m; echo default-mount-status=$?; \
         sleep 2",
        probe("default")
    );
    let run = world.rkt(&[
        "run",
        "--net=none",
        &aci,
        "--name=default",
        "--exec=/bin/sh",
        "--",
        "-c",
        &default,
        "---",
        &aci,
        "--name=remover",
        "--caps-remove=CAP_NET_RAW",
        "--exec=/bin/sh",
        "--",
        "-c",
        &format!("{}; sleep 2", probe("remover")),
        "---",
        &aci,
        "--name=user",
        "--user=user1",
        "--group=grp1",
        "--exec=/bin/sh",
        "--",
        "-c",
        &format!("{}; sleep 4", probe("user")),
    ]);
    assert_eq!(run.code(), 0, "{run}\n{}", pod_consoles(&world));
    assert_ran(&run, &world, &["default", "remover", "user"]);
    for name in ["default", "remover", "user"] {
        assert_namespaces(&run, name);
    }
    // One pid namespace for the pod: the default app (root) sees the user app's processes.
    let uids = field(&run, "default", "uids");
    assert!(uids.split(',').any(|u| u == "1000"), "{run}");

    // rkt's defaults: the bounding set, seccomp, and no_new_privs (root without CAP_SYS_ADMIN
    // needs it for the filter, as with rkt).
    assert_eq!(field(&run, "default", "CapBnd"), DEFAULT_CAPS, "{run}");
    assert_eq!(field(&run, "default", "CapEff"), DEFAULT_CAPS, "{run}");
    assert_eq!(field(&run, "default", "Seccomp"), "2", "{run}");
    assert_eq!(field(&run, "default", "NoNewPrivs"), "1", "{run}");
    assert_eq!(field(&run, "default", "oom"), "0", "{run}");
    // The default filter kills a process calling mount(2) (SIGSYS: 128 + 31).
    assert_eq!(field(&run, "default", "mount-status"), "159", "{run}");
    // Masked: timer_list empty (when the kernel has it), /sys/firmware an empty tmpfs;
    // read-only: /proc/sys, /sys/firmware's tmpfs, /sys.
    let timer_list = field(&run, "default", "timer_list");
    assert!(timer_list == "0" || timer_list == "absent", "{run}");
    assert_eq!(field(&run, "default", "firmware"), "0", "{run}");
    assert_eq!(
        field(&run, "default", "ro"),
        "/proc/sys:ro,/sys/firmware:ro,/sys:ro,",
        "{run}"
    );
    assert!(
        field(&run, "default", "sysctl").contains("Read-only file system"),
        "{run}"
    );

    assert_eq!(
        field(&run, "remover", "CapBnd"),
        DEFAULT_WITHOUT_NET_RAW,
        "{run}"
    );
    assert_eq!(field(&run, "remover", "Seccomp"), "2", "{run}");

    // Not root: the bounding set stays, nothing effective, no_new_privs for the filter.
    assert_eq!(field(&run, "user", "CapBnd"), DEFAULT_CAPS, "{run}");
    assert_eq!(field(&run, "user", "CapEff"), "0000000000000000", "{run}");
    assert_eq!(field(&run, "user", "Seccomp"), "2", "{run}");
    assert_eq!(field(&run, "user", "NoNewPrivs"), "1", "{run}");
    assert_all_cleaned(&world);
}

#[test]
fn retain_set_seccomp_override_oom_score_and_cpu_weight() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    // CAP_SYS_ADMIN kept and a remove-set without mount: the app may mount its own cgroup2
    // view to read its cpu.weight. sethostname is removed with ENOSYS.
    let tuned = format!(
        "{}; \
         hostname other 2>&1 | sed 's/^/tuned-hostname: /'; \
         mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && g=$(cut -d: -f3 /proc/self/cgroup) \
           && echo tuned-weight=$(cat /tmp/cg$g/cpu.weight)",
        probe("tuned")
    );
    let run = world.rkt(&[
        "run",
        "--net=none",
        &aci,
        "--name=tuned",
        "--caps-retain=CAP_SYS_ADMIN",
        "--seccomp=mode=remove,errno=ENOSYS,sethostname,reboot",
        "--oom-score-adj=123",
        "--cpu-shares=2048",
        "--exec=/bin/sh",
        "--",
        "-c",
        &tuned,
    ]);
    assert_eq!(run.code(), 0, "{run}\n{}", pod_consoles(&world));
    assert_ran(&run, &world, &["tuned"]);
    assert_namespaces(&run, "tuned");
    assert_eq!(field(&run, "tuned", "CapBnd"), SYS_ADMIN_ONLY, "{run}");
    assert_eq!(field(&run, "tuned", "CapEff"), SYS_ADMIN_ONLY, "{run}");
    assert_eq!(field(&run, "tuned", "Seccomp"), "2", "{run}");
    // Root keeping CAP_SYS_ADMIN installs the filter without no_new_privs.
    assert_eq!(field(&run, "tuned", "NoNewPrivs"), "0", "{run}");
    assert!(
        field(&run, "tuned", "hostname").contains("Function not implemented"),
        "{run}"
    );
    assert_eq!(field(&run, "tuned", "oom"), "123", "{run}");
    // 2048 shares = cpu.weight 200 (1024 = 100).
    assert_eq!(field(&run, "tuned", "weight"), "200", "{run}");
    assert_all_cleaned(&world);
}

#[test]
fn unapplied_isolators_are_named_and_enter_gets_the_apps_view() {
    let world = RktWorld::new();
    let aci = e2e::busybox_aci_with_app(
        world.root.path(),
        IMAGE,
        r#"{"exec":["/bin/sh","-c","echo sleeper-ran; sleep 600"],"user":"0","group":"0",
            "isolators":[{"name":"os/linux/apparmor-profile","value":{"name":"p"}},
                         {"name":"os/linux/no-new-privileges","value":true}]}"#,
    );
    let aci = aci.display().to_string();
    let uuid_file = world.root.path().join("uuid");
    let mut child = world
        .command(&[
            "run",
            "--net=none",
            &format!("--uuid-file-save={}", uuid_file.display()),
            &aci,
            "--name=sleeper",
            "--caps-remove=CAP_KILL",
        ])
        .stdin(Stdio::null())
        .stdout(File::create(world.root.path().join("run.out")).unwrap())
        .stderr(File::create(world.root.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let uuid = loop {
        assert!(started.elapsed() < POD_LIMIT, "no UUID saved");
        if let Ok(uuid) = fs::read_to_string(&uuid_file) {
            if uuid.len() == 36 {
                break uuid;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ready = world.rkt(&["status", "--wait-ready=150s", &uuid]);
    assert_eq!(ready.code(), 0, "{ready}\n{}", pod_consoles(&world));

    // enter: the app's root and /proc (the sleeping app is there, guest-init is not), its
    // bounding set (without CAP_KILL), its filter and no_new_privs.
    let entered = world.rkt(&[
        "enter",
        "--app=sleeper",
        &uuid,
        "/bin/sh",
        "-c",
        &probe("enter"),
    ]);
    assert_eq!(entered.code(), 0, "{entered}");
    assert!(has_line(&entered, "enter-ran"), "{entered}");
    assert_namespaces(&entered, "enter");
    assert!(
        field(&entered, "enter", "comms").contains("sleep,"),
        "{entered}"
    );
    let without_kill = "00000000a80425db";
    assert_eq!(
        field(&entered, "enter", "CapBnd"),
        without_kill,
        "{entered}"
    );
    assert_eq!(field(&entered, "enter", "Seccomp"), "2", "{entered}");
    assert_eq!(field(&entered, "enter", "NoNewPrivs"), "1", "{entered}");

    let stop = world.rkt(&["stop", &uuid]);
    assert_eq!(stop.code(), 0, "{stop}");
    let deadline = Instant::now() + POD_LIMIT;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "rkt run did not end after stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(143), "{}", pod_consoles(&world));
    let out = fs::read_to_string(world.root.path().join("run.out")).unwrap();
    assert!(out.contains("sleeper-ran"), "{out}");
    // The apparmor isolator is not applied: one console line names it (guest-init's errors
    // go to the console, which the stage1 keeps without --debug).
    let consoles = pod_consoles(&world);
    assert!(
        consoles
            .lines()
            .any(|l| l.contains("isolator os/linux/apparmor-profile is not applied")),
        "{consoles}"
    );
    assert!(!consoles.contains("isolator os/linux/no-new-privileges is not applied"));
    let st = status(&world, &uuid);
    assert_eq!(value(&st, "app-sleeper"), Some("143"), "{st:?}");
    assert_all_cleaned(&world);
}

/// `--insecure-options=capabilities,paths,seccomp` turns the hardening off: stage0 passes
/// `--disable-capabilities-restriction --disable-paths --disable-seccomp` to the kvm stage1,
/// which hands guest-init `rkt.disable=capabilities,paths,seccomp`.
#[test]
fn insecure_options_turn_the_hardening_off() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    let script = format!(
        "{}; echo open-ro=$(awk '$5 == \"/proc/sys\"' /proc/self/mountinfo | wc -l)",
        probe("open")
    );
    let mut command = Command::new(rkt_binary());
    command
        .arg(format!("--dir={}", world.data_dir().display()))
        .arg(format!(
            "--local-config={}",
            world.root.path().join("etc-rkt").display()
        ))
        .arg("--insecure-options=image,capabilities,paths,seccomp")
        .args([
            "run",
            "--net=none",
            &aci,
            "--name=open",
            "--exec=/bin/sh",
            "--",
            "-c",
            &script,
        ]);
    let run = run_with_limit(&mut command, POD_LIMIT);
    assert_eq!(run.code(), 0, "{run}\n{}", pod_consoles(&world));
    assert_ran(&run, &world, &["open"]);
    // The namespaces stay: they are not something rkt let users turn off.
    assert_namespaces(&run, "open");
    assert_eq!(field(&run, "open", "CapBnd"), ALL_BUT_BOOT, "{run}");
    assert_eq!(field(&run, "open", "Seccomp"), "0", "{run}");
    assert_eq!(field(&run, "open", "NoNewPrivs"), "0", "{run}");
    assert_eq!(field(&run, "open", "ro"), "0", "{run}");
    assert_all_cleaned(&world);
}
