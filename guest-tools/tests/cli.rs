//! The rkt-vsock-probe binary's command line: usage errors and how a failure is reported.
//! (Transfers themselves are tested in the library over unix sockets; this host has no vsock
//! loopback transport, so a real vsock connection fails here, which is what is checked.)

use std::process::{Command, Output};

fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkt-vsock-probe"))
        .args(args)
        .output()
        .expect("rkt-vsock-probe runs")
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["send", "1", "5000"],
        &["send", "1", "5000", "1.5M"],
        &["send", "1", "5000", "10", "--streams", "0"],
        &["listen", "5000", "--count", "0"],
        &["listen", "port"],
        &["frobnicate"],
    ] {
        let output = probe(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_failed_connection_is_one_error_line_per_stream_and_exit_1() {
    // CID 3 with port 1 is, on a host, an unreachable address (or AF_VSOCK is missing): either
    // way connecting fails.
    let output = probe(&["send", "3", "1", "1K", "--streams", "2"]);
    assert_eq!(output.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 2, "{errors}");
    for line in lines {
        assert!(
            line.starts_with("rkt-vsock-probe: error: stream "),
            "{line}"
        );
        assert!(line.contains("connecting failed"), "{line}");
    }
    assert!(output.stdout.is_empty());
}

#[test]
fn help_names_the_subcommands() {
    let output = probe(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    for word in ["listen", "send", "echo"] {
        assert!(text.contains(word), "{text}");
    }
}
