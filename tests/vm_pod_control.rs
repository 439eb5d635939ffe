//! The vsock control channel end to end, through the real `rkt` and the installed stage1 image:
//! `rkt status --wait-ready`, `rkt enter` without and with a terminal (output, stdin, exit
//! codes, `tty` and the window size inside, the host terminal restored), `rkt stop` graceful
//! (an app that traps SIGTERM and one that dies of it, `rkt run`'s exit code, the statuses) and
//! `--force`, `rkt run --interactive` on a terminal, and the errors (no such pod, not running,
//! no such app, several apps). After each test `rkt gc` leaves nothing behind.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{
    assert_all_cleaned, busybox_aci, pod_status as status, run_output, start_pod,
    status_value as value, RktWorld, POD_LIMIT,
};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags};

const IMAGE: &str = "example.com/busybox";

fn world() -> (RktWorld, String) {
    let world = RktWorld::new();
    let aci = busybox_aci(world.root.path(), IMAGE, &["/bin/true"]);
    let aci = aci.display().to_string();
    (world, aci)
}

/// Waits for a background `rkt run` of `world` to end; on timeout the pods' console tails
/// (guest-init's own messages) go into the failure.
fn wait_child(world: &RktWorld, child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let report = e2e::hang_report::describe_tree(child.id(), Some(&world.data_dir()));
            let _ = child.kill();
            let _ = child.wait();
            panic!("rkt run did not end within {limit:?}\n{report}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects to the guest's control port through the VM socket, sends `bytes`, and returns
/// what comes back until the guest closes the stream (lossy text, frame headers included).
fn control_exchange(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(b"CONNECT 1\n").unwrap();
    // The VMM's answer first, as any client: only then does the stream reach the guest.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        stream.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    assert!(line.starts_with(b"OK "), "{line:?}");
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Runs `command` with `input` on its stdin; returns (code, stdout, stderr).
fn run_with_input(mut command: Command, input: &[u8]) -> (i32, String, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A pseudo-terminal for a child: the child gets the slave as stdin, stdout and stderr; a
/// thread collects what arrives on the master.
struct TestTerminal {
    master: File,
    slave: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl TestTerminal {
    fn new(rows: u16, cols: u16) -> TestTerminal {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None::<&nix::sys::termios::Termios>).unwrap();
        let master = File::from(pty.master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends with EIO once no slave is open any more.
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        TestTerminal {
            master,
            slave: pty.slave,
            seen,
        }
    }

    fn spawn(&self, mut command: Command) -> Child {
        command
            .stdin(Stdio::from(self.slave.try_clone().unwrap()))
            .stdout(Stdio::from(self.slave.try_clone().unwrap()))
            .stderr(Stdio::from(self.slave.try_clone().unwrap()))
            .spawn()
            .unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, what: &str, limit: Duration) {
        let started = Instant::now();
        while !self.text().contains(what) {
            assert!(
                started.elapsed() < limit,
                "{what:?} never showed on the terminal; it shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Canonical mode and echo, which raw mode turns off: must be back after the session.
    fn cooked(&self) -> bool {
        let flags = tcgetattr(self.slave.as_fd()).unwrap().local_flags;
        flags.contains(LocalFlags::ICANON) && flags.contains(LocalFlags::ECHO)
    }
}

#[test]
fn wait_ready_enter_and_graceful_stop() {
    let (world, aci) = world();
    let out = world.root.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let volume = format!("--volume=out,kind=host,source={}", out.display());
    let trapper = "trap 'echo term > /out/marker; exit 0' TERM; \
                   while :; do sleep 1; done";
    let (mut run, uuid) = start_pod(
        &world,
        &[
            &volume,
            &aci,
            "--name=trapper",
            "--exec=/bin/sh",
            "--mount=volume=out,target=/out",
            "--",
            "-c",
            trapper,
            "---",
            &aci,
            "--name=plain",
            "--exec=/bin/sleep",
            "--",
            "600",
        ],
    );

    // Whatever arrives on the control port fails only its own stream.
    let socket = [
        world
            .data_dir()
            .join("pods/run")
            .join(&uuid)
            .join("stage1-kvm/vsock"),
        Path::new("/run/rkt-kvm").join(&uuid).join("sock/vsock"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("the pod's vsock socket");
    let garbage: [(&[u8], &str); 3] = [
        (b"\x01\x00\x00\x00\x05{bad}", "not valid JSON"),
        (
            b"\x01\x00\x00\x00\x27{\"version\":9,\"request\":{\"type\":\"ping\"}}",
            "version 9",
        ),
        (b"\x63\xff\xff\xff\xff", "unknown frame kind 99"),
    ];
    for (bytes, says) in garbage {
        let answer = control_exchange(&socket, bytes);
        assert!(answer.contains(says), "{says}: {answer:?}");
    }

    // enter without a terminal: output on both streams, the app's environment and root, exit
    // codes 0 and non-zero.
    let entered = world.rkt(&[
        "enter",
        "--app=trapper",
        &uuid,
        "/bin/sh",
        "-c",
        "echo in-$AC_APP_NAME-$container; echo oops >&2; ls /out >/dev/null && echo has-out; \
         cat /proc/1/cmdline >/dev/null; exit 0",
    ]);
    assert_eq!(entered.code(), 0, "{entered}");
    assert!(entered.stdout.contains("in-trapper-rkt\n"), "{entered}");
    assert!(entered.stdout.contains("has-out\n"), "{entered}");
    assert_eq!(entered.stderr, "oops\n", "{entered}");
    let failed = world.rkt(&["enter", "--app=plain", &uuid, "/bin/sh", "-c", "exit 42"]);
    assert_eq!(failed.code(), 42, "{failed}");
    let missing = world.rkt(&["enter", "--app=plain", &uuid, "/no/such/program"]);
    assert_eq!(missing.code(), 127, "{missing}");

    // stdin reaches the command, and its end too.
    let mut command = world.command(&[
        "enter",
        "--app=plain",
        &uuid,
        "/bin/sh",
        "-c",
        "read line; echo got-$line; cat | wc -c",
    ]);
    command.env_remove("TERM");
    let (code, stdout, stderr) = run_with_input(command, b"hello\nfour\n");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(stdout.trim_end(), "got-hello\n5", "{stderr}");

    // enter with a terminal: a pty inside, its size from ours, the exit code back, and our
    // terminal back in cooked mode afterwards.
    let terminal = TestTerminal::new(30, 100);
    assert!(terminal.cooked());
    let mut command = world.command(&[
        "enter",
        "--app=trapper",
        &uuid,
        "/bin/sh",
        "-c",
        "tty; stty size; exit 5",
    ]);
    command.env("TERM", "xterm");
    let mut child = terminal.spawn(command);
    let code = wait_child(&world, &mut child, POD_LIMIT);
    assert_eq!(code.code(), Some(5), "{}", terminal.text());
    terminal.wait_for("30 100", Duration::from_secs(10));
    assert!(terminal.text().contains("/dev/pts/"), "{}", terminal.text());
    assert!(terminal.cooked(), "rkt enter left the terminal raw");

    // Errors, each one line and 254.
    for (args, says) in [
        (vec!["enter", uuid.as_str(), "/bin/true"], "--app=NAME"),
        (
            vec!["enter", "--app=nope", uuid.as_str(), "/bin/true"],
            "no app named \"nope\"",
        ),
        (vec!["enter", "ffffffff", "/bin/true"], "no pod matches"),
        (vec!["stop", "ffffffff"], "no pod matches"),
    ] {
        let refused = world.rkt(&args);
        assert_eq!(refused.code(), 254, "{args:?}: {refused}");
        assert!(refused.stderr.contains(says), "{args:?}: {refused}");
    }

    // stop: SIGTERM to both apps; the trapper writes its marker and exits 0, the other dies of
    // it (128 + 15); `rkt run` exits with the first failing app's code; stop waits for the end.
    let stopped = world.rkt(&["stop", &uuid]);
    assert_eq!(stopped.code(), 0, "{stopped}");
    assert_eq!(stopped.stdout, format!("\"{uuid}\"\n"));
    let code = wait_child(&world, &mut run, Duration::from_secs(30));
    assert_eq!(code.code(), Some(143), "{}", run_output(&world));
    assert_eq!(fs::read_to_string(out.join("marker")).unwrap(), "term\n");
    let st = status(&world, &uuid);
    assert_eq!(value(&st, "state"), Some("exited"), "{st:?}");
    assert_eq!(value(&st, "app-trapper"), Some("0"), "{st:?}");
    assert_eq!(value(&st, "app-plain"), Some("143"), "{st:?}");

    // Not running any more.
    for args in [
        vec!["stop", uuid.as_str()],
        vec!["enter", uuid.as_str(), "/bin/true"],
    ] {
        let refused = world.rkt(&args);
        assert_eq!(refused.code(), 254, "{args:?}: {refused}");
        assert!(refused.stderr.contains("is not running"), "{refused}");
    }
    assert_all_cleaned(&world);
}

#[test]
fn forced_stop_kills_the_vm() {
    let (world, aci) = world();
    let (mut run, uuid) = start_pod(&world, &[&aci, "--exec=/bin/sleep", "--", "600"]);
    let stopped = world.rkt(&["stop", "--force", &uuid]);
    assert_eq!(stopped.code(), 0, "{stopped}");
    assert_eq!(stopped.stdout, format!("\"{uuid}\"\n"));
    // rkt run is the stage1 is the VMM: SIGKILL ended it, and no status was written.
    let status_now = wait_child(&world, &mut run, Duration::from_secs(10));
    assert_eq!(status_now.signal(), Some(9), "{status_now:?}");
    let st = status(&world, &uuid);
    assert_eq!(value(&st, "state"), Some("exited"), "{st:?}");
    assert_eq!(value(&st, "app-busybox"), None, "{st:?}");
    assert_all_cleaned(&world);
}

#[test]
fn interactive_run_on_a_terminal() {
    let (world, aci) = world();
    // Several apps cannot share one terminal: a usage error before anything is made.
    let refused = world.rkt(&["run", "--interactive", &aci, "---", &aci, "--name=two"]);
    assert_eq!(refused.code(), 2, "{refused}");
    assert!(world.pods_in("run").is_empty());

    let terminal = TestTerminal::new(40, 120);
    let mut command = world.command(&[
        "run",
        "--interactive",
        &aci,
        "--exec=/bin/sh",
        "--",
        "-c",
        "tty; stty size; echo ready; read line; echo got-$line; exit 7",
    ]);
    command.env("TERM", "xterm");
    let mut child = terminal.spawn(command);
    terminal.wait_for("ready", POD_LIMIT);
    assert!(!terminal.cooked(), "the terminal is raw during the session");
    (&terminal.master).write_all(b"hello\n").unwrap();
    let code = wait_child(&world, &mut child, Duration::from_secs(60));
    assert_eq!(code.code(), Some(7), "{}", terminal.text());
    terminal.wait_for("got-hello", Duration::from_secs(10));
    let text = terminal.text();
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("40 120"), "{text}");
    assert!(
        terminal.cooked(),
        "rkt run --interactive left the terminal raw"
    );
    assert_all_cleaned(&world);
}
