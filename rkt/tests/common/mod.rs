//! Shared helpers for the CLI tests: a throwaway --dir/--local-config and a
//! way to run the real `rkt` binary in it.

#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub const BUSYBOX: &str = "/bin/busybox";

pub fn busybox() -> Vec<u8> {
    fs::read(BUSYBOX).expect("these tests need busybox-static (/bin/busybox)")
}

pub struct Env {
    _root: tempfile::TempDir,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub work: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let config = root.path().join("etc-rkt");
        let work = root.path().join("work");
        fs::create_dir_all(&work).unwrap();
        Env {
            dir,
            config,
            work,
            _root: root,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rkt"));
        command
            .arg(format!("--dir={}", self.dir.display()))
            .arg(format!("--local-config={}", self.config.display()))
            .arg(format!(
                "--system-config={}",
                self.work.join("no-system-config").display()
            ))
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn rkt(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs rkt, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rkt(args);
        assert!(
            out.status.success(),
            "rkt {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs rkt, asserting exit status `code`; returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.rkt(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "rkt {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn path(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }
}

/// A throwaway GnuPG home with one signing key.
pub struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    pub fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        let gpg = Gpg { home };
        gpg.run(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "rkt test <test@example.com>",
            "ed25519",
            "sign",
            "never",
        ]);
        gpg
    }

    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .expect("these tests need gpg (apt package gnupg)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn export_public(&self, to: &str) {
        let key = self.run(&["--armor", "--export"]);
        fs::write(to, key).unwrap();
    }

    pub fn sign(&self, file: &str) {
        self.run(&[
            "--passphrase",
            "",
            "--armor",
            "--detach-sign",
            "-o",
            &format!("{file}.asc"),
            file,
        ]);
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // Stop the agent gpg started for this home.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// What the test HTTP server answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body,
        }
    }

    pub fn not_found() -> Reply {
        Reply {
            status: 404,
            headers: vec![],
            body: b"not found".to_vec(),
        }
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 for the fetch tests: one request
/// per connection, answered by `handler(path, headers)`. Returns its base
/// URL and a request counter. It lives until the test process exits.
pub fn serve(
    handler: impl Fn(&str, &HashMap<String, String>) -> Reply + Send + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.trim_end().split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let reply = handler(&path, &headers);
            let mut head = format!(
                "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                reply.status,
                reply.body.len()
            );
            for (name, value) in &reply.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&reply.body);
        }
    });
    (base, count)
}

fn manifest(name: &str, version: &str) -> String {
    format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{name}",
           "labels":[{{"name":"version","value":"{version}"}},{{"name":"os","value":"linux"}},{{"name":"arch","value":"amd64"}}],
           "app":{{"exec":["/bin/sh"],"user":"0","group":"0"}}}}"#
    )
}

/// An uncompressed busybox ACI: manifest, /bin/busybox, /bin/sh -> busybox.
pub fn busybox_aci(
    name: &str,
    version: &str,
    extra: &[(&str, tar::EntryType, Option<&str>)],
) -> Vec<u8> {
    busybox_aci_with_manifest(&manifest(name, version), extra)
}

/// An uncompressed busybox ACI with the given manifest (JSON text).
pub fn busybox_aci_with_manifest(
    manifest: &str,
    extra: &[(&str, tar::EntryType, Option<&str>)],
) -> Vec<u8> {
    let busybox = busybox();
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, link: Option<&str>, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    };
    add(
        "manifest",
        tar::EntryType::Regular,
        0o644,
        None,
        manifest.as_bytes(),
    );
    add("rootfs/", tar::EntryType::Directory, 0o755, None, b"");
    add("rootfs/bin/", tar::EntryType::Directory, 0o755, None, b"");
    add(
        "rootfs/bin/busybox",
        tar::EntryType::Regular,
        0o755,
        None,
        &busybox,
    );
    add(
        "rootfs/bin/sh",
        tar::EntryType::Symlink,
        0o777,
        Some("busybox"),
        b"",
    );
    for (path, kind, link) in extra {
        add(path, *kind, 0o644, *link, b"x");
    }
    builder.into_inner().unwrap()
}

// ---------------------------------------------------------------------------
// Store-and-pods helpers for store_in_use.rs and store_crash.rs (issue 14,
// store slice): a stage1 that is never run, and the pods the store holds for.
// ---------------------------------------------------------------------------

/// An image manifest named `name`, version 1, for linux/amd64, to extend.
pub fn linux_amd64_manifest(name: &str) -> serde_json::Value {
    serde_json::json!({
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [
            {"name": "version", "value": "1"},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": "amd64"}
        ]
    })
}

/// A busybox ACI that declares itself a stage1 (run and gc entrypoints,
/// interface 6); the store tests only prepare pods, so it never runs.
pub fn test_stage1_aci(name: &str) -> Vec<u8> {
    busybox_aci_with_manifest(&test_stage1_manifest(name), &[])
}

/// The manifest of [`test_stage1_aci`].
pub fn test_stage1_manifest(name: &str) -> String {
    let mut manifest = linux_amd64_manifest(name);
    manifest["annotations"] = serde_json::json!([
        {"name": "coreos.com/rkt/stage1/run", "value": "/init"},
        {"name": "coreos.com/rkt/stage1/gc", "value": "/gc"},
        {"name": "coreos.com/rkt/stage1/interface-version", "value": "6"}
    ]);
    manifest.to_string()
}

/// Every pod directory under `dir/pods`, as `state/uuid`, sorted.
pub fn pod_dirs(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(states) = fs::read_dir(dir.join("pods")) else {
        return found;
    };
    for state in states.flatten() {
        let Ok(pods) = fs::read_dir(state.path()) else {
            continue;
        };
        let state = state.file_name().to_string_lossy().into_owned();
        found.extend(
            pods.flatten()
                .map(|pod| format!("{state}/{}", pod.file_name().to_string_lossy())),
        );
    }
    found.sort();
    found
}
