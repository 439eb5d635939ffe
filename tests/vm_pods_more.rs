//! More pods end to end, through the real `rkt` and the installed kvm stage1 image, each test
//! grouping many checks per VM boot (see tests/vm_pods.rs for the first set):
//! - Docker and OCI images (built here from busybox-static) run as one pod: the image config's
//!   environment, user, group and working directory applied, exit codes of two apps;
//! - each `--stage1-*` flag selecting the kvm stage1;
//! - the app flags not covered by vm_pods.rs: `--user`/`--group` as numbers and as file paths,
//!   `--supplementary-gids`, `--set-env-file`, `--inherit-env`, `--readonly-rootfs`, `--exec`
//!   with arguments after `--`, pre-start and post-stop event handlers;
//! - the VM's size and the per-app cgroup limits from `--memory` and `--cpu`;
//! - the error cases (missing volume source, missing working directory, exec path not in the
//!   image, image not in the store with `--pull-policy=never`, not root, no KVM, unknown flag):
//!   one clear line, 254 (2 for usage), nothing left behind;
//! - pods writing 400 MiB to memory-backed volumes: within the VMM's memory limit on a tmpfs, an
//!   out-of-memory kill said as such on a ramfs.
//!
//! Every test ends with `rkt gc` and checks that no pod directory, mount or process is left.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use e2e::{
    assert_all_cleaned, busybox_aci, busybox_aci_with_app, busybox_docker_archive,
    busybox_oci_layout, mounts_under, pod_consoles, pod_status, processes_under, rkt_bin_dir,
    run_with_limit, status_value, uuid_from, RktWorld, ScratchFs, POD_LIMIT, POD_STATES,
};

const IMAGE: &str = "example.com/busybox";

/// The lines of `text`, for "this exact line is there" checks.
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

fn assert_lines(run: &e2e::Finished, lines: &[&str]) {
    for line in lines {
        assert!(has_line(&run.stdout, line), "stdout lacks {line:?}: {run}");
    }
}

/// Reads the value of `key` from `/proc/meminfo`-style text (`MemTotal:  123456 kB`).
fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn docker_and_oci_images_run_as_one_pod_with_their_config() {
    let world = RktWorld::new();
    // The Docker image: environment, numeric user:group and working directory from its config;
    // the OCI image exits 42 after the Docker app has finished with 0: the pod's code is 42.
    let docker = busybox_docker_archive(
        world.root.path(),
        "docker-bb",
        "example.com/docker-bb:1.0",
        r#"{"Env":["PATH=/bin","GREETING=hello from docker"],"User":"1000:2000",
            "WorkingDir":"/home/user1","Entrypoint":["/bin/sh","-c"],
            "Cmd":["echo docker-greeting=$GREETING; echo docker-id=$(id -u):$(id -g); echo docker-pwd=$(pwd); echo docker-path=$PATH; echo cpus=$(nproc)"]}"#,
    );
    let oci = busybox_oci_layout(
        world.root.path(),
        "oci-bb",
        "1.0",
        r#"{"Env":["ONLY_OCI=yes"],"Entrypoint":["/bin/sh","-c"],
            "Cmd":["sleep 1; echo oci-env=$ONLY_OCI; echo oci-id=$(id -u):$(id -g); echo oci-pwd=$(pwd); exit 42"]}"#,
    );
    let uuid_file = world.root.path().join("uuid");
    let run = world.rkt(&[
        "run",
        &format!("--uuid-file-save={}", uuid_file.display()),
        &docker,
        "--name=docker",
        // More CPUs than the host has: the VM gets the host's (the emulated host has 2).
        "--cpu=3",
        "---",
        &oci,
        "--name=oci",
    ]);
    assert_eq!(run.code(), 42, "{run}\n{}", pod_consoles(&world));
    assert_lines(
        &run,
        &[
            "docker-greeting=hello from docker",
            "docker-id=1000:2000",
            "docker-pwd=/home/user1",
            "docker-path=/bin",
            "oci-env=yes",
            "oci-id=0:0",
            "oci-pwd=/",
        ],
    );
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = host_cpus.min(3);
    assert!(has_line(&run.stdout, &format!("cpus={cpus}")), "{run}");
    let st = pod_status(&world, &uuid_from(&uuid_file));
    assert_eq!(status_value(&st, "state"), Some("exited"), "{st:?}");
    assert_eq!(status_value(&st, "app-docker"), Some("0"), "{st:?}");
    assert_eq!(status_value(&st, "app-oci"), Some("42"), "{st:?}");
    assert_all_cleaned(&world);
}

