//! Pod networking end to end (docs/networking.md): `rkt run` through the real `rkt` binary and
//! the installed kvm stage1, with the real CNI plugins, on busybox ACIs built here.
//!
//! Every test makes its own "test host" network namespace (`e2e::pod_net::TestHost`) and runs
//! rkt inside it (`nsenter --net`, so rkt, the stage1 and the CNI plugins see that namespace as
//! the host's): the pods' host-side interfaces, routes, iptables rules and the test's own
//! servers all live there, and traffic stays between that namespace and the pods. The leases (/var/lib/cni/networks) and the
//! pods' namespaces (/run/netns) are checked by name. Boots are slow under emulation, so each
//! pod checks several things.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use e2e::pod_net::{
    assert_released, leases, local_config, output, pod_ip, pod_ip6, pod_namespaces, wait_http,
    Running, TestHost, HOST_IP, HOST_IP6, UP_LIMIT,
};
use e2e::{busybox_image_root, guest_tool, run_with_limit, Finished, RktWorld, POD_LIMIT};

/// The tests share the machine's CNI state (leases in /var/lib/cni/networks, pod namespaces
/// in /run/netns) and check it is empty afterwards: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The pod's bulk file for the guest -> host transfer: `seq 1 BULK_LINES`, 6.9 MB.
const BULK_LINES: u32 = 1_000_000;
/// Generous: the emulated host moves it in seconds; a device that loses the guest's transmit
/// notifications took minutes.
const BULK_LIMIT: Duration = Duration::from_secs(90);

/// An ACI named `name` whose app runs `sh -c script`, declares `ports` (name, protocol, port)
/// and serves `www/index.html` = `page`.
fn web_aci(
    world: &RktWorld,
    name: &str,
    script: &str,
    ports: &[(&str, &str, u16)],
    page: &str,
) -> String {
    let build = world.root.path().join(format!("build-{name}"));
    let rootfs = build.join("rootfs");
    busybox_image_root(&rootfs);
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::write(rootfs.join("www/index.html"), page).unwrap();
    fs::copy(guest_tool("rkt-udp-echo"), rootfs.join("bin/rkt-udp-echo"))
        .expect("target/x86_64-unknown-linux-gnu/release/rkt-udp-echo (tools/setup builds it)");
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p, port)| format!(r#"{{"name":"{n}","protocol":"{p}","port":{port}}}"#))
        .collect();
    let manifest = format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/{name}",
  "labels":[{{"name":"version","value":"1"}},{{"name":"os","value":"linux"}},{{"name":"arch","value":"amd64"}}],
  "app":{{"exec":["/bin/sh","-c",{script:?}],"user":"0","group":"0","ports":[{}]}}}}"#,
        ports.join(",")
    );
    fs::write(build.join("manifest"), manifest).unwrap();
    let aci = world.root.path().join(format!("{name}.aci"));
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&build)
        .arg("-cf")
        .arg(&aci)
        .args(["manifest", "rootfs"])
        .status()
        .unwrap();
    assert!(tar.success());
    aci.display().to_string()
}

/// The pod's script tail: wait until the test host serves `/done-<tag>` (so the test decides
/// when the pod ends), at most ~3 minutes.
fn until_done(tag: &str) -> String {
    format!(
        "n=0; until wget -q -O /dev/null http://{HOST_IP}:8000/done-{tag} 2>/dev/null; do \
         n=$((n+1)); test $n -gt 900 && break; sleep 0.2; done; echo {tag}-done"
    )
}

