//! End-to-end appc meta discovery through the real `rkt` binary. Discovery
//! always asks port 80 (443 for https), so each test makes its own network
//! namespace with only a loopback interface, serves a directory there on
//! 127.0.0.1:80 with python3's `http.server`, and runs rkt inside it with
//! `ip netns exec`. Nothing leaves that namespace's loopback. Needs root,
//! `ip` (iproute2), python3, gpg and busybox-static.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Env, Gpg};

/// A network namespace with a web server on its 127.0.0.1:80. Dropping it
/// stops the server and deletes the namespace, whichever way the test ends.
struct Namespace {
    name: String,
    server: Option<Child>,
    root: tempfile::TempDir,
    /// With TLS: the server's self-signed certificate, which rkt is told to
    /// trust through SSL_CERT_FILE.
    certificate: Option<PathBuf>,
}

/// An HTTPS file server: python3's http.server behind an ssl context.
const HTTPS_SERVER: &str = r#"
import functools, http.server, ssl, sys
directory, cert, key = sys.argv[1:4]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
server = http.server.HTTPServer(("127.0.0.1", 443), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("Serving HTTPS", flush=True)
server.serve_forever()
"#;

impl Namespace {
    fn new() -> Namespace {
        Namespace::start(false)
    }

    /// With an HTTPS server on 443 instead of HTTP on 80.
    fn with_tls() -> Namespace {
        Namespace::start(true)
    }

    fn start(tls: bool) -> Namespace {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "rkt-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let root = tempfile::tempdir().unwrap();
        // Made before any step that can fail, so Drop always cleans up.
        let mut namespace = Namespace {
            name,
            server: None,
            root,
            certificate: None,
        };
        namespace.ip(&["netns", "add", &namespace.name]);
        namespace.ip(&["-n", &namespace.name, "link", "set", "lo", "up"]);
        if tls {
            namespace.start_https_server();
        } else {
            namespace.start_server();
        }
        namespace
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("these tests need iproute2's `ip`");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The directory the server publishes at http://127.0.0.1/.
    fn www(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    fn start_server(&mut self) {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .args(["python3", "-u", "-m", "http.server", "80"])
            .args(["--bind", "127.0.0.1", "--directory"])
            .arg(self.root.path());
        self.spawn_server(command);
    }

    /// A self-signed certificate for 127.0.0.1 (kept outside the served
    /// directory), then the HTTPS server.
    fn start_https_server(&mut self) {
        let keys = self
            .root
            .path()
            .join("..")
            .join(format!("{}-tls", self.name));
        fs::create_dir_all(&keys).unwrap();
        let (cert, key) = (keys.join("cert.pem"), keys.join("key.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("this test needs openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.certificate = Some(cert.clone());
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .args(["python3", "-u", "-c", HTTPS_SERVER])
            .arg(self.root.path())
            .arg(&cert)
            .arg(&key);
        self.spawn_server(command);
    }

    fn spawn_server(&mut self, mut command: Command) {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("these tests need python3");
        // Both servers print "Serving HTTP..." once they listen.
        let mut first_line = String::new();
        let stdout = child.stdout.take().unwrap();
        self.server = Some(child);
        BufReader::new(stdout).read_line(&mut first_line).unwrap();
        assert!(first_line.starts_with("Serving HTTP"), "{first_line:?}");
    }

    /// Runs rkt with `args` inside the namespace.
    fn rkt(&self, env: &Env, args: &[&str]) -> Output {
        let inner = env.command(args);
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(inner.get_program())
            .args(inner.get_args())
            .stdin(Stdio::null());
        if let Some(certificate) = &self.certificate {
            command.env("SSL_CERT_FILE", certificate);
        }
        command.output().unwrap()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let tls = self
            .root
            .path()
            .join("..")
            .join(format!("{}-tls", self.name));
        let _ = fs::remove_dir_all(tls);
    }
}

fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page `SCHEME://127.0.0.1/busybox-test?ac-discovery=1` serves (the
/// server ignores the query): ACIs under /images/, the key at /pubkeys.gpg.
fn publish_discovery_page(www: &Path, scheme: &str) {
    fs::write(
        www.join("busybox-test"),
        format!(r#"<!DOCTYPE html><html><head>
<meta name="ac-discovery" content="127.0.0.1/busybox-test {scheme}://127.0.0.1/images/busybox-test-{{version}}-{{os}}-{{arch}}.{{ext}}">
<meta name="ac-discovery-pubkeys" content="127.0.0.1/busybox-test {scheme}://127.0.0.1/pubkeys.gpg">
</head></html>"#),
    )
    .unwrap();
    fs::create_dir_all(www.join("images")).unwrap();
}

#[test]
fn fetch_and_trust_by_meta_discovery() {
    let namespace = Namespace::new();
    let env = Env::new();
    let www = namespace.www();
    publish_discovery_page(&www, "http");
    let tar = common::busybox_aci("127.0.0.1/busybox-test", "1.0", &[]);
    let aci = www.join("images/busybox-test-1.0-linux-amd64.aci");
    fs::write(&aci, &tar).unwrap();
    let gpg = Gpg::new();
    gpg.sign(aci.to_str().unwrap());
    gpg.export_public(www.join("pubkeys.gpg").to_str().unwrap());

    // Untrusted: the signature is found by discovery, but no key is trusted.
    let out = namespace.rkt(
        &env,
        &[
            "--insecure-options=http",
            "fetch",
            "127.0.0.1/busybox-test:1.0",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert!(
        err.contains("no keys are trusted for 127.0.0.1/busybox-test"),
        "{err}"
    );

    // The key comes from the ac-discovery-pubkeys tag.
    succeeded(
        &namespace.rkt(
            &env,
            &[
                "trust",
                "--prefix=127.0.0.1/busybox-test",
                "--insecure-allow-http",
                "--skip-fingerprint-review",
            ],
        ),
        "rkt trust by discovery",
    );
    let trusted = env
        .config
        .join("trustedkeys/prefix.d/127.0.0.1/busybox-test");
    assert_eq!(fs::read_dir(&trusted).unwrap().count(), 1);

    let id = succeeded(
        &namespace.rkt(
            &env,
            &[
                "--insecure-options=http",
                "fetch",
                "--full",
                "127.0.0.1/busybox-test:1.0",
            ],
        ),
        "rkt fetch by discovery",
    );
    use sha2::Digest;
    let expected = format!("sha512-{}", hex::encode(sha2::Sha512::digest(&tar)));
    assert_eq!(id.trim(), expected);
    let list = env.ok(&["image", "list", "--no-legend", "--fields=name"]);
    assert_eq!(list.trim(), "127.0.0.1/busybox-test:1.0");
}

#[test]
fn discovery_pointing_at_another_image_is_refused() {
    let namespace = Namespace::new();
    let env = Env::new();
    let www = namespace.www();
    publish_discovery_page(&www, "http");
    // The template's URL holds an image of a different name.
    let tar = common::busybox_aci("127.0.0.1/impostor", "1.0", &[]);
    fs::write(www.join("images/busybox-test-1.0-linux-amd64.aci"), &tar).unwrap();

    let out = namespace.rkt(
        &env,
        &[
            "--insecure-options=http,image",
            "fetch",
            "127.0.0.1/busybox-test:1.0",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert!(
        err.contains("is 127.0.0.1/impostor:1.0, not the 127.0.0.1/busybox-test:1.0"),
        "{err}"
    );
    assert!(err.contains("discovery points at the wrong image"), "{err}");
    let list = env.ok(&["image", "list", "--no-legend"]);
    assert_eq!(list.trim(), "", "nothing was stored");
}

#[test]
fn trust_keys_from_https_trusts_published_keys_only_over_checked_https() {
    let namespace = Namespace::with_tls();
    let www = namespace.www();
    publish_discovery_page(&www, "https");
    let tar = common::busybox_aci("127.0.0.1/busybox-test", "1.0", &[]);
    let aci = www.join("images/busybox-test-1.0-linux-amd64.aci");
    fs::write(&aci, &tar).unwrap();
    let gpg = Gpg::new();
    gpg.sign(aci.to_str().unwrap());
    gpg.export_public(www.join("pubkeys.gpg").to_str().unwrap());
    let fetch = ["fetch", "127.0.0.1/busybox-test:1.0"];
    let trusted = |env: &Env| {
        fs::read_dir(
            env.config
                .join("trustedkeys/prefix.d/127.0.0.1/busybox-test"),
        )
        .map_or(0, |dir| dir.count())
    };

    // Without the flag, discovery over HTTPS works but trusts nothing.
    let env = Env::new();
    let out = namespace.rkt(&env, &fetch);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert!(err.contains("no keys are trusted for"), "{err}");

    // Unchecked TLS does not count as HTTPS for keys.
    let out = namespace.rkt(
        &env,
        &[
            "--insecure-options=tls",
            "fetch",
            "--trust-keys-from-https",
            fetch[1],
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert!(err.contains("no keys are trusted for"), "{err}");
    assert_eq!(trusted(&env), 0);

    succeeded(
        &namespace.rkt(&env, &["fetch", "--trust-keys-from-https", fetch[1]]),
        "rkt fetch --trust-keys-from-https",
    );
    assert_eq!(trusted(&env), 1);
    let list = env.ok(&["image", "list", "--no-legend", "--fields=name"]);
    assert_eq!(list.trim(), "127.0.0.1/busybox-test:1.0");
}