#[test]
fn every_stage1_flag_selects_the_kvm_stage1() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    let installed = rkt_bin_dir().join("stage1-kvm.aci");
    // A copy elsewhere, so --stage1-path and --stage1-url name a file that is not the default.
    let copy = world.root.path().join("my-stage1.aci");
    fs::copy(&installed, &copy).unwrap();
    let id = world.ok(&["fetch", &copy.display().to_string()]);
    let id = id.trim().to_string();
    assert!(id.starts_with("sha512-"), "{id}");

    let selections = [
        format!("--stage1-path={}", copy.display()),
        "--stage1-name=coreos.com/rkt/stage1-kvm".to_string(),
        format!("--stage1-hash={}", &id[..20]),
        format!("--stage1-url=file://{}", copy.display()),
        "--stage1-from-dir=stage1-kvm.aci".to_string(),
    ];
    for (i, flag) in selections.iter().enumerate() {
        let code = 10 + i as i32;
        let uuid_file = world.root.path().join(format!("uuid{i}"));
        let run = world.rkt(&[
            "run",
            flag,
            &format!("--uuid-file-save={}", uuid_file.display()),
            &aci,
            "--exec=/bin/sh",
            "--",
            "-c",
            &format!("echo via-stage1-flag-{i}; exit {code}"),
        ]);
        assert_eq!(run.code(), code, "{flag}: {run}\n{}", pod_consoles(&world));
        assert!(
            has_line(&run.stdout, &format!("via-stage1-flag-{i}")),
            "{flag}: {run}"
        );
        let uuid = uuid_from(&uuid_file);
        let manifest = fs::read_to_string(
            world
                .data_dir()
                .join("pods/run")
                .join(&uuid)
                .join("stage1/manifest"),
        )
        .unwrap();
        assert!(
            manifest.contains("\"coreos.com/rkt/stage1-kvm\""),
            "{flag}: {manifest}"
        );
    }
    assert_all_cleaned(&world);
}

