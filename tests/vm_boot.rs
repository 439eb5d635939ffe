//! Boots our guest kernel with our VMM (PVH `vmlinux` and `bzImage`, 1, 2 and 4 vCPUs), runs a
//! command inside under guest-init, and checks its output and how the VM ended.
//! Needs ordinary KVM: `tools/test` runs this file inside the emulated KVM host when the machine's
//! own /dev/kvm cannot run ordinary guests.

use e2e::{boot, boot_with_cmdline, bzimage, vmlinux};

#[test]
fn pvh_boot_runs_a_command_and_returns_its_zero_status() {
    let run = boot(
        &vmlinux(),
        1,
        r#"/bin/sh -c "echo hello from the guest; echo to-stderr >&2""#,
    );
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("hello from the guest"), "{run}");
    assert!(
        run.stdout.contains("to-stderr"),
        "guest stderr reaches the console: {run}"
    );
}

#[test]
fn pvh_boot_with_two_vcpus_sees_both_and_returns_a_nonzero_status() {
    let run = boot(&vmlinux(), 2, r#"/bin/sh -c "echo cpus=$(nproc); exit 3""#);
    assert_eq!(run.code(), 3, "{run}");
    assert!(run.stdout.contains("cpus=2"), "{run}");
}

#[test]
fn pvh_boot_with_four_vcpus_sees_all_four() {
    let run = boot(&vmlinux(), 4, r#"/bin/sh -c "echo cpus=$(nproc)""#);
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("cpus=4"), "{run}");
}

#[test]
fn bzimage_boot_runs_a_command_and_returns_its_zero_status() {
    let run = boot(&bzimage(), 1, r#"/bin/sh -c "echo hello via bzImage""#);
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("hello via bzImage"), "{run}");
}

#[test]
fn bzimage_boot_with_two_vcpus_returns_the_command_status() {
    let run = boot(&bzimage(), 2, r#"/bin/sh -c "echo cpus=$(nproc); exit 42""#);
    assert_eq!(run.code(), 42, "{run}");
    assert!(run.stdout.contains("cpus=2"), "{run}");
}

#[test]
fn a_command_killed_by_a_signal_reports_128_plus_the_signal() {
    let run = boot(&vmlinux(), 1, r#"/bin/sh -c "kill -9 $$""#);
    assert_eq!(run.code(), 128 + 9, "{run}");
}

#[test]
fn a_missing_command_is_reported_by_guest_init_with_status_127() {
    let run = boot(&vmlinux(), 1, "/no/such/program --flag");
    assert_eq!(run.code(), 127, "{run}");
    assert!(run.stdout.contains("rkt-guest-init: error"), "{run}");
    assert!(run.stdout.contains("/no/such/program"), "{run}");
}

#[test]
fn the_guest_environment_has_proc_sys_dev_and_reaps_orphans() {
    // Single quotes are plain characters to the kernel, so the shell gets them. An orphaned
    // background child must not keep the VM up or become a zombie: guest-init reaps it.
    let run = boot(
        &vmlinux(),
        1,
        "/bin/sh -c \"awk '{print $2}' /proc/mounts >/tmp/mounted; \
         for m in /proc /sys /dev /dev/pts /dev/shm /run; do grep -qx $m /tmp/mounted || \
         echo not-mounted: $m; done; test -c /dev/null && (sleep 600 &) && echo env-ok\"",
    );
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("env-ok"), "{run}");
    assert!(!run.stdout.contains("not-mounted"), "{run}");
}

#[test]
fn a_guest_kernel_panic_is_an_error_with_its_own_status() {
    // With busybox's `true` as the very first process, init exits at once and the kernel panics
    // ("Attempted to kill init"); panic=-1 reboots immediately.
    let run = boot_with_cmdline(
        &vmlinux(),
        1,
        "console=ttyS0 reboot=k panic=-1 quiet rdinit=/bin/true",
    );
    assert_eq!(run.code(), 250, "{run}");
    assert!(run.stderr.to_lowercase().contains("panic"), "{run}");
}

#[test]
fn a_guest_triple_fault_is_an_error_with_its_own_status() {
    // reboot=t makes the guest's reboot a triple fault, which KVM reports as a shutdown exit.
    let run = boot_with_cmdline(
        &vmlinux(),
        1,
        "console=ttyS0 reboot=t panic=-1 quiet -- /bin/true",
    );
    assert_eq!(run.code(), 251, "{run}");
    assert!(run.stderr.to_lowercase().contains("triple fault"), "{run}");
}
