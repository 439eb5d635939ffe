//! guest-init run as an ordinary process (not PID 1): it runs the command, reaps, prints the
//! marker on stdout and exits with the command's status, without touching the host.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn guest_init(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guest-init"))
        .args(args)
        .output()
        .expect("guest-init binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn runs_the_command_and_reports_success() {
    let output = guest_init(&["echo", "hello"]);
    assert_eq!(stdout(&output), "hello\nrkt-guest-init: exit-status=0\n");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn reports_the_exit_code() {
    let output = guest_init(&["sh", "-c", "exit 42"]);
    assert_eq!(stdout(&output), "rkt-guest-init: exit-status=42\n");
    assert_eq!(output.status.code(), Some(42));
}

#[test]
fn reports_128_plus_signal() {
    let output = guest_init(&["sh", "-c", "kill -KILL $$"]);
    assert_eq!(stdout(&output), "rkt-guest-init: exit-status=137\n");
    assert_eq!(output.status.code(), Some(137));
}

#[test]
fn missing_command_is_127_with_one_error_line() {
    let output = guest_init(&["rkt-no-such-command"]);
    assert_eq!(stdout(&output), "rkt-guest-init: exit-status=127\n");
    assert_eq!(output.status.code(), Some(127));
    let errors = stderr(&output);
    assert!(
        errors.starts_with("rkt-guest-init: error: command `rkt-no-such-command` not found"),
        "{errors}"
    );
    assert_eq!(errors.lines().count(), 1, "{errors}");
}

#[test]
fn no_command_is_127() {
    let output = guest_init(&[]);
    assert_eq!(stdout(&output), "rkt-guest-init: exit-status=127\n");
    assert!(stderr(&output).contains("no command given"));
}

#[test]
fn non_executable_file_is_126() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("script");
    fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = guest_init(&[script.to_str().expect("utf-8 path")]);
    assert_eq!(stdout(&output), "rkt-guest-init: exit-status=126\n");
    assert!(stderr(&output).contains("no execute permission"));
}

#[test]
fn file_the_kernel_cannot_execute_is_126() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk");
    fs::write(&junk, [0x7f, b'E', b'L', b'F', 0, 0, 0, 0]).expect("write junk");
    fs::set_permissions(&junk, fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = guest_init(&[junk.to_str().expect("utf-8 path")]);
    assert_eq!(stdout(&output), "rkt-guest-init: exit-status=126\n");
    assert!(
        stderr(&output).contains("refused to execute"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn command_gets_a_clean_environment_and_its_own_session() {
    let output = Command::new(env!("CARGO_BIN_EXE_guest-init"))
        .args(["sh", "-c", "env | sort; ps -o sid= -p $$; echo pid=$$"])
        .env("LEAK_ME", "1")
        .output()
        .expect("guest-init binary runs");
    let text = stdout(&output);
    assert!(text.contains("HOME=/\n"), "{text}");
    assert!(text.contains("TERM=linux\n"), "{text}");
    assert!(
        text.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{text}"
    );
    assert!(!text.contains("LEAK_ME"), "{text}");
    // setsid: the shell's session id is its own pid.
    let mut lines = text.lines().rev();
    let _marker = lines.next();
    let pid = lines
        .next()
        .and_then(|l| l.strip_prefix("pid="))
        .map(str::trim);
    let sid = lines
        .find(|l| l.trim().parse::<u32>().is_ok())
        .map(str::trim);
    assert!(
        pid.is_some() && pid == sid,
        "pid {pid:?} sid {sid:?}\n{text}"
    );
}

#[test]
fn orphans_do_not_delay_the_status() {
    // The background sleep is orphaned when sh exits; guest-init reports sh's status at once.
    let started = std::time::Instant::now();
    let output = guest_init(&["sh", "-c", "sleep 5 >/dev/null 2>&1 & exit 3"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}
