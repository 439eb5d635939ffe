//! virtio-vsock end to end, both ways at once with several streams each, large transfers
//! checked by SHA-256 on the receiving side.
//!
//! Host to guest: the host connects to the VMM's unix socket, writes `CONNECT 5000\n`, waits for
//! `OK <port>\n` and sends a pattern; `rkt-vsock-probe listen` in the guest replies with the
//! length and checksum it received. Guest to host: `rkt-vsock-probe send 2 6000` connects to
//! host port 6000, registered with `--vsock-port 6000`, which the VMM forwards to the unix
//! socket `<socket>_6000` where this test listens, checks and replies. Needs ordinary KVM: run inside the emulated KVM host on
//! machines whose /dev/kvm is kvm_pvm.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use e2e::{boot_vm, populate_guest_root, share_cmdline, ScratchFs};
use guest_tools::{pattern, Summary};

const GUEST_PORT: u32 = 5000;
const HOST_PORT: u32 = 6000;
const STREAMS: u32 = 3;
const BYTES_TO_GUEST: u64 = 8 << 20;
const BYTES_TO_HOST: u64 = 8 << 20;
const HOST_SEED: u64 = 11;
const GUEST_SEED: u64 = 7;

/// Connects to the guest's listener through the VMM's socket, retrying while the guest has no
/// listener yet (the VMM closes the stream when the guest answers with a reset).
fn connect_to_guest(socket: &Path, port: u32, deadline: Instant) -> UnixStream {
    loop {
        assert!(
            Instant::now() < deadline,
            "the guest never accepted on port {port}"
        );
        if let Ok(mut stream) = UnixStream::connect(socket) {
            stream
                .write_all(format!("CONNECT {port}\n").as_bytes())
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_ok() && line.starts_with("OK ") {
                assert!(line.ends_with('\n'), "{line:?}");
                line[3..].trim().parse::<u32>().expect("OK <port>");
                return stream;
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Sends stream `index`'s pattern to the guest and returns the guest's reply line.
fn send_to_guest(socket: PathBuf, index: u32, deadline: Instant) -> String {
    let mut stream = connect_to_guest(&socket, GUEST_PORT, deadline);
    let mut source = pattern(HOST_SEED, index, BYTES_TO_GUEST);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = source.fill(&mut buf);
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).unwrap();
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// Serves `count` guest connections at once on `<socket>_<port>`: reads each to EOF, replies
/// with its summary, and returns the summaries received.
fn serve_guest_streams(listener: UnixListener, count: u32) -> Vec<Summary> {
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let (mut stream, _) = listener.accept().unwrap();
            thread::spawn(move || {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).unwrap();
                let summary = Summary::of_bytes(&data);
                stream.write_all(summary.reply_line().as_bytes()).unwrap();
                summary
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn vsock_streams_both_ways_arrive_intact() {
    let share = ScratchFs::new();
    populate_guest_root(&share.path().join("root"));
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("vsock");
    let listener = UnixListener::bind(format!("{}_{HOST_PORT}", socket.display())).unwrap();

    let deadline = Instant::now() + e2e::BOOT_LIMIT;
    let serving = thread::spawn(move || serve_guest_streams(listener, STREAMS));
    let senders: Vec<_> = (0..STREAMS)
        .map(|i| {
            let socket = socket.clone();
            thread::spawn(move || send_to_guest(socket, i, deadline))
        })
        .collect();

    let script = format!(
        "rkt-vsock-probe listen {GUEST_PORT} --count {STREAMS} & listener=$!; \
         rkt-vsock-probe send 2 {HOST_PORT} {BYTES_TO_HOST} --seed {GUEST_SEED} --streams {STREAMS}; \
         sent=$?; wait $listener; received=$?; echo sent=$sent received=$received; \
         exit $((sent + received))"
    );
    let share_arg = format!("pod={}", share.path().display());
    let run = boot_vm(
        &share_cmdline("pod", "root", &format!("/bin/sh -c \"{script}\"")),
        256,
        &[
            OsStr::new("--share"),
            OsStr::new(&share_arg),
            OsStr::new("--vsock"),
            socket.as_os_str(),
            // Guest connections reach only registered host ports.
            OsStr::new("--vsock-port"),
            OsStr::new(&HOST_PORT.to_string()),
        ],
    );
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("sent=0 received=0"), "{run}");

    // Host to guest: each reply is the summary of exactly what the host sent.
    for (i, sender) in senders.into_iter().enumerate() {
        let reply = sender.join().unwrap();
        let want = Summary::of_pattern(HOST_SEED, i as u32, BYTES_TO_GUEST);
        assert_eq!(reply, want.reply_line(), "stream {i} to the guest");
    }
    // Guest to host: the host received every stream's pattern intact (in any order).
    let mut received = serving.join().unwrap();
    let mut want: Vec<Summary> = (0..STREAMS)
        .map(|i| Summary::of_pattern(GUEST_SEED, i, BYTES_TO_HOST))
        .collect();
    received.sort_by_key(|s| s.sha256);
    want.sort_by_key(|s| s.sha256);
    assert_eq!(received, want);
    // The guest agreed on what it sent.
    for summary in &want {
        assert!(
            run.stdout.contains(&format!("reply={summary}")),
            "guest did not report {summary}: {run}"
        );
    }
    // The VMM removed its socket.
    assert!(!socket.exists(), "the VMM left {} behind", socket.display());
}

/// A connection to a port nobody listens on is refused both ways: the host's CONNECT gets its
/// stream closed without `OK`, the guest's connect fails, and the VM carries on. The guest's
/// port 7777 has a listener at `<socket>_7777` but is not registered (only 6000 is): the guest
/// is refused and the listener never sees a connection.
#[test]
fn vsock_connections_to_closed_ports_are_refused() {
    let share = ScratchFs::new();
    populate_guest_root(&share.path().join("root"));
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("vsock");
    let unregistered = UnixListener::bind(format!("{}_7777", socket.display())).unwrap();
    unregistered.set_nonblocking(true).unwrap();
    let script = "rkt-vsock-probe send 2 7777 1K; echo guest-connect-status=$?; \
                  rkt-vsock-probe listen 5001 --count 1";
    let share_arg = format!("pod={}", share.path().display());
    let host = {
        let socket = socket.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + e2e::BOOT_LIMIT;
            // Until the guest listens on 5001, CONNECT 4999 (never listened on) must be refused;
            // once it listens, CONNECT 5001 works; then 4999 is still refused.
            let refused_before = loop {
                assert!(Instant::now() < deadline, "the VMM socket never appeared");
                if let Ok(mut stream) = UnixStream::connect(&socket) {
                    stream.write_all(b"CONNECT 4999\n").unwrap();
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    break answer;
                }
                thread::sleep(Duration::from_millis(100));
            };
            let mut ok = connect_to_guest(&socket, 5001, deadline);
            ok.shutdown(Shutdown::Write).unwrap();
            let mut reply = String::new();
            ok.read_to_string(&mut reply).unwrap();
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream.write_all(b"CONNECT 4999\n").unwrap();
            let mut refused_after = String::new();
            let _ = stream.read_to_string(&mut refused_after);
            // Malformed requests are closed too.
            let mut bad = UnixStream::connect(&socket).unwrap();
            bad.write_all(b"CONNECT lots\n").unwrap();
            let mut bad_answer = String::new();
            let _ = bad.read_to_string(&mut bad_answer);
            (refused_before, reply, refused_after, bad_answer)
        })
    };
    let run = boot_vm(
        &share_cmdline("pod", "root", &format!("/bin/sh -c \"{script}\"")),
        128,
        &[
            OsStr::new("--share"),
            OsStr::new(&share_arg),
            OsStr::new("--vsock"),
            socket.as_os_str(),
            // 7777, where a socket listens, is deliberately not registered.
            OsStr::new("--vsock-port"),
            OsStr::new(&HOST_PORT.to_string()),
        ],
    );
    let (refused_before, reply, refused_after, bad_answer) = host.join().unwrap();
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("guest-connect-status=1"), "{run}");
    assert!(
        matches!(unregistered.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the guest reached the socket of an unregistered port"
    );
    assert!(!refused_before.starts_with("OK"), "{refused_before:?}");
    assert!(!refused_after.starts_with("OK"), "{refused_after:?}");
    assert!(!bad_answer.starts_with("OK"), "{bad_answer:?}");
    assert_eq!(reply, Summary::of_bytes(b"").reply_line());
}
