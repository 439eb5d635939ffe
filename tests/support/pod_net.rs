//! A network namespace that plays the host for pod networking tests (tests/vm_pod_net.rs,
//! tests/vm_real_images.rs): rkt, the stage1 and the CNI plugins run inside it (`nsenter
//! --net`), so the pods' host-side interfaces, routes, iptables rules and the tests' own servers
//! all live there, and traffic stays between that namespace and the pods. Plus what those tests
//! ask of a running pod: its addresses from `rkt status`, HTTP, UDP, and that gc released
//! everything.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::{rkt_binary, run_with_limit, Finished, RktWorld, POD_LIMIT};

/// The test host's own address, on a dummy interface: what `--port` and the pods reach.
pub const HOST_IP: &str = "10.99.0.1";
/// The test host's own IPv6 address, on the same interface.
pub const HOST_IP6: &str = "fd99::1";
/// How long a pod may take to answer once started (boot included, under emulation).
pub const UP_LIMIT: Duration = Duration::from_secs(120);
/// A network namespace playing the host; removed (with everything in it) on drop.
pub struct TestHost {
    name: String,
}

impl TestHost {
    /// The namespace's name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn new(label: &str) -> TestHost {
        let name = format!("rkt-pn-{label}-{}", std::process::id());
        // The first `ip netns add` of a boot sets up /run/netns; two at once can collide.
        static CREATING: Mutex<()> = Mutex::new(());
        let _one = CREATING.lock().unwrap_or_else(|p| p.into_inner());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let host = TestHost { name };
        host.ip(&["link", "set", "lo", "up"]);
        host.ip(&["link", "add", "d0", "type", "dummy"]);
        host.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "d0"]);
        // nodad: usable at once (nothing else is on this link).
        host.ip(&[
            "addr",
            "add",
            &format!("{HOST_IP6}/64"),
            "dev",
            "d0",
            "nodad",
        ]);
        host.ip(&["link", "set", "d0", "up"]);
        host
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args);
        ip(&all);
    }

    /// `program` inside the test host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg(program);
        command
    }

    /// `rkt --dir=... --local-config=... --insecure-options=image ARGS` inside the test host.
    pub fn rkt(&self, world: &RktWorld, args: &[&str]) -> Command {
        let mut command = self.command(rkt_binary());
        command
            .arg(format!("--dir={}", world.data_dir().display()))
            .arg(format!("--local-config={}", local_config(world).display()))
            .arg("--insecure-options=image")
            .args(args);
        command
    }

    pub fn rkt_ok(&self, world: &RktWorld, args: &[&str]) -> String {
        let run = run_with_limit(&mut self.rkt(world, args), POD_LIMIT);
        assert_eq!(run.code(), 0, "rkt {args:?}: {run}");
        run.stdout
    }

    /// Runs `work` on a thread that has joined the test host's namespace.
    pub fn inside<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = fs::File::open(self.path()).expect("the test host's namespace file");
        thread::spawn(move || {
            // SAFETY: setns only moves this short-lived thread; `ns` is an open namespace file.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
        .join()
        .expect("the thread in the test host")
    }

    /// An HTTP/1.0 GET of `path` from `addr` (IP:PORT) in the test host; the body of a 200.
    pub fn http_get(&self, addr: &str, path: &str) -> Option<String> {
        let addr: SocketAddr = addr.parse().unwrap();
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        self.inside(move || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .ok()?;
            stream.write_all(request.as_bytes()).ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).ok()?;
            let text = String::from_utf8_lossy(&answer).into_owned();
            let (head, body) = text.split_once("\r\n\r\n")?;
            head.lines()
                .next()?
                .contains(" 200 ")
                .then(|| body.to_string())
        })
    }

    /// An HTTP/1.0 GET of `path` from `addr` in the test host that must complete within
    /// `limit`; the body of a 200, or what went wrong.
    pub fn http_get_within(
        &self,
        addr: &str,
        path: &str,
        limit: Duration,
    ) -> Result<String, String> {
        let addr: SocketAddr = addr.parse().unwrap();
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        self.inside(move || {
            let deadline = Instant::now() + limit;
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .map_err(|e| format!("connect: {e}"))?;
            stream.set_read_timeout(Some(limit)).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = stream
                    .read(&mut chunk)
                    .map_err(|e| format!("after {} bytes: {e}", answer.len()))?;
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&chunk[..n]);
                if Instant::now() > deadline {
                    return Err(format!("only {} bytes in {limit:?}", answer.len()));
                }
            }
            let text = String::from_utf8_lossy(&answer).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
            match head.lines().next() {
                Some(status) if status.contains(" 200 ") => Ok(body.to_string()),
                other => Err(format!("status {other:?}")),
            }
        })
    }

    /// One UDP datagram to `addr` (IP:PORT) from the test host; the reply, if one comes.
    pub fn udp_ask(&self, addr: &str) -> Option<String> {
        let addr: SocketAddr = addr.parse().unwrap();
        self.inside(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
            socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut buffer = [0u8; 256];
            for _ in 0..5 {
                socket.send_to(b"ping\n", addr).ok()?;
                if let Ok((n, _)) = socket.recv_from(&mut buffer) {
                    return Some(String::from_utf8_lossy(&buffer[..n]).trim().to_string());
                }
            }
            None
        })
    }

    /// A busybox httpd in the test host serving `dir` on `HOST_IP:port` (and every other
    /// IPv4 address of the test host).
    pub fn serve(&self, dir: &Path, port: u16) -> Server {
        self.serve_on(dir, &format!("0.0.0.0:{port}"))
    }

    /// A busybox httpd in the test host serving `dir` on `addr` (`IP:PORT`, `[IPv6]:PORT`).
    pub fn serve_on(&self, dir: &Path, addr: &str) -> Server {
        Server(
            self.command("busybox")
                .args(["httpd", "-f", "-p", addr, "-h"])
                .arg(dir)
                .stdin(Stdio::null())
                .spawn()
                .expect("busybox httpd in the test host"),
        )
    }

    /// The iptables rules the CNI plugins made for pods in the test host: ptp's masquerade
    /// chains (`CNI-<hash>`, commented with the pod's ID) and portmap's per-pod chains
    /// (`CNI-DN-<hash>`, and the jumps to them). portmap's shared entry chains
    /// (`CNI-HOSTPORT-*`) stay, empty, by the plugin's design: they are the host's, not a pod's.
    pub fn cni_rules(&self) -> Vec<String> {
        let out = output(&mut self.command("iptables-save"))
            + &output(&mut self.command("ip6tables-save"));
        out.lines()
            .filter(|l| l.contains("CNI") || l.contains("cni"))
            .filter(|l| l.contains("CNI-DN-") || !l.contains("CNI-HOSTPORT-"))
            .map(str::to_string)
            .collect()
    }

    /// The test host's interfaces other than lo, d0 and bridges that networks name (the
    /// bridge plugin creates the bridge once and leaves it, like the network itself): the
    /// pods' host-side ends.
    pub fn pod_links(&self) -> Vec<String> {
        output(self.command("ip").args(["-o", "link", "show"]))
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .filter(|n| n != "lo" && n != "d0" && n != "rktbr0")
            .collect()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A server process, killed on drop.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn output(command: &mut Command) -> String {
    let out: Output = command.output().expect("run a command");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn local_config(world: &RktWorld) -> PathBuf {
    world.root.path().join("etc-rkt")
}

/// A `rkt run` in the background; its output when it ends.
pub struct Running {
    child: Option<thread::JoinHandle<Finished>>,
    uuid_file: PathBuf,
}

impl Running {
    pub fn start(host: &TestHost, world: &RktWorld, label: &str, args: &[&str]) -> Running {
        Running::start_with_limit(host, world, label, args, POD_LIMIT)
    }

    /// [`Running::start`] for a pod that may run up to `limit` (then it is killed).
    pub fn start_with_limit(
        host: &TestHost,
        world: &RktWorld,
        label: &str,
        args: &[&str],
        limit: Duration,
    ) -> Running {
        let uuid_file = world.root.path().join(format!("{label}.uuid"));
        let mut all = vec![
            "run".to_string(),
            format!("--uuid-file-save={}", uuid_file.display()),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut command = host.rkt(world, &refs);
        Running {
            child: Some(thread::spawn(move || run_with_limit(&mut command, limit))),
            uuid_file,
        }
    }

    pub fn uuid(&self) -> String {
        let deadline = Instant::now() + UP_LIMIT;
        loop {
            if let Ok(uuid) = fs::read_to_string(&self.uuid_file) {
                if uuid.len() == 36 {
                    return uuid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no UUID in {}",
                self.uuid_file.display()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn finish(mut self) -> Finished {
        self.child
            .take()
            .unwrap()
            .join()
            .expect("the rkt run thread")
    }
}

/// The address of `family` (`ip4`, `ip6`) rkt shows for network `net` of pod `uuid` in
/// `rkt status` (`NET:ip4=ADDR, NET:ip6=ADDR`), once there is one; None if the pod ends first.
pub fn try_pod_address(
    host: &TestHost,
    world: &RktWorld,
    uuid: &str,
    net: &str,
    family: &str,
) -> Option<String> {
    let deadline = Instant::now() + UP_LIMIT;
    let key = format!("{net}:{family}=");
    loop {
        let status = host.rkt_ok(world, &["status", uuid]);
        let found = status
            .lines()
            .find_map(|l| l.strip_prefix("networks="))
            .and_then(|nets| {
                nets.split(',')
                    .map(str::trim)
                    .find_map(|n| n.strip_prefix(key.as_str()))
                    .map(str::to_string)
            })
            .filter(|ip| !ip.is_empty());
        if found.is_some() {
            return found;
        }
        if status.contains("state=exited") || Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// The pod's IPv4 address on `net` ([`try_pod_address`]), failing the test with the pod's
/// output when there is none.
pub fn pod_ip(host: &TestHost, world: &RktWorld, pod: Running, net: &str) -> (String, Running) {
    pod_address(host, world, pod, net, "ip4")
}

/// The pod's IPv6 address on `net`, as [`pod_ip`].
pub fn pod_ip6(host: &TestHost, world: &RktWorld, pod: Running, net: &str) -> (String, Running) {
    pod_address(host, world, pod, net, "ip6")
}

fn pod_address(
    host: &TestHost,
    world: &RktWorld,
    pod: Running,
    net: &str,
    family: &str,
) -> (String, Running) {
    let uuid = pod.uuid();
    match try_pod_address(host, world, &uuid, net, family) {
        Some(ip) => (ip, pod),
        None => panic!(
            "pod {uuid} has no {family} address on {net}: {}",
            pod.finish()
        ),
    }
}

/// Polls `http://addr/` from the test host until it answers.
pub fn wait_http(host: &TestHost, addr: &str) -> Option<String> {
    let deadline = Instant::now() + UP_LIMIT;
    while Instant::now() < deadline {
        if let Some(body) = host.http_get(addr, "/") {
            return Some(body);
        }
        thread::sleep(Duration::from_millis(500));
    }
    None
}

pub fn leases(net: &str) -> Vec<String> {
    fs::read_dir(Path::new("/var/lib/cni/networks").join(net))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // A lease is a file named by its address, IPv4 or IPv6.
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn pod_namespaces() -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with("rkt-")
                        && !n.starts_with("rkt-pn-")
                        && !n.starts_with("rkt-test-")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// After gc: no pod, lease, namespace, host-side interface or CNI rule is left.
pub fn assert_released(host: &TestHost, world: &RktWorld, nets: &[&str]) {
    host.rkt_ok(world, &["gc", "--grace-period=0s"]);
    for state in ["run", "exited-garbage", "garbage"] {
        assert!(world.pods_in(state).is_empty(), "pods left in {state}/");
    }
    for net in nets {
        assert!(
            leases(net).is_empty(),
            "leases left in {net}: {:?}",
            leases(net)
        );
    }
    assert!(
        pod_namespaces().is_empty(),
        "namespaces left: {:?}",
        pod_namespaces()
    );
    assert!(
        host.pod_links().is_empty(),
        "interfaces left: {:?}",
        host.pod_links()
    );
    assert!(
        host.cni_rules().is_empty(),
        "rules left: {:?}",
        host.cni_rules()
    );
}
