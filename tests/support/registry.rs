//! Debian's `docker-registry` on loopback, for tests that fetch images the way Docker users
//! pull them (`rkt fetch docker://127.0.0.1:PORT/NAME:TAG`), filled with `skopeo copy`. The
//! registry keeps its blobs in a temporary directory and stops when dropped.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A registry serving plain HTTP on `127.0.0.1:port` of the caller's network namespace.
pub struct LocalRegistry {
    child: Child,
    port: u16,
    _storage: tempfile::TempDir,
}

impl LocalRegistry {
    pub fn start() -> LocalRegistry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let storage = tempfile::tempdir().expect("a directory for the registry");
        let config = storage.path().join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )
        .expect("the registry's configuration");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's docker-registry package; tools/setup installs it)");
        let registry = LocalRegistry {
            child,
            port,
            _storage: storage,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies `source` (anything skopeo reads: `oci:LAYOUT:TAG`, `docker-archive:FILE`) to
    /// `NAME:TAG` in this registry; returns the reference `127.0.0.1:PORT/NAME:TAG`.
    pub fn push(&self, source: &str, name_tag: &str) -> String {
        let reference = format!("{}/{name_tag}", self.host());
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg(source)
            .arg(format!("docker://{reference}"))
            .output()
            .expect("skopeo (tools/setup installs it)");
        assert!(
            out.status.success(),
            "skopeo copy {source} docker://{reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The corpus image `name` that `tests/images/build` made (`LAYOUT:TAG` of an OCI layout, as
/// `skopeo` takes it after `oci:`). A missing one fails the test with the command that makes it.
pub fn corpus_image(name: &str) -> String {
    let record = crate::repo_root().join(format!("target/test-images/{name}"));
    let text = fs::read_to_string(&record).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the test images first: tests/images/build (tools/test runs it)",
            record.display()
        )
    });
    let layout_tag = text.trim().to_string();
    let layout = layout_tag
        .rsplit_once(':')
        .map(|(layout, _)| layout)
        .unwrap_or("");
    assert!(
        Path::new(layout).join("index.json").is_file(),
        "{}: {layout_tag:?} is not an OCI layout; run tests/images/build again",
        record.display()
    );
    layout_tag
}
