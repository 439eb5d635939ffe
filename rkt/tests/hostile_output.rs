//! Hostile images against the terminal and against other local users: what
//! rkt prints from an image is escaped, and the store is closed to every
//! user but its owner. Runs the real `rkt` binary (as root; the access check
//! runs a helper as `nobody` with setpriv).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::Env;
use sha2::{Digest, Sha256};

/// A tar of `(path, kind, mode, data)` entries.
fn tar_of(entries: &[(&str, tar::EntryType, u32, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, mode, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).unwrap();
        header.set_entry_type(*kind);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// An ACI with `manifest` (JSON text), a world-writable directory and a file.
fn aci(manifest: &str) -> Vec<u8> {
    tar_of(&[
        (
            "manifest",
            tar::EntryType::Regular,
            0o644,
            manifest.as_bytes(),
        ),
        ("rootfs/", tar::EntryType::Directory, 0o755, b""),
        ("rootfs/open/", tar::EntryType::Directory, 0o777, b""),
        ("rootfs/open/note", tar::EntryType::Regular, 0o666, b"hello"),
    ])
}

fn manifest_with_version(version: &str) -> String {
    serde_json::json!({
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": "example.com/noisy",
        "labels": [{"name": "version", "value": version}],
        "annotations": [{"name": "authors", "value": "\u{9b}2J\u{202e}evil"}],
    })
    .to_string()
}

fn no_terminal_controls(text: &str) -> bool {
    !text
        .chars()
        .any(|c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
}

#[test]
fn labels_with_controls_list_as_one_line_with_visible_escapes() {
    let env = Env::new();
    let path = env.path("noisy.aci");
    let version = "1.0\nsha512-000000000000  forged/image:1  1 KiB\u{1b}[2J\u{1b}]0;owned\u{7}";
    fs::write(&path, aci(&manifest_with_version(version))).unwrap();
    env.ok(&["--insecure-options=image", "fetch", &path]);

    let listing = env.ok(&["image", "list", "--no-legend"]);
    assert_eq!(listing.lines().count(), 1, "{listing:?}");
    assert!(no_terminal_controls(&listing), "{listing:?}");
    assert!(
        listing.contains("example.com/noisy:1.0\\nsha512-000000000000")
            && listing.contains("\\x1b[2J\\x1b]0;owned\\x07"),
        "{listing:?}"
    );

    // JSON stays JSON (serde escapes C0), and what it leaves raw is escaped.
    for format in ["--format=json", "--format=json-pretty"] {
        let json = env.ok(&["image", "list", format]);
        assert!(no_terminal_controls(&json), "{json:?}");
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[0]["name"], format!("example.com/noisy:{version}"));
    }
    for pretty in ["--pretty-print=true", "--pretty-print=false"] {
        let manifest = env.ok(&["image", "cat-manifest", pretty, "example.com/noisy"]);
        assert!(no_terminal_controls(&manifest), "{manifest:?}");
        let parsed: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        assert_eq!(parsed["annotations"][0]["value"], "\u{9b}2J\u{202e}evil");
    }
}

/// A minimal docker-archive (`docker save`) whose RepoTags entry is `repo_tag`.
fn docker_archive(repo_tag: &str) -> Vec<u8> {
    let layer = tar_of(&[("hello", tar::EntryType::Regular, 0o644, b"hi")]);
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [repo_tag],
        "Layers": ["layer.tar"],
    }])
    .to_string();
    tar_of(&[
        (
            "manifest.json",
            tar::EntryType::Regular,
            0o644,
            manifest.as_bytes(),
        ),
        (
            "config.json",
            tar::EntryType::Regular,
            0o644,
            config.as_bytes(),
        ),
        ("layer.tar", tar::EntryType::Regular, 0o644, &layer),
    ])
}

#[test]
fn docker_names_and_tags_outside_the_grammar_are_refused_on_one_escaped_line() {
    let env = Env::new();
    for (repo_tag, named) in [
        ("evil:1.0\u{1b}[2J\nrkt: all good", "\\x1b[2J\\n"),
        ("team/../../../etc:1", "team/../../../etc"),
        ("UPPER/case:1", "UPPER/case"),
    ] {
        let path = env.path("image.tar");
        fs::write(&path, docker_archive(repo_tag)).unwrap();
        let argument = format!("docker-archive:{path}");
        let out = env.rkt(&["--insecure-options=image", "fetch", &argument]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(254), "{repo_tag:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(no_terminal_controls(&err), "{err:?}");
        assert!(err.contains(named), "{repo_tag:?}: {err}");
        assert!(err.contains("not a valid image"), "{err}");
    }
    // A well-formed one is accepted, and its tag is its version.
    let path = env.path("good.tar");
    fs::write(&path, docker_archive("registry.example:5000/team/app:v1.2")).unwrap();
    env.ok(&[
        "--insecure-options=image",
        "fetch",
        &format!("docker-archive:{path}"),
    ]);
    let listing = env.ok(&["image", "list", "--no-legend"]);
    assert!(listing.contains(":v1.2"), "{listing}");

    for bad in [
        "docker://a/../b",
        "docker://x:\u{1b}[2J",
        "docker://Busybox",
    ] {
        let err = env.fails(254, &["--insecure-options=image", "fetch", bad]);
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(no_terminal_controls(&err), "{err:?}");
        assert!(err.contains("not a valid image"), "{err}");
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `nobody` tries to reach `path`; returns its stderr (empty on success).
fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .output()
        .expect("this test needs setpriv (util-linux)")
}

#[test]
fn the_store_is_closed_to_other_users() {
    if !nix_is_root() {
        panic!("this test runs as root (it drops to nobody to probe the store)");
    }
    let env = Env::new();
    // A data directory as /var/lib/rkt usually is: traversable by everyone.
    let parent = env.dir.parent().unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(&env.dir).unwrap();
    fs::set_permissions(&env.dir, fs::Permissions::from_mode(0o755)).unwrap();

    let path = env.path("open.aci");
    fs::write(&path, aci(&manifest_with_version("1"))).unwrap();
    env.ok(&["--insecure-options=image", "fetch", &path]);
    let out = env.work.join("out");
    env.ok(&[
        "image",
        "render",
        "example.com/noisy",
        &out.display().to_string(),
    ]);

    let cas = env.dir.join("cas");
    assert_eq!(mode(&cas), 0o700);
    for sub in ["db", "blob", "blob/sha512", "blob/sha256", "tree", "tmp"] {
        assert_eq!(mode(&cas.join(sub)) & 0o077, 0, "cas/{sub}");
    }
    let tree = fs::read_dir(cas.join("tree"))
        .unwrap()
        .next()
        .expect("a cached tree")
        .unwrap()
        .path();
    let open = tree.join("rootfs/open");
    assert_eq!(
        mode(&open),
        0o777,
        "the image's own mode is kept in the tree"
    );

    // Another local user can neither reach the 0777 directory nor write there.
    let probe = as_nobody(&["ls", &open.display().to_string()]);
    assert!(!probe.status.success());
    assert!(
        String::from_utf8_lossy(&probe.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let planted = open.join("planted");
    let probe = as_nobody(&["touch", &planted.display().to_string()]);
    assert!(!probe.status.success());
    assert!(!planted.exists());

    // A store left 0755 by an older version is tightened on the next open.
    fs::set_permissions(&cas, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(cas.join("tree"), fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&["image", "list"]);
    assert_eq!(mode(&cas), 0o700);
    assert_eq!(mode(&cas.join("tree")), 0o700);
    env.ok(&["image", "verify", "example.com/noisy"]);
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
