//! rkt-mkinitramfs as a user runs it.

use std::fs;
use std::process::Command;

fn mkinitramfs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rkt-mkinitramfs"))
        .args(args)
        .output()
        .expect("rkt-mkinitramfs runs")
}

fn listing(archive: &std::path::Path) -> String {
    let output = Command::new("cpio")
        .args(["-it", "--quiet", "-F"])
        .arg(archive)
        .output()
        .expect("GNU cpio runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn writes_init_busybox_and_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dir.path().join("guest-init");
    fs::write(&init, b"init").expect("write init");
    let out = dir.path().join("out.cpio");
    let output = mkinitramfs(&[
        "--init",
        init.to_str().expect("utf-8"),
        "--add",
        "/bin/busybox:/bin/busybox",
        "--dir",
        "/mnt/data",
        "--busybox-links",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{output:?}");
    let names = listing(&out);
    for name in [
        "init",
        "bin/busybox",
        "bin/sh",
        "bin/echo",
        "mnt/data",
        "dev/console",
    ] {
        assert!(
            names.lines().any(|line| line == name),
            "{name} missing:\n{names}"
        );
    }
}

#[test]
fn missing_init_is_one_line_and_status_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.cpio");
    let output = mkinitramfs(&[
        "--init",
        "/nonexistent/guest-init",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(
            "rkt-mkinitramfs: error: input file /nonexistent/guest-init does not exist"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
    assert!(!out.exists());
}

#[test]
fn relative_destination_and_busybox_links_without_busybox_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dir.path().join("guest-init");
    fs::write(&init, b"init").expect("write init");
    let out = dir.path().join("out.cpio");
    let init = init.to_str().expect("utf-8");
    let out = out.to_str().expect("utf-8");

    let relative = mkinitramfs(&[
        "--init",
        init,
        "--add",
        "/bin/busybox:bin/busybox",
        "-o",
        out,
    ]);
    assert_eq!(relative.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&relative.stderr).contains("it is relative"));

    let no_busybox = mkinitramfs(&["--init", init, "--busybox-links", "-o", out]);
    assert_eq!(no_busybox.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_busybox.stderr).contains("--add /bin/busybox:/bin/busybox"));
}

#[test]
fn usage_error_is_status_2() {
    let output = mkinitramfs(&["--add", "nocolon"]);
    assert_eq!(output.status.code(), Some(2));
}
