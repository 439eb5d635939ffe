//! Each error of issue 2 point 5 gets a one-line message that names the problem and the fix,
//! exit status 254, and no panic or backtrace. Runs where KVM is ordinary (inside the emulated
//! KVM host on machines like the project's), so that only the one thing under test is wrong.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use e2e::{busybox_initramfs, cmdline, rkt_vmm, run_with_limit, vmlinux, Finished, BOOT_LIMIT};

fn vmm(args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new(rkt_vmm());
    command.args(args);
    command
}

/// A failure must be one line on stderr, say `error`, and never look like a Rust panic.
fn assert_clean_error(run: &Finished, must_mention: &[&str]) {
    assert_eq!(run.code(), 254, "{run}");
    let stderr = run.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "one line expected: {run}");
    assert!(stderr.contains("error"), "{run}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{run}"
    );
    for needle in must_mention {
        assert!(
            stderr.to_lowercase().contains(&needle.to_lowercase()),
            "stderr should mention {needle:?}: {run}"
        );
    }
}

fn boot_args(kernel: &std::path::Path, mem: &str) -> Command {
    let mut command = vmm(&[]);
    command
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(busybox_initramfs())
        .arg("--cmdline")
        .arg(cmdline("/bin/true"))
        .arg("--mem")
        .arg(mem);
    command
}

#[test]
fn a_missing_kvm_device_names_the_path_and_the_fix() {
    let mut command = boot_args(&vmlinux(), "128");
    command.env("RKT_KVM_DEVICE", "/nonexistent/kvm");
    let run = run_with_limit(&mut command, BOOT_LIMIT);
    assert_clean_error(&run, &["/nonexistent/kvm", "kvm-intel"]);
}

#[test]
fn a_kvm_device_without_permission_says_to_run_as_root_or_join_the_kvm_group() {
    // A private copy of the KVM device node, 0600 root, opened as the unprivileged user nobody.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let node = dir.path().join("kvm");
    let status = Command::new("mknod")
        .arg(&node)
        .args(["c", "10", "232"])
        .status()
        .expect("mknod");
    assert!(status.success(), "mknod of a KVM device node failed");
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let mut command = boot_args(&vmlinux(), "128");
    command.env("RKT_KVM_DEVICE", &node).uid(65534).gid(65534);
    let run = run_with_limit(&mut command, BOOT_LIMIT);
    assert_clean_error(&run, &["permission", "kvm group"]);
}

#[test]
fn a_missing_kernel_file_is_named() {
    let run = run_with_limit(
        &mut boot_args(std::path::Path::new("/no/such/vmlinux"), "128"),
        BOOT_LIMIT,
    );
    assert_clean_error(&run, &["/no/such/vmlinux"]);
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bogus = dir.path().join("not-a-kernel");
    std::fs::write(&bogus, b"this is plain text, not a kernel\n".repeat(200)).expect("write");
    let run = run_with_limit(&mut boot_args(&bogus, "128"), BOOT_LIMIT);
    assert_clean_error(&run, &["not a Linux kernel"]);
}

#[test]
fn memory_too_small_for_kernel_and_initramfs_says_how_much_is_needed() {
    let run = run_with_limit(&mut boot_args(&vmlinux(), "4"), BOOT_LIMIT);
    assert_clean_error(&run, &["memory", "MiB"]);
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let run = run_with_limit(&mut vmm(&["--no-such-flag".as_ref()]), BOOT_LIMIT);
    assert_eq!(run.code(), 2, "{run}");
}
