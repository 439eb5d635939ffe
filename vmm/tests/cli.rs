//! The `rkt-vmm` binary's contract for errors that need no working KVM: one line on stderr,
//! status 254 for VMM errors and 2 for usage errors (docs/foundation.md).

use std::process::{Command, Output};

fn rkt_vmm(device: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkt-vmm"))
        .args(args)
        .env("RKT_KVM_DEVICE", device)
        .output()
        .expect("run rkt-vmm")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn missing_kvm_device_is_one_line_and_254() {
    let out = rkt_vmm(
        "/nonexistent/kvm",
        &["--kernel", "/bin/true", "--cmdline", "quiet"],
    );
    assert_eq!(out.status.code(), Some(254));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "rkt-vmm: error: /nonexistent/kvm does not exist: load the kvm-intel or kvm-amd module"
        ),
        "{err}"
    );
}

#[test]
fn a_device_that_is_not_kvm_is_named() {
    let out = rkt_vmm(
        "/dev/null",
        &["--kernel", "/bin/true", "--cmdline", "quiet"],
    );
    assert_eq!(out.status.code(), Some(254));
    assert!(
        stderr(&out).contains("/dev/null is not a KVM device"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = rkt_vmm("/nonexistent/kvm", &["--cmdline", "quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--kernel"));
    let out = rkt_vmm(
        "/nonexistent/kvm",
        &["--kernel", "k", "--cmdline", "q", "--cpus", "many"],
    );
    assert_eq!(out.status.code(), Some(2));
}