fn value_of(run: &Finished, key: &str) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The default network: a web pod reached from the test host by its address and through
/// `--port` (TCP and UDP), reaching the test host's server itself, with the `--dns*` and
/// `--hosts-entry` flags in its files; a second pod on the same network fetching from the
/// first; list/status/net-info while running; after gc nothing is left.
#[test]
fn default_network_pods_reach_the_host_each_other_and_forwarded_ports() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let host = TestHost::new("default");
    let world = RktWorld::new();
    let www = tempfile::tempdir().unwrap();
    fs::write(www.path().join("index.html"), "hello-from-host\n").unwrap();
    let _server = host.serve(www.path(), 8000);

    let web_script = format!(
        "echo ifaces=$(ls /sys/class/net | tr '\\n' ' '); \
         echo mac=$(cat /sys/class/net/eth0/address); echo mtu=$(cat /sys/class/net/eth0/mtu); \
         echo resolv; cat /etc/resolv.conf; echo hosts; cat /etc/hosts; \
         echo from-host=$(wget -q -O - http://{HOST_IP}:8000/); \
         seq 1 {BULK_LINES} >/www/bulk.txt; httpd -p 80 -h /www; rkt-udp-echo 53 udp-pong & \
         {}",
        until_done("web")
    );
    let web = web_aci(
        &world,
        "web",
        &web_script,
        &[("http", "tcp", 80), ("dns", "udp", 53)],
        "hello-from-web\n",
    );
    let a = Running::start(
        &host,
        &world,
        "web",
        &[
            "--port=http:8080",
            "--port=dns:5353",
            "--dns=10.99.0.53",
            "--dns-search=pods.example",
            "--dns-opt=ndots:3",
            "--dns-domain=example",
            "--hosts-entry=10.99.0.7=db.example",
            &web,
        ],
    );
    let a_uuid = a.uuid();
    let (a_ip, a) = pod_ip(&host, &world, a, "default");
    assert!(a_ip.starts_with("172.16.28."), "{a_ip}");
    let by_ip = wait_http(&host, &format!("{a_ip}:80"));
    let by_port = host.http_get(&format!("{HOST_IP}:8080"), "/");
    let by_udp = host.udp_ask(&format!("{HOST_IP}:5353"));
    // A bulk transfer guest -> host: with the guest's TSO frames, and the virtio-net device's
    // notification suppression asked of the driver at the right ring position. (When it was
    // not, guest transmits went out only when something else woke the device and this took
    // minutes.) Completion and integrity are asserted, speed is tools/bench-net's business.
    let bulk = host.http_get_within(&format!("{a_ip}:80"), "/bulk.txt", BULK_LIMIT);

    // The second pod fetches the first one's page by its address.
    let client_script = format!(
        "echo from-web=$(wget -q -O - http://{a_ip}/); {}",
        until_done("client")
    );
    let client = web_aci(&world, "client", &client_script, &[], "");
    fs::write(www.path().join("done-client"), "").unwrap();
    let b = Running::start(&host, &world, "client", &[&client]);
    let (b_ip, b) = pod_ip(&host, &world, b, "default");
    let list = host.rkt_ok(&world, &["list", "--full"]);
    let net_info = fs::read_to_string(
        world
            .data_dir()
            .join("pods/run")
            .join(&a_uuid)
            .join("net-info.json"),
    )
    .unwrap_or_default();
    let leases_running = leases("default");
    let b_run = b.finish();
    fs::write(www.path().join("done-web"), "").unwrap();
    let a_run = a.finish();

    assert_eq!(a_run.code(), 0, "{a_run}");
    assert_eq!(b_run.code(), 0, "{b_run}");
    assert_eq!(by_ip.as_deref(), Some("hello-from-web\n"), "{a_run}");
    assert_eq!(
        by_port.as_deref(),
        Some("hello-from-web\n"),
        "--port tcp: {a_run}"
    );
    assert_eq!(by_udp.as_deref(), Some("udp-pong"), "--port udp: {a_run}");
    let expected: String = (1..=BULK_LINES).map(|n| format!("{n}\n")).collect();
    match bulk {
        Ok(body) => assert!(
            body == expected,
            "bulk.txt from the pod: {} bytes, not the {} of `seq 1 {BULK_LINES}`",
            body.len(),
            expected.len()
        ),
        Err(why) => panic!("bulk.txt from the pod: {why}; {a_run}"),
    }
    assert_eq!(value_of(&a_run, "from-host="), "hello-from-host", "{a_run}");
    assert_eq!(value_of(&b_run, "from-web="), "hello-from-web", "{b_run}");
    assert_eq!(value_of(&a_run, "ifaces="), "eth0 lo", "{a_run}");
    assert_eq!(value_of(&a_run, "mtu="), "1500", "{a_run}");
    assert_ne!(a_ip, b_ip);
    for line in [
        "nameserver 10.99.0.53",
        "search pods.example",
        "options ndots:3",
        "domain example",
        "10.99.0.7 db.example",
    ] {
        assert!(a_run.stdout.contains(line), "{line:?} missing: {a_run}");
    }
    assert!(list.contains(&format!("default:ip4={a_ip}")), "{list}");
    assert!(list.contains(&format!("default:ip4={b_ip}")), "{list}");
    assert!(net_info.contains(r#""netName":"default""#), "{net_info}");
    assert!(
        net_info.contains(&format!(r#""ip":"{a_ip}""#)),
        "{net_info}"
    );
    assert!(
        leases_running.contains(&a_ip) && leases_running.contains(&b_ip),
        "{leases_running:?}"
    );
    assert_released(&host, &world, &["default"]);
}

/// `--net=none` (loopback only, `[::1]` included), a dual-stack bridge network from a conf
/// file in `--local-config`'s net.d with a fixed IPv4 address (`--net=NAME:IP=...`) plus the
/// default-restricted network rkt adds, refusals that leave nothing behind, and gc after
/// `kill -9` of a running pod.
#[test]
fn none_bridge_conf_refusals_and_gc_after_kill() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let host = TestHost::new("bridge");
    let world = RktWorld::new();
    let www = tempfile::tempdir().unwrap();
    fs::write(www.path().join("index.html"), "hello-from-host\n").unwrap();
    let _server = host.serve(www.path(), 8000);
    let net_d = local_config(&world).join("net.d");
    fs::create_dir_all(&net_d).unwrap();
    fs::write(
        net_d.join("10-podbr.conf"),
        r#"{"cniVersion":"0.4.0","name":"podbr","type":"bridge","bridge":"rktbr0","isGateway":true,
            "ipam":{"type":"host-local",
                    "ranges":[[{"subnet":"10.88.0.0/24"}],[{"subnet":"fd52:6b74:88::/64"}]],
                    "routes":[{"dst":"10.99.0.0/24"},{"dst":"fd99::/64"}]}}"#,
    )
    .unwrap();

    // Refusals: one clear line, nothing set up.
    let image = web_aci(&world, "probe", "true", &[], "");
    for (args, says) in [
        (vec!["--net=host", image.as_str()], "--net=host"),
        (
            vec!["--net=nosuch", image.as_str()],
            "no network configuration named nosuch",
        ),
    ] {
        let mut all = vec!["run"];
        all.extend(args.iter().copied());
        let run = run_with_limit(&mut host.rkt(&world, &all), POD_LIMIT);
        assert_ne!(run.code(), 0, "{run}");
        assert!(run.stderr.contains(says), "{says}: {run}");
        assert!(pod_namespaces().is_empty(), "{:?}", pod_namespaces());
    }

    // IPv6 on loopback works without any network: a server on [::1] and a client of it.
    let none_script = "echo ifaces=$(ls /sys/class/net | tr '\\n' ' '); \
                       ping -c 1 -W 5 127.0.0.1 >/dev/null && echo lo-ping=ok; \
                       httpd -p [::1]:81 -h /www && echo lo6=$(wget -q -O - http://[::1]:81/)";
    let none = web_aci(&world, "none", none_script, &[], "hello-from-lo6\n");
    let run = run_with_limit(
        &mut host.rkt(&world, &["run", "--net=none", &none]),
        POD_LIMIT,
    );
    assert_eq!(run.code(), 0, "{run}");
    assert_eq!(value_of(&run, "ifaces="), "lo", "{run}");
    assert_eq!(value_of(&run, "lo-ping="), "ok", "{run}");
    assert_eq!(value_of(&run, "lo6="), "hello-from-lo6", "{run}");

    let bridge_script = format!(
        "echo ifaces=$(ls /sys/class/net | tr '\\n' ' '); \
         echo addr6=$(ip -o -6 addr show dev eth0 scope global | awk '{{print $4}}'); \
         echo from-host=$(wget -q -O - http://{HOST_IP}:8000/); httpd -p 80 -h /www; {}",
        until_done("bridge")
    );
    let bridged = web_aci(
        &world,
        "bridged",
        &bridge_script,
        &[],
        "hello-from-bridge\n",
    );
    let pod = Running::start(
        &host,
        &world,
        "bridged",
        // --debug: the stage1 then has the plugin CHECK our wiring of its interface.
        &["--debug", "--net=podbr:IP=10.88.0.42", &bridged],
    );
    let (ip, pod) = pod_ip(&host, &world, pod, "podbr");
    let (ip6, pod) = pod_ip6(&host, &world, pod, "podbr");
    let (restricted, pod) = pod_ip(&host, &world, pod, "default-restricted");
    let page = wait_http(&host, "10.88.0.42:80");
    // The bridge's IPv6 subnet is on link in the guest (a /64, not ptp's /128).
    let page6 = wait_http(&host, &format!("[{ip6}]:80"));
    let bridge_links = output(
        host.command("ip")
            .args(["-o", "link", "show", "master", "rktbr0"]),
    );
    fs::write(www.path().join("done-bridge"), "").unwrap();
    let run = pod.finish();
    assert_eq!(run.code(), 0, "{run}");
    // bridge's CHECK (with --debug) has a false alarm for a route without gw: a warning, not
    // a failure.
    assert!(
        run.stderr
            .contains("warning: network podbr: CNI plugin bridge CHECK"),
        "{run}"
    );
    assert_eq!(ip, "10.88.0.42");
    assert!(restricted.starts_with("172.31."), "{restricted}");
    assert_eq!(page.as_deref(), Some("hello-from-bridge\n"), "{run}");
    assert_eq!(page6.as_deref(), Some("hello-from-bridge\n"), "{run}");
    assert!(ip6.starts_with("fd52:6b74:88::"), "{ip6}");
    assert_eq!(value_of(&run, "addr6="), format!("{ip6}/64"), "{run}");
    assert_eq!(value_of(&run, "ifaces="), "eth0 eth1 lo", "{run}");
    assert_eq!(value_of(&run, "from-host="), "hello-from-host", "{run}");
    assert_eq!(bridge_links.lines().count(), 1, "{bridge_links}");
    host.rkt_ok(&world, &["gc", "--grace-period=0s"]);
    assert!(leases("podbr").is_empty() && leases("default-restricted").is_empty());

    // kill -9 of a running pod: its network stays until gc releases it.
    let sleeper = web_aci(&world, "sleeper", "sleep 600", &[], "");
    let killed = Running::start(&host, &world, "killed", &[&sleeper]);
    let uuid = killed.uuid();
    let (ip, killed) = pod_ip(&host, &world, killed, "default");
    let pid: i32 = {
        let deadline = Instant::now() + UP_LIMIT;
        loop {
            let status = host.rkt_ok(&world, &["status", &uuid]);
            if let Some(pid) = status.lines().find_map(|l| l.strip_prefix("pid=")) {
                if let Ok(pid) = pid.trim().parse() {
                    if pid > 0 {
                        break pid;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no pid: {status}");
            thread::sleep(Duration::from_millis(300));
        }
    };
    // SAFETY: plain kill(2) of the stage1 process the test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let run = killed.finish();
    assert!(!run.status.success(), "{run}");
    assert_eq!(leases("default"), [ip], "the lease stays until gc");
    assert_eq!(pod_namespaces(), [format!("rkt-{uuid}")]);
    assert_released(&host, &world, &["default", "podbr", "default-restricted"]);
}

/// A dual-stack network (ptp with host-local ranges of both families, from a conf file): the
/// pod gets an IPv4 and an IPv6 address and default routes of both families; one server bound
/// to `[::]` answers the test host over IPv4 and IPv6, directly and through `--port` (on every
/// host address, and on an IPv6 host address only); the pod reaches the test host over IPv6
/// and its own `[::1]`; `rkt status` and `rkt list` show both addresses; gc leaves nothing, in
/// iptables and ip6tables alike.
#[test]
fn dual_stack_network_gives_the_pod_ipv4_and_ipv6() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let host = TestHost::new("dual");
    let world = RktWorld::new();
    let www = tempfile::tempdir().unwrap();
    fs::write(www.path().join("index.html"), "hello-from-host\n").unwrap();
    let _server = host.serve(www.path(), 8000);
    let _server6 = host.serve_on(www.path(), &format!("[{HOST_IP6}]:8000"));
    // The network is this test's: leases from an earlier run (killed before gc) would change
    // which addresses the pod gets.
    let _ = fs::remove_dir_all("/var/lib/cni/networks/dual6");
    let net_d = local_config(&world).join("net.d");
    fs::create_dir_all(&net_d).unwrap();
    fs::write(
        net_d.join("20-dual6.conf"),
        r#"{"cniVersion":"0.4.0","name":"dual6","type":"ptp","ipMasq":true,
            "ipam":{"type":"host-local",
                    "ranges":[[{"subnet":"172.30.6.0/24"}],[{"subnet":"fd52:6b74:6::/64"}]],
                    "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}}"#,
    )
    .unwrap();

    let script = format!(
        "echo addr6=$(ip -o -6 addr show dev eth0 scope global | awk '{{print $4}}'); \
         echo route6=$(ip -6 route show default | awk '{{print $1,$2,$3}}'); \
         httpd -p [::1]:81 -h /www && echo lo6=$(wget -q -O - http://[::1]:81/); \
         echo from-host6=$(wget -q -O - http://[{HOST_IP6}]:8000/); \
         httpd -p [::]:80 -h /www; httpd -p [::]:82 -h /www; {}",
        until_done("dual")
    );
    let image = web_aci(
        &world,
        "dual",
        &script,
        &[("http", "tcp", 80), ("alt", "tcp", 82)],
        "hello-from-dual\n",
    );
    let pod = Running::start(
        &host,
        &world,
        "dual",
        &[
            "--net=dual6",
            "--port=http:8080",
            &format!("--port=alt:[{HOST_IP6}]:8082"),
            &image,
        ],
    );
    let (ip4, pod) = pod_ip(&host, &world, pod, "dual6");
    let (ip6, pod) = pod_ip6(&host, &world, pod, "dual6");
    let by_ip4 = wait_http(&host, &format!("{ip4}:80"));
    let by_ip6 = wait_http(&host, &format!("[{ip6}]:80"));
    let port4 = host.http_get(&format!("{HOST_IP}:8080"), "/");
    let port6 = host.http_get(&format!("[{HOST_IP6}]:8080"), "/");
    let alt6 = host.http_get(&format!("[{HOST_IP6}]:8082"), "/");
    // Bound to the IPv6 host address only: not forwarded from the IPv4 one.
    let alt4 = host.http_get(&format!("{HOST_IP}:8082"), "/");
    let list = host.rkt_ok(&world, &["list", "--full"]);
    let leases_running = leases("dual6");
    fs::write(www.path().join("done-dual"), "").unwrap();
    let run = pod.finish();

    assert_eq!(run.code(), 0, "{run}");
    assert!(ip4.starts_with("172.30.6."), "{ip4}");
    assert!(ip6.starts_with("fd52:6b74:6::"), "{ip6}");
    // ptp routes the subnet through the host, so the guest has its address as a /128.
    assert_eq!(value_of(&run, "addr6="), format!("{ip6}/128"), "{run}");
    assert_eq!(
        value_of(&run, "route6="),
        "default via fd52:6b74:6::1",
        "{run}"
    );
    assert_eq!(value_of(&run, "lo6="), "hello-from-dual", "{run}");
    assert_eq!(value_of(&run, "from-host6="), "hello-from-host", "{run}");
    assert_eq!(by_ip4.as_deref(), Some("hello-from-dual\n"), "{run}");
    assert_eq!(by_ip6.as_deref(), Some("hello-from-dual\n"), "{run}");
    assert_eq!(
        port4.as_deref(),
        Some("hello-from-dual\n"),
        "--port v4: {run}"
    );
    assert_eq!(
        port6.as_deref(),
        Some("hello-from-dual\n"),
        "--port v6: {run}"
    );
    assert_eq!(
        alt6.as_deref(),
        Some("hello-from-dual\n"),
        "--port [v6]: {run}"
    );
    assert_eq!(
        alt4, None,
        "--port bound to an IPv6 host address answered on IPv4"
    );
    assert!(
        list.contains(&format!("dual6:ip4={ip4}, dual6:ip6={ip6}")),
        "{list}"
    );
    assert!(
        leases_running.contains(&ip4) && leases_running.contains(&ip6),
        "{leases_running:?}"
    );
    assert_released(&host, &world, &["dual6"]);
}
