//! Runs on the machine itself (not inside the emulated KVM host): the VMM's host check must give
//! the right verdict for this machine's /dev/kvm. On a kvm_pvm host (the project's machines) that
//! is the plain "runs only PVM guest kernels" message instead of a guest hanging in KVM's
//! instruction emulator; on an ordinary KVM host the same command boots and succeeds.

use std::path::Path;
use std::process::Command;

use e2e::{
    busybox_aci, busybox_initramfs, cmdline, rkt_vmm, run_with_limit, vmlinux, RktWorld, BOOT_LIMIT,
};

#[test]
fn the_host_check_gives_this_machines_verdict() {
    let run = run_with_limit(
        Command::new(rkt_vmm())
            .arg("--kernel")
            .arg(vmlinux())
            .arg("--initrd")
            .arg(busybox_initramfs())
            .arg("--cmdline")
            .arg(cmdline(r#"/bin/sh -c "echo booted""#)),
        BOOT_LIMIT,
    );
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(run.code(), 254, "{run}");
        assert!(run.stderr.contains("PVM"), "{run}");
        assert!(run.stderr.contains("VMX/SVM"), "the fix is named: {run}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{run}");
    } else if !Path::new("/dev/kvm").exists() {
        assert_eq!(run.code(), 254, "{run}");
        assert!(run.stderr.contains("/dev/kvm"), "{run}");
    } else {
        assert_eq!(run.code(), 0, "{run}");
        assert!(run.stdout.contains("booted"), "{run}");
    }
}

#[test]
fn rkt_run_checks_the_host_before_anything_else() {
    // stage0 knows nothing of KVM: the kvm stage1 checks the host first thing and says so in
    // one line; the pod is left exited for gc, as any failed run.
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), "example.com/busybox", &["/bin/true"]);
    let run = world.rkt(&[
        "run",
        "--stage1=kvm",
        "--net=none",
        &aci.display().to_string(),
    ]);
    let stage1_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("stage1-kvm:"))
        .collect();
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(run.code(), 254, "{run}");
        assert_eq!(stage1_lines.len(), 1, "{run}");
        assert!(
            stage1_lines[0].contains("runs only PVM guest kernels"),
            "{run}"
        );
        assert!(
            stage1_lines[0].contains("VMX/SVM"),
            "the fix is named: {run}"
        );
    } else if !Path::new("/dev/kvm").exists() {
        assert_eq!(run.code(), 254, "{run}");
        assert_eq!(stage1_lines.len(), 1, "{run}");
        assert!(stage1_lines[0].contains("/dev/kvm"), "{run}");
    } else {
        assert_eq!(run.code(), 0, "an ordinary KVM host runs the pod: {run}");
    }
    world.ok(&["gc", "--grace-period=0s"]);
    world.ok(&["gc", "--grace-period=0s"]);
    assert!(world.pods_in("exited-garbage").is_empty() && world.pods_in("run").is_empty());

    let rkt = e2e::artefact("target/release/rkt");
    let usage = run_with_limit(
        Command::new(&rkt).args(["run", "--no-such-flag", "IMAGE"]),
        BOOT_LIMIT,
    );
    assert_eq!(usage.code(), 2, "an unknown flag is a usage error: {usage}");
}
