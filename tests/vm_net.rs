//! virtio-net end to end: a guest NIC on a tap, with all traffic inside a network namespace
//! this test creates (and deletes, even when it fails), so nothing touches the machine's own
//! network.
//!
//! In the namespace: a tap `tap0` with 10.0.2.1/24 (what the pod network wiring will make),
//! a busybox httpd on 10.0.2.1:8080, and `rkt-vmm --tap tap0,mac=...` itself (the VMM attaches to
//! taps in its own namespace). The guest brings eth0 up as 10.0.2.2/24, pings the host side,
//! fetches a 1 MiB file from the host's httpd and prints its SHA-256, then serves a 1 MiB file
//! of its own with busybox httpd, which the test fetches from the namespace and checks. Bulk
//! TCP both ways exercises the checksum and segmentation offloads the guest negotiates.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use e2e::{busybox_initramfs, cmdline, rkt_vmm, run_with_limit, vmlinux, Finished, BOOT_LIMIT};

const GUEST_MAC: &str = "52:54:00:12:34:56";
const BLOB_LEN: usize = 1 << 20;

/// A network namespace for one test, with `tap0` (10.0.2.1/24, up); deleted on drop, which
/// also deletes the tap once the VMM has exited.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new(label: &str) -> Namespace {
        let name = format!("rkt-test-{label}-{}", std::process::id());
        // A namespace left by a crashed run of the same pid would make `add` fail.
        // The first `ip netns add` of a boot sets up the /run/netns mount; two at once can
        // trip over each other there, and the tests of this file run in parallel.
        static CREATING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = CREATING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Namespace { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ns.ip(&["addr", "add", "10.0.2.1/24", "dev", "tap0"]);
        ns.ip(&["link", "set", "tap0", "up"]);
        ns
    }

    /// `ip -n NS ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args);
        ip(&all);
    }

    /// A command run inside the namespace.
    fn command(&self, program: &Path) -> Command {
        in_namespace(&self.name, program)
    }
}

