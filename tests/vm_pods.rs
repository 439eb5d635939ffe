//! Pods end to end: `rkt run --stage1=kvm` through the real `rkt` binary and the installed
//! stage1 image (target/release/stage1-kvm.aci), on busybox ACIs built here, with a temporary
//! `--dir`. Each test boots few VMs and checks many things per boot: exit code propagation,
//! the apps' stdout/stderr and logs, environment, user/group, working directory, volumes
//! (host read-only and read-write, an empty one shared by two apps), status/list after exit,
//! gc, and that nothing is left mounted or running.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::{
    assert_all_cleaned, busybox_aci, mounts_under, pod_status as status, sha256_digest,
    status_value as value, uuid_from, RktWorld, ScratchFs,
};

const IMAGE: &str = "example.com/busybox";

/// A world with the busybox image written to disk; returns it and the image path.
fn world() -> (RktWorld, String) {
    world_in(RktWorld::new())
}

fn world_in(world: RktWorld) -> (RktWorld, String) {
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    (world, aci.display().to_string())
}

#[test]
fn one_pod_environment_user_workdir_output_and_volumes() {
    // On ext4, so that rkt mounts overlays on an ordinary disk file system.
    let scratch = ScratchFs::new();
    let (world, aci) = world_in(RktWorld::in_dir(scratch.path()));
    let ro = world.root.path().join("host-ro");
    let rw = world.root.path().join("host-rw");
    fs::create_dir_all(&ro).unwrap();
    fs::create_dir_all(&rw).unwrap();
    fs::write(ro.join("in.txt"), "from the host\n").unwrap();
    let uuid_file = world.root.path().join("uuid");

    let show = "echo out-line; echo err-line >&2; \
                echo id=$(id -u):$(id -g) groups=$(id -G); echo pwd=$(pwd); \
                echo env=$POD_WIDE/$APP_ONLY/$AC_APP_NAME/$container; echo path=$PATH; \
                echo host=$(hostname)";
    let writer = "cat /ro/in.txt; \
                  if echo x > /ro/nope 2>/dev/null; then echo ro-writable; else echo ro-refused; fi; \
                  echo written > /rw/out.txt; echo hello > /shared/from-writer; echo writer-done";
    let reader = "i=0; while [ ! -f /shared/from-writer ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
                  cat /shared/from-writer > /rw/seen-by-reader; echo reader-done";
    let run = world.rkt(&[
        "run",
        &format!("--uuid-file-save={}", uuid_file.display()),
        "--set-env=POD_WIDE=pod",
        "--hostname=box1",
        &format!(
            "--volume=ro,kind=host,source={},readOnly=true",
            ro.display()
        ),
        &format!("--volume=rw,kind=host,source={}", rw.display()),
        "--volume=shared,kind=empty,mode=0777",
        &aci,
        "--name=show",
        "--exec=/bin/sh",
        "--user=user1",
        "--group=grp1",
        "--working-dir=/home/user1",
        "--environment=APP_ONLY=app",
        "--",
        "-c",
        show,
        "---",
        &aci,
        "--name=writer",
        "--exec=/bin/sh",
        "--mount=volume=ro,target=/ro",
        "--mount=volume=rw,target=/rw",
        "--mount=volume=shared,target=/shared",
        "--",
        "-c",
        writer,
        "---",
        &aci,
        "--name=reader",
        "--exec=/bin/sh",
        "--mount=volume=rw,target=/rw",
        "--mount=volume=shared,target=/shared",
        "--",
        "-c",
        reader,
    ]);
    assert_eq!(run.code(), 0, "{run}");
    assert!(!run.stderr.contains("disabling overlay"), "{run}");
    let out = &run.stdout;
    for line in [
        "out-line",
        "id=1000:1000 groups=1000",
        "pwd=/home/user1",
        "env=pod/app/show/rkt",
        "path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "host=box1",
        "from the host",
        "ro-refused",
        "writer-done",
        "reader-done",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "stdout lacks {line:?}: {run}"
        );
    }
    assert!(
        !out.contains("err-line"),
        "stderr leaked into stdout: {run}"
    );
    assert!(run.stderr.lines().any(|l| l == "err-line"), "{run}");

    // The host saw the writes; the read-only volume stayed untouched.
    assert_eq!(fs::read_to_string(rw.join("out.txt")).unwrap(), "written\n");
    assert_eq!(
        fs::read_to_string(rw.join("seen-by-reader")).unwrap(),
        "hello\n"
    );
    assert!(!ro.join("nope").exists());

    // Status, list and the per-app logs after exit.
    let uuid = uuid_from(&uuid_file);
    let st = status(&world, &uuid);
    assert_eq!(value(&st, "state"), Some("exited"), "{st:?}");
    for app in ["show", "writer", "reader"] {
        assert_eq!(value(&st, &format!("app-{app}")), Some("0"), "{st:?}");
    }
    assert!(value(&st, "pid").is_some(), "{st:?}");
    let list = world.ok(&["list", "--no-legend"]);
    assert!(
        list.contains(&uuid[..8]) && list.contains("exited"),
        "{list}"
    );
    let pod: PathBuf = world.data_dir().join("pods/run").join(&uuid);
    assert!(pod.join("overlay-prepared").exists(), "not an overlay pod");
    assert!(
        !mounts_under(&pod).is_empty(),
        "overlays stay mounted until gc"
    );
    let log = fs::read_to_string(pod.join("stage1-kvm/logs/show.log")).unwrap();
    assert!(
        log.contains("out-line\n") && log.contains("err-line\n"),
        "{log}"
    );

    assert_all_cleaned(&world);
}