#[test]
fn app_flags_identity_environment_readonly_rootfs_exec_args_and_event_handlers() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    // An image whose app has both event handlers; they write into a host volume.
    let handlers = busybox_aci_with_app(
        world.root.path(),
        "example.com/handlers",
        r#"{"exec":["/bin/sh","-c","if [ -f /rw/pre-start ]; then echo saw-pre-start; fi; exit 3"],
            "user":"0","group":"0",
            "eventHandlers":[
              {"name":"pre-start","exec":["/bin/sh","-c","echo pre > /rw/pre-start"]},
              {"name":"post-stop","exec":["/bin/sh","-c","echo post > /rw/post-stop"]}],
            "mountPoints":[{"name":"rw","path":"/rw"}]}"#,
    );
    let handlers = handlers.display().to_string();
    let rw = world.root.path().join("host-rw");
    fs::create_dir_all(&rw).unwrap();
    let env_file = world.root.path().join("env");
    fs::write(&env_file, "FROM_FILE=file\nOVERRIDDEN=by-file\n").unwrap();

    let uuid_file = world.root.path().join("uuid");
    let mut command = world.command(&[
        "run",
        &format!("--uuid-file-save={}", uuid_file.display()),
        "--inherit-env",
        &format!("--set-env-file={}", env_file.display()),
        "--set-env=OVERRIDDEN=by-flag",
        &format!("--volume=rw,kind=host,source={}", rw.display()),
        &aci,
        "--name=numbers",
        "--user=1000",
        "--group=2000",
        "--supplementary-gids=2000,3000",
        "--exec=/bin/sh",
        "--",
        "-c",
        "echo numbers=$(id -u):$(id -g) groups=$(id -G)",
        "---",
        &aci,
        "--name=files",
        // A file path: its owner is the user (home/user1 is 1000:1000), resp. group.
        "--user=/home/user1",
        "--group=/home/user1",
        "--exec=/bin/sh",
        "--",
        "-c",
        "echo files=$(id -u):$(id -g)",
        "---",
        &aci,
        "--name=env",
        "--readonly-rootfs=true",
        "--exec=/bin/sh",
        "--",
        "-c",
        "echo env=$FROM_FILE/$OVERRIDDEN/$INHERITED_ONE; \
         if touch /made 2>/dev/null; then echo rootfs-writable; else echo rootfs-read-only; fi; \
         echo \"args=$1|$2|$#\"",
        "sh",
        "two words",
        "--dashed",
        "---",
        &aci,
        "--name=reboot",
        // An app that tries to halt or reboot the guest VM: refused (no CAP_SYS_BOOT), so
        // the pod ends as usual instead of hanging (halt) or losing its statuses (reboot).
        "--exec=/bin/sh",
        "--",
        "-c",
        "halt -f 2>/dev/null; reboot -f 2>/dev/null; echo still-running-after-halt-and-reboot",
        "---",
        &handlers,
        "--name=handlers",
    ]);
    command.env("INHERITED_ONE", "from-parent");
    let run = run_with_limit(&mut command, POD_LIMIT);
    // The first app in manifest order with a non-zero status: handlers, 3.
    assert_eq!(run.code(), 3, "{run}\n{}", pod_consoles(&world));
    assert_lines(
        &run,
        &[
            "numbers=1000:2000 groups=2000 3000",
            "files=1000:1000",
            "env=file/by-flag/from-parent",
            "rootfs-read-only",
            "args=two words|--dashed|2",
            "saw-pre-start",
            "still-running-after-halt-and-reboot",
        ],
    );
    assert_eq!(fs::read_to_string(rw.join("pre-start")).unwrap(), "pre\n");
    assert_eq!(fs::read_to_string(rw.join("post-stop")).unwrap(), "post\n");
    let st = pod_status(&world, &uuid_from(&uuid_file));
    for (app, code) in [
        ("numbers", "0"),
        ("files", "0"),
        ("env", "0"),
        ("handlers", "3"),
    ] {
        assert_eq!(
            status_value(&st, &format!("app-{app}")),
            Some(code),
            "{st:?}"
        );
    }
    assert_all_cleaned(&world);
}

#[test]
fn vm_size_and_per_app_cgroup_limits_from_isolators() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    // Each app prints the VM's memory and CPUs, then its own cgroup's limits (cgroup2 mounted
    // on a scratch directory: the app is root in the guest, and keeps CAP_SYS_ADMIN and a
    // seccomp filter without mount(2) for it; rkt's defaults allow neither).
    let show = |name: &str| {
        format!(
            "grep MemTotal /proc/meminfo | sed 's/^/{name}-/'; echo {name}-cpus=$(nproc); \
             mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && \
             g=$(cut -d: -f3 /proc/self/cgroup) && \
             echo {name}-memory.max=$(cat /tmp/cg$g/memory.max) && \
             echo {name}-cpu.max=$(cat /tmp/cg$g/cpu.max)"
        )
    };
    let (big, small) = (show("big"), show("small"));
    let run = world.rkt(&[
        "run",
        &aci,
        "--name=big",
        "--caps-retain=CAP_SYS_ADMIN",
        "--seccomp=mode=remove,errno=EPERM,reboot",
        "--memory=200M",
        "--cpu=1000m",
        "--exec=/bin/sh",
        "--",
        "-c",
        &big,
        "---",
        &aci,
        "--name=small",
        "--caps-retain=CAP_SYS_ADMIN",
        "--seccomp=mode=remove,errno=EPERM,reboot",
        "--memory=100M",
        "--cpu=250m",
        "--exec=/bin/sh",
        "--",
        "-c",
        &small,
    ]);
    assert_eq!(run.code(), 0, "{run}\n{}", pod_consoles(&world));
    // vCPUs: 1 + 0.25 rounded up = 2 (the emulated host has 2).
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = host_cpus.min(2);
    // Memory: 300 MB = 286.1 MiB, rounded up to 287, plus the 64 MiB overhead: 351 MiB of RAM;
    // the guest's MemTotal is that minus what the kernel keeps (a few MiB).
    for app in ["big", "small"] {
        let total = meminfo_kib(&run.stdout, &format!("{app}-MemTotal:"));
        assert!(
            (300 * 1024..=351 * 1024).contains(&total),
            "{app}: MemTotal {total} kB for a 351 MiB VM: {run}"
        );
    }
    assert_lines(
        &run,
        &[
            &format!("big-cpus={cpus}"),
            &format!("small-cpus={cpus}"),
            // The kernel keeps whole pages: 200 MB and 100 MB rounded down to 4 KiB.
            "big-memory.max=199999488",
            "small-memory.max=99999744",
            "big-cpu.max=100000 100000",
            "small-cpu.max=25000 100000",
        ],
    );
    assert_all_cleaned(&world);
}

