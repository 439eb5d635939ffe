//! Real images as Docker users bring them (issue 16): Debian's nginx with its default site,
//! redis-server, postgresql (initdb and a query) and `python3 -m http.server`, built from Debian
//! packages by `tests/images/build` (no outside registry), served by Debian's `docker-registry`
//! on loopback, fetched with `rkt fetch docker://...`, and run with
//! `rkt run --net=default --port=...` inside a namespace that plays the host
//! (`e2e::pod_net::TestHost`). Each is reached from there over IPv4 and IPv6, both through the
//! forwarded port and at the pod's own addresses, then stopped with `rkt stop` and gc'd with
//! nothing left.
//!
//! The `default` network here is dual stack: rkt's built-in default (ptp, masquerade,
//! host-local on 172.16.28.0/24, default route) plus an IPv6 range and default route, from a
//! file in `--local-config`'s net.d, which overrides the built-in one as in rkt.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use e2e::pod_net::{
    assert_released, local_config, pod_ip, pod_ip6, Running, TestHost, HOST_IP, HOST_IP6,
};
use e2e::registry::{corpus_image, LocalRegistry};
use e2e::{pod_leftovers, rkt_binary, run_with_limit, Finished, RktWorld};

/// One pod at a time: they share the machine's CNI state, which each test checks is released.
static SERIAL: Mutex<()> = Mutex::new(());

/// From `rkt run` to the service answering: boot, the image's own start-up (postgresql's
/// initdb is the slowest), all under emulation.
const SERVE_LIMIT: Duration = Duration::from_secs(300);
/// The whole pod: start, every check, stop.
const POD_RUN_LIMIT: Duration = Duration::from_secs(480);
/// Fetching from the local registry (unpacking 30-60 MB of layers under emulation).
const FETCH_LIMIT: Duration = Duration::from_secs(420);
/// The host port every test forwards.
const HOST_PORT: u16 = 8080;