#[test]
fn exit_codes_propagate_first_failing_app_wins() {
    let (world, aci) = world();
    let sh = |name: &'static str, script: &'static str| -> Vec<String> {
        [
            &aci,
            &format!("--name={name}"),
            "--exec=/bin/sh",
            "--",
            "-c",
            script,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // All four apps in one pod: the first non-zero in manifest order is the pod's code.
    let uuid_file = world.root.path().join("uuid");
    // Copy mode: the other tests' pods overlay-mount their images (a tmpfs or ext4 data dir).
    let mut args: Vec<String> = vec![
        "run".into(),
        "--no-overlay".into(),
        format!("--uuid-file-save={}", uuid_file.display()),
    ];
    for (i, app) in [
        sh("zero", "exit 0"),
        sh("fortytwo", "sleep 1; exit 42"),
        sh("one", "exit 1"),
        sh("killed", "kill -9 $$"),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            args.push("---".into());
        }
        args.extend(app);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = world.rkt(&refs);
    assert_eq!(run.code(), 42, "{run}");
    let st = status(&world, &uuid_from(&uuid_file));
    for (app, code) in [
        ("zero", "0"),
        ("fortytwo", "42"),
        ("one", "1"),
        ("killed", "137"),
    ] {
        assert_eq!(value(&st, &format!("app-{app}")), Some(code), "{st:?}");
    }
    let uuid = uuid_from(&uuid_file);
    let pod = ["run", "exited-garbage"]
        .iter()
        .map(|state| world.data_dir().join("pods").join(state).join(&uuid))
        .find(|dir| dir.exists())
        .expect("the pod's directory");
    assert!(
        !pod.join("overlay-prepared").exists() && pod.join("stage1/rootfs").is_dir(),
        "not a copied pod despite --no-overlay"
    );

    // One app each: 0, killed by a signal, and 1 through prepare + run-prepared.
    let zero = world.rkt(&["run", &aci, "--exec=/bin/true"]);
    assert_eq!(zero.code(), 0, "{zero}");
    let killed = world.rkt(&["run", &aci, "--exec=/bin/sh", "--", "-c", "kill -9 $$"]);
    assert_eq!(killed.code(), 137, "{killed}");
    let prepared = world.ok(&[
        "prepare",
        "--quiet",
        "--no-overlay",
        &aci,
        "--exec=/bin/false",
    ]);
    let one = world.rkt(&["run-prepared", prepared.trim()]);
    assert_eq!(one.code(), 1, "{one}");

    assert_all_cleaned(&world);
}

#[test]
fn stage1_refusals_exit_254_and_leave_a_pod_gc_cleans() {
    let (world, aci) = world();
    // (--interactive used to be refused here too; tests/vm_pod_control.rs runs it now.)
    let run = world.rkt(&["run", "--net=mynet", &aci, "--exec=/bin/true"]);
    assert_eq!(run.code(), 254, "{run}");
    let stage1: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("stage1-kvm:"))
        .collect();
    assert_eq!(stage1.len(), 1, "one stage1 line: {run}");
    assert!(stage1[0].contains("--net=mynet"), "{run}");
    assert_eq!(world.pods_in("run").len(), 1);
    assert_all_cleaned(&world);
}

#[test]
fn gc_after_kill_9_of_a_running_pod() {
    // On ext4: overlays mounted, and the pod path is long enough for the socket to go under
    // /run/rkt-kvm, which only the stage1 gc entrypoint can clean after a kill.
    let scratch = ScratchFs::new();
    let (world, aci) = world_in(RktWorld::in_dir(scratch.path()));
    let uuid_file = world.root.path().join("uuid");
    let mut child = world
        .command(&[
            "run",
            &format!("--uuid-file-save={}", uuid_file.display()),
            &aci,
            "--exec=/bin/sh",
            "--",
            "-c",
            "echo started; sleep 600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let log = |uuid: &str| {
        world
            .data_dir()
            .join("pods/run")
            .join(uuid)
            .join("stage1-kvm/logs/busybox.log")
    };
    let uuid = loop {
        assert!(
            started.elapsed() < e2e::POD_LIMIT,
            "the app never started (child: {:?})",
            child.try_wait()
        );
        if let Ok(uuid) = fs::read_to_string(&uuid_file) {
            if fs::read_to_string(log(&uuid)).is_ok_and(|l| l.contains("started")) {
                break uuid;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let st = status(&world, &uuid);
    assert_eq!(value(&st, "state"), Some("running"), "{st:?}");
    assert_eq!(value(&st, "pid"), Some(child.id().to_string().as_str()));
    assert!(Path::new("/run/rkt-kvm").join(&uuid).is_dir());

    child.kill().unwrap(); // SIGKILL: rkt run is the stage1 is the VMM
    child.wait().unwrap();
    let st = status(&world, &uuid);
    assert_eq!(value(&st, "state"), Some("exited"), "{st:?}");
    assert!(
        !mounts_under(&world.data_dir()).is_empty(),
        "overlays until gc"
    );
    assert_all_cleaned(&world);
}

/// The early stop (docs/stage1-kvm.md, contract item 5): the host stops the VM as soon as every
/// status is in, guest-init ended the status stream and every output stream ended, instead of
/// waiting for the guest's reboot. Nothing the pod wrote may be lost to it: output written at
/// the very end, a file written to a host volume just before the app exits (flushed by the
/// guest's sync), and a process the app left behind is ended rather than waited for.
#[test]
fn the_vm_stops_early_with_all_output_and_writes_on_the_host() {
    let (world, aci) = world();
    let rw = world.root.path().join("host-rw");
    fs::create_dir_all(&rw).unwrap();
    let script = "sleep 600 & \
                  head -c 3000000 /dev/urandom > /rw/data; sha256sum /rw/data > /rw/data.sum; \
                  i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; \
                  echo err-last >&2; echo last-line";
    let started = Instant::now();
    let run = world.rkt(&[
        "--debug",
        "run",
        &format!("--volume=rw,kind=host,source={}", rw.display()),
        &aci,
        "--exec=/bin/sh",
        "--mount=volume=rw,target=/rw",
        "--",
        "-c",
        script,
    ]);
    assert_eq!(run.code(), 0, "{run}");
    // The leftover `sleep 600` was ended, not waited for.
    assert!(started.elapsed() < Duration::from_secs(300), "{run}");
    assert!(
        run.stderr
            .contains("the pod was over: VM stopped by the host"),
        "no early stop: {run}"
    );
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("line-"))
        .collect();
    let expected: Vec<String> = (0..2000).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, expected, "{run}");
    assert!(run.stdout.lines().any(|l| l == "last-line"), "{run}");
    assert!(run.stderr.lines().any(|l| l == "err-last"), "{run}");
    // The file the app wrote just before its end is on the host, whole: its SHA-256 as the
    // guest computed it.
    assert_eq!(fs::metadata(rw.join("data")).unwrap().len(), 3_000_000);
    let guest_sum = fs::read_to_string(rw.join("data.sum")).unwrap();
    assert_eq!(
        sha256_digest(&rw.join("data")),
        format!(
            "sha256:{}",
            guest_sum.split_whitespace().next().unwrap_or("")
        ),
        "the guest's and the host's SHA-256 of the volume file differ"
    );
    assert_all_cleaned(&world);
}

/// How the guest caches its shares (docs/foundation.md, "virtio-fs caching"): the pod share,
/// which only the guest changes, keeps file data cached across opens, so an app must still see
/// its own rewrites of a file (same size and another size) when it reads or runs it again; a
/// host volume keeps close-to-open consistency, so a change the host makes while the pod runs
/// is seen at the app's next open although the app had read the file before.
#[test]
fn an_app_sees_its_own_rewrites_and_the_hosts_changes_to_a_volume() {
    let (world, aci) = world();
    let vol = world.root.path().join("host-vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("data"), "v1\n").unwrap();
    let script = "printf 'echo one-aaaa\\n' > /s.sh; sh /s.sh; \
                  printf 'echo two-bbbb\\n' > /s.sh; sh /s.sh; \
                  printf 'echo three-and-longer\\n' > /s.sh; sh /s.sh; \
                  echo before=$(cat /vol/data); touch /vol/ready; \
                  i=0; while [ ! -f /vol/go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; \
                  i=0; while [ \"$(cat /vol/data)\" != v2-from-the-host ] && [ $i -lt 300 ]; do \
                  sleep 0.1; i=$((i+1)); done; echo after=$(cat /vol/data)";
    let out = world.root.path().join("run.out");
    let volume = format!("--volume=vol,kind=host,source={}", vol.display());
    let mut child = world
        .command(&[
            "run",
            &volume,
            &aci,
            "--exec=/bin/sh",
            "--mount=volume=vol,target=/vol",
            "--",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(world.root.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !vol.join("ready").exists() {
        if started.elapsed() > Duration::from_secs(180) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the app never got to reading the volume\n{}",
                e2e::run_output(&world)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(vol.join("data"), "v2-from-the-host\n").unwrap();
    fs::write(vol.join("go"), "").unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rkt run did not end\n{}", e2e::run_output(&world));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = e2e::run_output(&world);
    assert!(status.success(), "{output}");
    let stdout = fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "one-aaaa",
            "two-bbbb",
            "three-and-longer",
            "before=v1",
            "after=v2-from-the-host"
        ],
        "{output}"
    );
    assert_all_cleaned(&world);
}