/// Runs `rkt ARGS` expecting `code` and exactly one `rkt:` line on stderr mentioning `says`.
fn fails_with(world: &RktWorld, args: &[&str], code: i32, says: &str) {
    let run = world.rkt(args);
    assert_eq!(run.code(), code, "rkt {args:?}: {run}");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines.iter().any(|l| l.contains(says)),
        "rkt {args:?}: stderr does not mention {says:?}: {run}"
    );
    // Runtime errors end with one `rkt: ...` line saying what is wrong (after the notes of
    // the steps that went fine); usage errors are clap's (the error and a hint).
    if code == 254 {
        let last = lines.last().copied().unwrap_or_default();
        assert!(
            last.starts_with("rkt: ") && last.contains(says),
            "rkt {args:?}: the last line names the problem: {run}"
        );
    }
}

#[test]
fn errors_are_one_clear_line_254_and_leave_nothing_behind() {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    let missing = world.root.path().join("no-such-dir");
    let missing = missing.display().to_string();

    // Usage mistakes: 2.
    fails_with(
        &world,
        &["run", "--no-such-flag", &aci],
        2,
        "--no-such-flag",
    );
    // Runtime errors: 254, each naming what is wrong.
    fails_with(
        &world,
        &[
            "run",
            &format!("--volume=data,kind=host,source={missing}"),
            &aci,
            "--mount=volume=data,target=/data",
        ],
        254,
        &missing,
    );
    fails_with(
        &world,
        &[
            "run",
            &aci,
            "--working-dir=/no/such/dir",
            "--exec=/bin/true",
        ],
        254,
        "/no/such/dir",
    );
    fails_with(
        &world,
        &["run", &aci, "--exec=/no/such/program"],
        254,
        "/no/such/program",
    );
    fails_with(
        &world,
        &["run", "--pull-policy=never", "example.com/not-in-the-store"],
        254,
        "example.com/not-in-the-store",
    );

    // Not root: rkt as nobody (the data dir is made reachable, so that the refusal is rkt's
    // own and not a permission error on the way).
    for dir in [world.root.path(), world.data_dir().as_path()] {
        if dir.exists() {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let mut nobody = Command::new("setpriv");
    nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(world.command(&[]).get_program())
        .args(world.command(&["run", &aci]).get_args());
    let run = run_with_limit(&mut nobody, POD_LIMIT);
    assert_eq!(run.code(), 254, "{run}\n{}", pod_consoles(&world));
    assert!(run.stderr.contains("root"), "{run}");

    // Nothing was left: no pod in any state, nothing mounted, nothing running.
    for state in POD_STATES {
        assert!(world.pods_in(state).is_empty(), "pods left in {state}/");
    }
    assert!(mounts_under(&world.data_dir()).is_empty());
    assert!(processes_under(&world.data_dir()).is_empty());

    // No KVM: /dev/kvm hidden behind /dev/null in a mount namespace of our own. stage0 knows
    // nothing of KVM; the kvm stage1 checks the host first thing and says so in one line, and
    // the pod is left exited for gc, as for any failure once the stage1 runs (rkt's way).
    let mut no_kvm = Command::new("unshare");
    no_kvm
        .args(["--mount", "--propagation=private", "--", "sh", "-c"])
        .arg("mount --bind /dev/null /dev/kvm && exec \"$@\"")
        .arg("sh")
        .arg(world.command(&[]).get_program())
        .args(world.command(&["run", &aci]).get_args());
    let run = run_with_limit(&mut no_kvm, POD_LIMIT);
    assert_eq!(run.code(), 254, "{run}\n{}", pod_consoles(&world));
    let stage1_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("stage1-kvm:"))
        .collect();
    assert_eq!(stage1_lines.len(), 1, "{run}");
    assert!(stage1_lines[0].contains("/dev/kvm"), "{run}");
    world.ok(&["gc", "--grace-period=0s"]);
    world.ok(&["gc", "--grace-period=0s"]);
    for state in ["run", "exited-garbage", "garbage"] {
        assert!(world.pods_in(state).is_empty(), "pods left in {state}/");
    }

    // A failure inside the pod (the volume's source vanishes between prepare and run): the
    // stage1 says so, 254, and gc cleans the pod.
    let source = world.root.path().join("vanishing");
    fs::create_dir_all(&source).unwrap();
    let prepared = world.ok(&[
        "prepare",
        "--quiet",
        &format!("--volume=data,kind=host,source={}", source.display()),
        &aci,
        "--mount=volume=data,target=/data",
    ]);
    fs::remove_dir(&source).unwrap();
    let run = world.rkt(&["run-prepared", prepared.trim()]);
    assert_eq!(run.code(), 254, "{run}\n{}", pod_consoles(&world));
    assert!(run.stderr.contains(&source.display().to_string()), "{run}");
    let st = pod_status(&world, prepared.trim());
    assert_eq!(status_value(&st, "state"), Some("exited"), "{st:?}");
    assert_all_cleaned(&world);
}

/// File data a pod writes to a memory-backed volume stays in memory, charged to the VMM's
/// cgroup. On a tmpfs, whose size bounds it, the cgroup's memory.max grows by that size: 400
/// MiB written by a pod of 128 MiB RAM (whose VMM may otherwise use 128 MiB more) succeed. On a
/// ramfs, which has no size, the kernel's out-of-memory killer ends the VMM at its memory.max,
/// and `rkt run` says so in one line that names what counts and the fix (254); nothing is left
/// behind either way.
#[test]
fn a_pod_writing_to_memory_backed_volumes_fits_a_tmpfs_and_is_ended_clearly_on_a_ramfs() {
    // The pod's own directory on a disk (TMPDIR may be a tmpfs, which would add its size).
    let scratch = ScratchFs::new();
    let world = RktWorld::in_dir(scratch.path());
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    for (kind, options) in [("tmpfs", "size=1g"), ("ramfs", "mode=0755")] {
        let dir = world.root.path().join(kind);
        fs::create_dir(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", kind, "-o", options, "rkt-e2e-mem"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a {kind} on {}", dir.display());
        // A 64 MiB app: a VM of 64 + 64 MiB.
        let run = world.rkt(&[
            "run",
            &format!("--volume=mem,kind=host,source={}", dir.display()),
            &aci,
            "--memory=64M",
            "--mount=volume=mem,target=/mem",
            "--exec=/bin/sh",
            "--",
            "-c",
            "dd if=/dev/zero of=/mem/fill bs=1M count=400 2>/dev/null && echo wrote",
        ]);
        let _ = fs::remove_file(dir.join("fill"));
        let unmounted = Command::new("umount").arg(&dir).status().unwrap();
        assert!(unmounted.success());
        if kind == "tmpfs" {
            assert_eq!(run.code(), 0, "{run}\n{}", pod_consoles(&world));
            assert!(run.stdout.contains("wrote"), "{run}");
        } else {
            assert_eq!(run.code(), 254, "{run}\n{}", pod_consoles(&world));
            assert!(
                run.stderr.contains("out-of-memory killer") && run.stderr.contains("(ramfs)"),
                "{run}"
            );
            assert!(!run.stdout.contains("wrote"), "{run}");
        }
    }
    assert_all_cleaned(&world);
}
