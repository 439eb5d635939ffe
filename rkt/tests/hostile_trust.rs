//! Hostile image names against trust: an image name is never a path, and the
//! trust lookup only reads the key files of the prefixes a valid name has.
//! Runs the real `rkt` binary (needs `gpg` and busybox-static's /bin/busybox).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::Gpg;

/// A throwaway data dir and a `--local-config` nested deep enough for a name
/// with six `..` segments to climb out of `trustedkeys/prefix.d/` into a
/// directory the attacker chose.
struct Layout {
    _root: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    config: PathBuf,
    work: PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().to_path_buf();
        let config = base.join("l1/l2/l3/conf");
        let work = base.join("work");
        fs::create_dir_all(&work).unwrap();
        Layout {
            data: base.join("data"),
            config,
            work,
            root: base,
            _root: root,
        }
    }

    fn rkt(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rkt"))
            .arg(format!("--dir={}", self.data.display()))
            .arg(format!("--local-config={}", self.config.display()))
            .arg(format!(
                "--system-config={}",
                self.work.join("no-system-config").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

fn stderr_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        text.lines().count(),
        1,
        "one error line expected, got: {text}"
    );
    text
}

/// Every regular file under `dir` with its content, to prove nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = fs::read_dir(&next) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push((entry.path(), fs::read(entry.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The reproduction: an ACI named `example.com/../../../../../../keys`,
/// signed by the attacker, with the attacker's public key where that name
/// lands when joined onto `trustedkeys/prefix.d/`. It must be refused as a
/// name, never reported verified, and never enter the store.
#[test]
fn a_climbing_image_name_is_refused_not_verified() {
    let layout = Layout::new();
    // The legitimate part of the layout: a prefix directory for example.com.
    fs::create_dir_all(layout.config.join("trustedkeys/prefix.d/example.com")).unwrap();
    // Where the climbing name lands: six levels up from prefix.d/example.com.
    let landing = layout.root.join("l1/keys");
    fs::create_dir_all(&landing).unwrap();
    let attacker = Gpg::new();
    let attacker_key = landing.join("attacker");
    attacker.export_public(&attacker_key.display().to_string());
    assert!(
        layout
            .config
            .join("trustedkeys/prefix.d/example.com/../../../../../../keys/attacker")
            .is_file(),
        "the layout must let the unvalidated path climb onto the attacker's key"
    );
    let canaries = snapshot(&layout.root.join("l1"));

    let name = "example.com/../../../../../../keys";
    let aci = layout.work.join("evil.aci");
    fs::write(&aci, common::busybox_aci(name, "1.0", &[])).unwrap();
    attacker.sign(&aci.display().to_string());

    let out = layout.rkt(&["fetch", &aci.display().to_string()]);
    let line = stderr_line(&out);
    assert_eq!(out.status.code(), Some(254), "{line}");
    assert!(!line.contains("verified"), "{line}");
    assert!(line.starts_with("rkt: "), "{line}");
    assert!(
        line.contains(".."),
        "the line names the bad segment: {line}"
    );
    assert!(line.contains("name"), "the line names the field: {line}");

    let listing = layout.rkt(&["image", "list", "--no-legend"]);
    assert!(listing.status.success());
    assert!(
        String::from_utf8_lossy(&listing.stdout).trim().is_empty(),
        "nothing entered the store"
    );
    assert_eq!(snapshot(&layout.root.join("l1")), canaries);
}

/// `rkt trust --prefix` with a climbing prefix is refused before anything is
/// written, so a key can never be planted outside `prefix.d/`.
#[test]
fn trust_refuses_a_climbing_prefix() {
    let layout = Layout::new();
    let gpg = Gpg::new();
    let key = layout.work.join("key.asc");
    gpg.export_public(&key.display().to_string());
    for prefix in [
        "example.com/../../../../planted",
        "example.com/./app",
        "example.com//app",
        "..",
    ] {
        let out = layout.rkt(&[
            "trust",
            &format!("--prefix={prefix}"),
            "--skip-fingerprint-review",
            &key.display().to_string(),
        ]);
        let line = stderr_line(&out);
        assert_eq!(out.status.code(), Some(254), "{prefix}: {line}");
        assert!(line.contains("not a valid image name prefix"), "{line}");
    }
    assert!(!layout.root.join("l1/planted").exists());
    assert!(!layout.config.join("trustedkeys").exists());
}

/// A key directory may hold links, FIFOs and huge files (planted by whoever
/// can write there, or by a mistaken admin): none is followed or blocks the
/// lookup; a link to a host file is not read as a key, and a good key next to
/// them still verifies.
#[test]
fn key_files_that_are_links_fifos_or_huge_are_not_read() {
    let layout = Layout::new();
    let gpg = Gpg::new();
    let prefix_dir = layout.config.join("trustedkeys/prefix.d/example.com");
    fs::create_dir_all(&prefix_dir).unwrap();
    // The real key, trusted through the front door.
    let key = layout.work.join("key.asc");
    gpg.export_public(&key.display().to_string());
    let out = layout.rkt(&[
        "trust",
        "--prefix=example.com",
        "--skip-fingerprint-review",
        &key.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A symlink to another signer's key outside the key store: not followed.
    let stranger = Gpg::new();
    let outside = layout.work.join("stranger.asc");
    stranger.export_public(&outside.display().to_string());
    std::os::unix::fs::symlink(&outside, prefix_dir.join("linked")).unwrap();
    // A FIFO: opening it for reading would block forever.
    let fifo = std::ffi::CString::new(prefix_dir.join("fifo").display().to_string()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    // Signed by the stranger: the linked key must not count.
    let aci = layout.work.join("app.aci");
    fs::write(&aci, common::busybox_aci("example.com/app", "1.0", &[])).unwrap();
    stranger.sign(&aci.display().to_string());
    let started = std::time::Instant::now();
    let out = layout.rkt(&["fetch", &aci.display().to_string()]);
    let line = stderr_line(&out);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(254), "{line}");
    assert!(line.contains("does not verify"), "{line}");

    // Signed by the trusted key: verifies despite the link and the FIFO.
    gpg.sign(&aci.display().to_string());
    let out = layout.rkt(&["fetch", &aci.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A key file far larger than any key is refused by name, not read whole.
    let huge = fs::File::create(prefix_dir.join("huge")).unwrap();
    huge.set_len(64 << 20).unwrap();
    let out = layout.rkt(&["fetch", "--pull-policy=update", &aci.display().to_string()]);
    let line = stderr_line(&out);
    assert_eq!(out.status.code(), Some(254), "{line}");
    assert!(line.contains("huge") && line.contains("larger"), "{line}");
}