/// `program` run inside the network namespace `name`.
fn in_namespace(name: &str, program: &Path) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", name]).arg(program);
    command
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A plain HTTP/1.0 GET from inside the namespace `ns` (on a thread that joins it); the body
/// of a 200 answer, None for anything else (nobody listening yet, an error status, a timeout).
fn http_get_in(ns: &str, addr: &str, path: &str) -> Option<Vec<u8>> {
    let ns_file = fs::File::open(format!("/run/netns/{ns}")).expect("the namespace's file");
    let addr: SocketAddr = addr.parse().unwrap();
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    thread::spawn(move || {
        // SAFETY: setns only changes this (short-lived) thread's network namespace; the fd is
        // an open namespace file.
        let ret = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns: {}", std::io::Error::last_os_error());
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status_line = answer.split(|b| *b == b'\n').next()?;
        if !String::from_utf8_lossy(status_line).contains(" 200 ") {
            return None;
        }
        Some(answer[end + 4..].to_vec())
    })
    .join()
    .expect("the HTTP client thread")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed and reaped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bytes that compress badly and differ per `seed` (xorshift).
fn blob(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..BLOB_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Boots the guest inside the namespace `ns` with `flags` and the command `guest` (run by
/// /bin/sh -c).
fn boot_in(ns: &str, flags: &[&str], guest: &str) -> Finished {
    let mut command = in_namespace(ns, &rkt_vmm());
    command
        .args(flags)
        .arg("--kernel")
        .arg(vmlinux())
        .arg("--initrd")
        .arg(busybox_initramfs())
        .arg("--cmdline")
        .arg(cmdline(&format!("/bin/sh -c \"{guest}\"")))
        .arg("--mem")
        .arg("256");
    run_with_limit(&mut command, BOOT_LIMIT)
}

/// The value after `label` on a line of the guest's output.
fn value(run: &Finished, label: &str) -> String {
    run.stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line: {run}"))
        .trim()
        .to_string()
}

#[test]
fn the_guest_talks_tcp_and_icmp_with_its_namespace_both_ways() {
    let ns = Namespace::new("net");
    // Not the default, so that the guest's eth0 visibly takes the tap's MTU over.
    ns.ip(&["link", "set", "tap0", "mtu", "1400"]);
    let www = tempfile::tempdir().unwrap();
    let to_guest = www.path().join("blob");
    fs::write(&to_guest, blob(7)).unwrap();
    let expected_in_guest = sha256_of(&to_guest);
    let _httpd = Server(
        ns.command(Path::new("/bin/busybox"))
            .args(["httpd", "-f", "-p", "10.0.2.1:8080", "-h"])
            .arg(www.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("start busybox httpd in the namespace"),
    );

    // The guest: network up, ping, fetch, then serve its own blob until the test says done.
    let guest = [
        "echo mac=$(cat /sys/class/net/eth0/address)",
        "echo features=$(cat /sys/class/net/eth0/device/features)",
        "echo mtu=$(cat /sys/class/net/eth0/mtu)",
        "ip link set eth0 up",
        "ip addr add 10.0.2.2/24 dev eth0",
        "ping -c 3 -W 10 10.0.2.1 > /ping.out; echo ping-status=$?; cat /ping.out",
        "wget -q -O /fetched http://10.0.2.1:8080/blob; echo wget-status=$?",
        "echo fetched=$(sha256sum /fetched)",
        "mkdir /www",
        "head -c 1048576 /dev/urandom > /www/blob",
        "echo served=$(sha256sum /www/blob)",
        "httpd -p 10.0.2.2:8080 -h /www",
        "n=0; until wget -q -O /dev/null http://10.0.2.1:8080/done 2>/dev/null; do \
         n=$((n+1)); test $n -gt 600 && break; sleep 0.2; done",
        "echo guest-done",
    ]
    .join("; ");
    let vm = {
        let ns_name = ns.name.clone();
        let guest = guest.clone();
        thread::spawn(move || {
            boot_in(
                &ns_name,
                &["--tap", &format!("tap0,mac={GUEST_MAC}")],
                &guest,
            )
        })
    };

    // Fetch the guest's file from the namespace once its httpd answers.
    let from_guest = www.path().join("from-guest");
    let deadline = Instant::now() + BOOT_LIMIT;
    let fetched = loop {
        if vm.is_finished() || Instant::now() > deadline {
            break false;
        }
        if let Some(body) = http_get_in(&ns.name, "10.0.2.2:8080", "/blob") {
            fs::write(&from_guest, body).unwrap();
            break true;
        }
        thread::sleep(Duration::from_millis(300));
    };
    fs::write(www.path().join("done"), "done\n").unwrap();
    let run = vm.join().expect("the VM thread");
    assert!(fetched, "the guest's httpd never answered: {run}");

    assert_eq!(run.code(), 0, "{run}");
    assert_eq!(value(&run, "mac="), GUEST_MAC, "{run}");
    // The driver took the offloads, so the transfers above went through them: checksums left
    // to the other side (CSUM 0, GUEST_CSUM 1), 64 KiB TSO frames (GUEST_TSO4 7, HOST_TSO4 11)
    // spread over mergeable receive buffers (MRG_RXBUF 15). The file lists feature bits as 0/1
    // characters, bit 0 first.
    let features = value(&run, "features=");
    for bit in [0, 1, 7, 11, 15] {
        assert_eq!(
            features.as_bytes().get(bit),
            Some(&b'1'),
            "bit {bit}: {run}"
        );
    }
    assert_eq!(value(&run, "ping-status="), "0", "{run}");
    assert!(run.stdout.contains("3 packets received"), "{run}");
    assert_eq!(value(&run, "wget-status="), "0", "{run}");
    assert!(
        value(&run, "fetched=").starts_with(&expected_in_guest),
        "the guest got other bytes than the host served: {run}"
    );
    assert_eq!(fs::metadata(&from_guest).unwrap().len(), BLOB_LEN as u64);
    assert!(
        value(&run, "served=").starts_with(&sha256_of(&from_guest)),
        "the host got other bytes than the guest served: {run}"
    );
    assert!(run.stdout.contains("guest-done"), "{run}");
}

#[test]
fn a_missing_tap_is_a_one_line_error_naming_the_fix() {
    let ns = Namespace::new("notap");
    let run = boot_in(&ns.name, &["--tap", "nosuch0"], "echo booted");
    assert_eq!(run.code(), 254, "{run}");
    assert!(!run.stdout.contains("booted"), "{run}");
    let line = run.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{run}");
    assert!(line.starts_with("rkt-vmm: error:"), "{run}");
    assert!(line.contains("ip tuntap add dev nosuch0 mode tap"), "{run}");
}

#[test]
fn a_bad_mac_is_a_usage_error() {
    let run = run_with_limit(
        Command::new(rkt_vmm()).args([
            "--kernel",
            "k",
            "--cmdline",
            "x",
            "--tap",
            "tap0,mac=01:00:5e:00:00:01",
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(run.code(), 2, "{run}");
    assert!(run.stderr.contains("multicast"), "{run}");
}