/// rkt's default network with an IPv6 range added (see the module comment).
const DUAL_STACK_DEFAULT: &str = r#"{"cniVersion":"0.4.0","name":"default","type":"ptp",
  "ipMasq":true,
  "ipam":{"type":"host-local",
          "ranges":[[{"subnet":"172.16.28.0/24"}],[{"subnet":"fd52:6b74:28::/64"}]],
          "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}}"#;

/// How a test knows its service answered.
#[derive(Clone, Copy)]
enum Probe {
    /// An HTTP/1.0 GET of `/` answers 200 with a body containing this.
    Http(&'static str),
    /// `PING` answers `+PONG`, then a SET and a GET round-trip a value.
    Redis,
    /// A PostgreSQL server answers an SSLRequest with `N` (no TLS): the first message of the
    /// protocol, so it is the server answering and not something else on the port.
    Postgres,
}

/// Whether the bytes read so far are a whole answer (else: read until the server closes).
type AnswerComplete = fn(&[u8]) -> bool;

/// One exchange with `addr` (`IP:PORT`) from inside the test host; `Ok` with what answered.
fn ask(host: &TestHost, probe: Probe, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    host.inside(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let (request, done): (&[u8], AnswerComplete) = match probe {
            Probe::Http(_) => (b"GET / HTTP/1.0\r\n\r\n", |_| false),
            Probe::Redis => (b"PING\r\nSET corpus dual-stack\r\nGET corpus\r\n", |got| {
                got.ends_with(b"$10\r\ndual-stack\r\n")
            }),
            Probe::Postgres => (&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], |got| !got.is_empty()),
        };
        stream
            .write_all(request)
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        while !done(&answer) {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read from {addr}: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        let good = match probe {
            Probe::Http(wanted) => {
                text.starts_with("HTTP/1.") && text.contains(" 200 ") && text.contains(wanted)
            }
            Probe::Redis => text == "+PONG\r\n+OK\r\n$10\r\ndual-stack\r\n",
            Probe::Postgres => answer == b"N",
        };
        if good {
            Ok(text.lines().next().unwrap_or_default().to_string())
        } else {
            Err(format!("{addr} answered {text:?}"))
        }
    })
}

/// What one image's run showed.
struct Served {
    run: Finished,
    /// Every address the service answered at, with what it said.
    answers: Vec<(String, Result<String, String>)>,
    /// What the test's own step in the running pod returned (see [`serve`]'s `inside`).
    inside: Option<Finished>,
}

/// A step a test runs while its pod serves: given the test host, the world and the pod's UUID.
type Inside<'a> = &'a dyn Fn(&TestHost, &RktWorld, &str) -> Finished;

/// Pushes corpus image `name` to a local registry, fetches it from there, runs it on the dual
/// stack default network with `--port=PORT_NAME:8080`, asks `probe` at the forwarded port (IPv4
/// and IPv6 host addresses) and at the pod's own two addresses, runs `inside` if given, then
/// stops the pod and checks gc leaves nothing.
fn serve(
    name: &str,
    port_name: &str,
    pod_port: u16,
    probe: Probe,
    inside: Option<Inside>,
) -> Served {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let layout = corpus_image(name);
    let host = TestHost::new(name);
    let world = RktWorld::new();
    let net_d = local_config(&world).join("net.d");
    fs::create_dir_all(&net_d).unwrap();
    fs::write(net_d.join("99-default.conf"), DUAL_STACK_DEFAULT).unwrap();

    let registry = LocalRegistry::start();
    let reference = registry.push(&format!("oci:{layout}"), &format!("corpus/{name}:bookworm"));
    let started = Instant::now();
    // Not world.command: that passes --insecure-options=image already, and this needs http too.
    let fetched = run_with_limit(
        Command::new(rkt_binary())
            .arg(format!("--dir={}", world.data_dir().display()))
            .arg("--insecure-options=image,http")
            .arg("fetch")
            .arg(format!("docker://{reference}")),
        FETCH_LIMIT,
    );
    assert_eq!(
        fetched.code(),
        0,
        "rkt fetch docker://{reference}: {fetched}"
    );
    eprintln!(
        "{name}: fetched from the local registry in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The registry is gone before the pod starts: `run` finds the image by its Docker name
    // in the store (and the test host's loopback has no registry anyway).
    drop(registry);

    let run_started = Instant::now();
    let pod = Running::start_with_limit(
        &host,
        &world,
        name,
        &[
            "--net=default",
            &format!("--port={port_name}:{HOST_PORT}"),
            &reference,
        ],
        POD_RUN_LIMIT,
    );
    let uuid = pod.uuid();
    let (ip4, pod) = pod_ip(&host, &world, pod, "default");
    let (ip6, pod) = pod_ip6(&host, &world, pod, "default");
    let first = format!("{HOST_IP}:{HOST_PORT}");
    let deadline = Instant::now() + SERVE_LIMIT;
    let mut answers = vec![(first.clone(), ask(&host, probe, &first))];
    while answers[0].1.is_err() && Instant::now() < deadline {
        thread::sleep(Duration::from_secs(1));
        answers[0].1 = ask(&host, probe, &first);
    }
    eprintln!(
        "{name}: answering {:.1} s after rkt run started",
        run_started.elapsed().as_secs_f64()
    );
    for addr in [
        format!("[{HOST_IP6}]:{HOST_PORT}"),
        format!("{ip4}:{pod_port}"),
        format!("[{ip6}]:{pod_port}"),
    ] {
        let answer = ask(&host, probe, &addr);
        answers.push((addr, answer));
    }
    let inside = inside.map(|step| step(&host, &world, &uuid));
    let stopped = host.rkt(&world, &["stop", &uuid]).output().unwrap();
    let run = pod.finish();
    assert!(
        stopped.status.success(),
        "rkt stop {uuid}: {}\n{run}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    for (addr, answer) in &answers {
        assert!(answer.is_ok(), "{name} at {addr}: {answer:?}\n{run}");
    }
    assert_released(&host, &world, &["default"]);
    let left = pod_leftovers(&world.data_dir(), Some(host.name()));
    assert!(left.is_empty(), "{name}: left behind: {left:?}");
    Served {
        run,
        answers,
        inside,
    }
}

/// Debian's nginx with its stock default site, which listens on `[::]:80` as well as port 80:
/// it starts (it exited 1 before the guest kernel had IPv6), serves its welcome page on every
/// address, and its access log (a link to /dev/stdout, as in Docker's image) reaches
/// `rkt run`'s output.
#[test]
fn nginx_serves_its_default_site_over_ipv4_and_ipv6() {
    let served = serve(
        "nginx",
        "80-tcp",
        80,
        Probe::Http("Welcome to nginx!"),
        None,
    );
    assert_eq!(served.answers.len(), 4);
    assert!(
        served.run.stdout.contains("\"GET / HTTP/1.0\" 200"),
        "nginx's access log: {}",
        served.run
    );
}

/// redis-server bound to `0.0.0.0` and `::`: PING, SET and GET over both families.
#[test]
fn redis_answers_over_ipv4_and_ipv6() {
    let served = serve("redis", "6379-tcp", 6379, Probe::Redis, None);
    assert_eq!(served.answers.len(), 4);
}

/// postgresql: the app runs initdb in the pod and starts the server, which answers the
/// protocol's first message over both families; a query through `rkt enter` (psql over the
/// pod's `::1`) gets its answer.
#[test]
fn postgresql_initialises_answers_a_query_and_serves() {
    let query: Inside = &|host, world, uuid| {
        run_with_limit(
            &mut host.rkt(
                world,
                &[
                    "enter",
                    "--app=postgres",
                    uuid,
                    "psql",
                    "-h",
                    "::1",
                    "-U",
                    "postgres",
                    "-tAc",
                    "select 'answer=' || 6 * 7",
                ],
            ),
            Duration::from_secs(120),
        )
    };
    let served = serve("postgres", "5432-tcp", 5432, Probe::Postgres, Some(query));
    let query = served.inside.expect("the query ran");
    assert_eq!(
        query.code(),
        0,
        "rkt enter ... psql: {query}\n{}",
        served.run
    );
    assert_eq!(query.stdout.trim(), "answer=42", "{query}");
}

/// `python3 -m http.server --bind ::` (dual stack) serving its working directory.
#[test]
fn python_http_server_serves_over_ipv4_and_ipv6() {
    let served = serve(
        "python",
        "8000-tcp",
        8000,
        Probe::Http("hello-from-python"),
        None,
    );
    assert_eq!(served.answers.len(), 4);
}
