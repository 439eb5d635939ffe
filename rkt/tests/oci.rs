//! Docker and OCI images end to end: the tests build a two-layer busybox
//! image with whiteouts as an OCI layout, an OCI archive and a `docker save`
//! archive, fetch each with the real `rkt`, and check the rendered tree and the
//! app mapped from the config.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{busybox, Env};
use serde_json::json;
use sha2::{Digest, Sha256};

struct Entry<'a> {
    path: &'a str,
    kind: tar::EntryType,
    link: Option<&'a str>,
    data: Vec<u8>,
    mode: u32,
}

fn file<'a>(path: &'a str, data: &[u8]) -> Entry<'a> {
    Entry {
        path,
        kind: tar::EntryType::Regular,
        link: None,
        data: data.to_vec(),
        mode: 0o644,
    }
}

fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(entry.data.len() as u64);
        if let Some(link) = entry.link {
            header.set_link_name(link).unwrap();
        }
        builder
            .append_data(&mut header, entry.path, &entry.data[..])
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Layer 1: busybox plus files layer 2 deletes; layer 2 (gzip in OCI form):
/// a whiteout, an opaque directory and new files.
fn layers() -> (Vec<u8>, Vec<u8>) {
    let layer1 = tar_of(&[
        Entry {
            path: "bin/busybox",
            kind: tar::EntryType::Regular,
            link: None,
            data: busybox(),
            mode: 0o755,
        },
        Entry {
            path: "bin/sh",
            kind: tar::EntryType::Symlink,
            link: Some("busybox"),
            data: vec![],
            mode: 0o777,
        },
        file("etc/old", b"deleted by layer 2"),
        file("etc/keep", b"kept"),
        file("opt/dir/a", b"hidden by the opaque whiteout"),
        file("opt/dir/b", b"hidden too"),
    ]);
    let layer2 = tar_of(&[
        file("etc/.wh.old", b""),
        file("opt/dir/.wh..wh..opq", b""),
        file("opt/dir/c", b"new"),
        file("etc/new", b"added"),
    ]);
    (layer1, layer2)
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "Entrypoint": ["/bin/sh"],
            "Cmd": ["-c", "echo hi"],
            "Env": ["PATH=/bin", "GREETING=hello"],
            "WorkingDir": "/etc",
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

/// Writes an OCI layout at `dir` with the image tagged `1.0`; returns the
/// manifest's digest.
fn write_layout(dir: &Path) -> String {
    write_layout_with_diff_ids(dir, |_| {})
}

/// `write_layout`, with the config's diff_ids passed through `tamper` first.
fn write_layout_with_diff_ids(dir: &Path, tamper: impl FnOnce(&mut Vec<String>)) -> String {
    let (layer1, layer2) = layers();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer2).unwrap();
    let layer2_gz = gz.finish().unwrap();
    let mut diff_ids = vec![digest(&layer1), digest(&layer2)];
    tamper(&mut diff_ids);
    let config = config(&diff_ids);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer1), "size": layer1.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer2_gz), "size": layer2_gz.len()}
        ]
    }))
    .unwrap();
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    for blob in [&layer1, &layer2_gz, &config, &manifest] {
        fs::write(blobs.join(&digest(blob)[7..]), blob).unwrap();
    }
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1.0"}
        }]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    digest(&manifest)
}

#[test]
fn layers_must_unpack_to_their_diff_ids() {
    let env = Env::new();
    let layout = env.work.join("tampered");
    let (_, layer2) = layers();
    // The gzip layer's blob digest is right, but the config claims another
    // uncompressed content for it.
    let real = digest(&layer2);
    write_layout_with_diff_ids(&layout, |ids| ids[1] = digest(b"something else"));
    let spec = format!("oci:{}:1.0", layout.display());
    // Refused by the fetch, which applies the layers, not later by a render.
    let err = env.fails(254, &["--insecure-options=image", "fetch", &spec]);
    assert!(err.contains("layer 1 (sha256:"), "{err}");
    assert!(err.contains(&format!("unpacks to {real}")), "{err}");
    assert!(err.contains("rootfs.diff_ids[1]"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_nothing_stored(&env);

    // One diff_id too few is refused too.
    let env = Env::new();
    let layout = env.work.join("short");
    write_layout_with_diff_ids(&layout, |ids| {
        ids.pop();
    });
    let spec = format!("oci:{}:1.0", layout.display());
    let err = env.fails(254, &["--insecure-options=image", "fetch", &spec]);
    assert!(
        err.contains("lists 1 rootfs.diff_ids for 2 layers"),
        "{err}"
    );
    assert_nothing_stored(&env);
}

/// No image, no tree, no blob and nothing staged: what a refused fetch leaves.
fn assert_nothing_stored(env: &Env) {
    assert_eq!(env.ok(&["image", "list", "--no-legend"]), "");
    for dir in ["cas/tree", "cas/tmp", "cas/blob/sha256"] {
        let left: Vec<_> = fs::read_dir(env.dir.join(dir))
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir} holds {left:?}");
    }
}

/// A tar of every file under `dir` (paths relative to it).
fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_dir_all(".", dir).unwrap();
    builder.into_inner().unwrap()
}

/// A `docker save`-style archive of the same two layers (uncompressed).
fn docker_archive() -> Vec<u8> {
    let (layer1, layer2) = layers();
    let config = config(&[digest(&layer1), digest(&layer2)]);
    let config_name = format!("{}.json", &digest(&config)[7..]);
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": ["example.com/busybox-docker:1.0"],
        "Layers": ["l1/layer.tar", "l2/layer.tar"]
    }]);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    files.insert(config_name, config);
    files.insert("l1/layer.tar".into(), layer1);
    files.insert("l2/layer.tar".into(), layer2);
    let entries: Vec<Entry<'_>> = files.iter().map(|(path, data)| file(path, data)).collect();
    tar_of(&entries)
}

fn blob_count(env: &Env) -> usize {
    let root = env.dir.join("cas/blob/sha256");
    fs::read_dir(&root)
        .unwrap()
        .map(|shard| fs::read_dir(shard.unwrap().path()).unwrap().count())
        .sum()
}

fn check_rendered_tree(rootfs: &Path) {
    assert_eq!(fs::read(rootfs.join("etc/keep")).unwrap(), b"kept");
    assert_eq!(fs::read(rootfs.join("etc/new")).unwrap(), b"added");
    assert!(!rootfs.join("etc/old").exists(), "whiteout applied");
    assert!(
        !rootfs.join("etc/.wh.old").exists(),
        "whiteout markers are not files"
    );
    let mut dir: Vec<_> = fs::read_dir(rootfs.join("opt/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dir.sort();
    assert_eq!(dir, vec!["c"], "opaque directory hides the lower layer");
    let out = Command::new(rootfs.join("bin/sh"))
        .args(["-c", "echo rendered"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "rendered\n");
}

#[test]
fn oci_layout_and_archive_fetch_render_and_map_the_config() {
    let env = Env::new();
    let layout = env.work.join("busybox-oci");
    let manifest_digest = write_layout(&layout);
    let spec = format!("oci:{}:1.0", layout.display());

    let err = env.fails(254, &["fetch", &spec]);
    assert!(
        err.contains("--insecure-options=image") && err.contains("not supported"),
        "{err}"
    );

    let id = env.ok(&["--insecure-options=image", "fetch", "--full", &spec]);
    let id = id.trim();
    assert!(id.starts_with("sha512-") && id.len() == 7 + 128, "{id}");
    let list = env.ok(&["image", "list", "--no-legend"]);
    assert!(list.contains("busybox-oci:1.0"), "{list}");

    // Addressable by its own sha256 manifest digest too.
    let by_digest = &manifest_digest[..7 + 12];
    let manifest: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "cat-manifest", by_digest])).unwrap();
    assert_eq!(manifest["name"], "busybox-oci");
    let app = &manifest["app"];
    assert_eq!(app["exec"], json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(app["user"], "0");
    assert_eq!(app["workingDirectory"], "/etc");
    assert_eq!(app["ports"][0]["name"], "80-tcp");
    assert_eq!(app["mountPoints"][0]["name"], "volume-data");
    assert_eq!(
        app["environment"][1],
        json!({"name": "GREETING", "value": "hello"})
    );
    let annotations = manifest["annotations"].as_array().unwrap();
    assert!(annotations
        .contains(&json!({"name": "appc.io/docker/manifesthash", "value": manifest_digest})));

    let rendered = env.work.join("rendered");
    env.ok(&[
        "image",
        "render",
        "--rootfs-only",
        id,
        rendered.to_str().unwrap(),
    ]);
    check_rendered_tree(&rendered);
    let extracted = env.work.join("extracted");
    env.ok(&["image", "extract", id, extracted.to_str().unwrap()]);
    check_rendered_tree(&extracted.join("rootfs"));
    assert!(extracted.join("manifest").is_file());

    assert!(env
        .ok(&["image", "verify", id])
        .contains("successfully verified"));
    let err = env.fails(254, &["image", "export", id, &env.path("x.aci")]);
    assert!(err.contains("ACIs only"), "{err}");

    // The same layout as an archive is the same image (same manifest).
    let archive = env.work.join("busybox-oci.tar");
    fs::write(&archive, tar_dir(&layout)).unwrap();
    let again = env.ok(&[
        "--insecure-options=image",
        "fetch",
        "--full",
        &format!("oci-archive:{}", archive.display()),
    ]);
    assert_eq!(again.trim(), id);
    assert_eq!(env.ok(&["image", "list", "--no-legend"]).lines().count(), 1);
    assert_eq!(fs::read_dir(env.dir.join("cas/tmp")).unwrap().count(), 0);

    let err = env.fails(
        254,
        &[
            "--insecure-options=image",
            "fetch",
            &format!("oci:{}:2.0", layout.display()),
        ],
    );
    assert!(err.contains("no image tagged \"2.0\""), "{err}");
}

#[test]
fn docker_archive_shares_layers_and_removal_keeps_shared_blobs() {
    let env = Env::new();
    let layout = env.work.join("busybox-oci");
    write_layout(&layout);
    let oci_id = env.ok(&[
        "--insecure-options=image",
        "fetch",
        "--full",
        &format!("oci:{}", layout.display()),
    ]);
    let blobs_after_oci = blob_count(&env);
    assert_eq!(blobs_after_oci, 4, "manifest, config, two layers");

    let archive = env.work.join("saved.tar");
    fs::write(&archive, docker_archive()).unwrap();
    let docker_id = env.ok(&[
        "--insecure-options=image",
        "fetch",
        "--full",
        &format!("docker-archive:{}", archive.display()),
    ]);
    let docker_id = docker_id.trim();
    assert_ne!(docker_id, oci_id.trim());
    // Layer 1 is byte-identical in both, so it is stored once: +manifest
    // (synthesized), +config (same bytes: shared too), +layer 2 (uncompressed here).
    assert_eq!(blob_count(&env), blobs_after_oci + 2);

    let by_name = |order: &str| {
        env.ok(&[
            "image",
            "list",
            "--no-legend",
            "--fields=name,latest",
            "--sort=name",
            order,
        ])
    };
    // The docker-archive's image by the reference its RepoTags give; the
    // layout's, which names no repository, by transport, path and tag.
    let layout_name = format!("oci:{}:1.0", layout.display());
    let rows: Vec<Vec<String>> = by_name("--order=asc")
        .lines()
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![
                "example.com/busybox-docker:1.0".to_string(),
                "true".to_string()
            ],
            vec![layout_name.clone(), "true".to_string()],
        ]
    );
    assert!(by_name("--order=desc").starts_with(&layout_name));
    let manifest: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "cat-manifest", "example.com/busybox-docker:1.0"]))
            .unwrap();
    assert_eq!(manifest["name"], "example.com/busybox-docker");
    let annotations = manifest["annotations"].as_array().unwrap();
    assert!(annotations.contains(
        &json!({"name": "appc.io/docker/repository", "value": "example.com/busybox-docker"})
    ));
    let rendered = env.work.join("rendered");
    env.ok(&[
        "image",
        "render",
        "--rootfs-only",
        docker_id,
        rendered.to_str().unwrap(),
    ]);
    check_rendered_tree(&rendered);

    // A flipped byte in a stored layer is found by `image verify`.
    let shard = fs::read_dir(env.dir.join("cas/blob/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let victim = fs::read_dir(shard.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let original = fs::read(&victim).unwrap();
    let mut corrupted = original.clone();
    corrupted[0] ^= 1;
    fs::write(&victim, &corrupted).unwrap();
    let err = env.fails(254, &["image", "verify", docker_id, oci_id.trim()]);
    assert!(err.contains("damaged"), "{err}");
    fs::write(&victim, &original).unwrap();
    env.ok(&["image", "verify", docker_id, oci_id.trim()]);

    env.ok(&["image", "rm", docker_id]);
    assert_eq!(
        blob_count(&env),
        blobs_after_oci,
        "shared layer and config kept"
    );
    env.ok(&["image", "rm", oci_id.trim()]);
    assert_eq!(blob_count(&env), 0);
    env.ok(&["image", "gc"]);
}

/// Serves the layout's image as `test/busybox:1.0` the way Docker Hub does:
/// bearer tokens from a separate endpoint, and a multi-platform index at the tag.
#[test]
fn docker_registry_pull_with_token_auth_and_a_platform_index() {
    let env = Env::new();
    let layout = env.work.join("busybox-oci");
    let manifest_digest = write_layout(&layout);
    let blobs = layout.join("blobs/sha256");
    let manifest_len = fs::metadata(blobs.join(&manifest_digest[7..]))
        .unwrap()
        .len();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "0".repeat(64)),
             "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
             "size": manifest_len, "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    }))
    .unwrap();
    let base_cell: std::sync::Arc<std::sync::OnceLock<String>> = Default::default();
    let realm_base = base_cell.clone();
    let (base, _) = common::serve(move |path, headers| {
        if let Some(query) = path.strip_prefix("/token?") {
            assert!(
                query.contains("scope=repository%3Atest%2Fbusybox%3Apull"),
                "{query}"
            );
            return common::Reply::ok(br#"{"token":"t0k"}"#.to_vec());
        }
        if headers.get("authorization").map(String::as_str) != Some("Bearer t0k") {
            let realm = format!("{}/token", realm_base.get().unwrap());
            return common::Reply {
                status: 401,
                headers: vec![(
                    "WWW-Authenticate".to_string(),
                    format!(
                        r#"Bearer realm="{realm}",service="test",scope="repository:test/busybox:pull""#
                    ),
                )],
                body: vec![],
            };
        }
        if path == "/v2/test/busybox/manifests/1.0" {
            let mut reply = common::Reply::ok(index.clone());
            reply.headers.push((
                "Content-Type".to_string(),
                "application/vnd.oci.image.index.v1+json".to_string(),
            ));
            return reply;
        }
        let digest = path
            .strip_prefix("/v2/test/busybox/manifests/sha256:")
            .or_else(|| path.strip_prefix("/v2/test/busybox/blobs/sha256:"));
        match digest.and_then(|hex| fs::read(blobs.join(hex)).ok()) {
            Some(body) => common::Reply::ok(body),
            None => common::Reply::not_found(),
        }
    });
    base_cell.set(base.clone()).unwrap();
    let host = base.trim_start_matches("http://");
    let spec = format!("docker://{host}/test/busybox:1.0");

    let err = env.fails(254, &["--insecure-options=http", "fetch", &spec]);
    assert!(err.contains("--insecure-options=image"), "{err}");
    let id = env.ok(&["--insecure-options=image,http", "fetch", "--full", &spec]);
    let id = id.trim();
    let manifest: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "cat-manifest", id])).unwrap();
    let expected_name = format!("{}/test/busybox", host.replace(':', "-"));
    assert_eq!(manifest["name"], expected_name.as_str());
    assert_eq!(
        manifest["labels"][0],
        json!({"name": "version", "value": "1.0"})
    );
    let rendered = env.work.join("rendered");
    env.ok(&[
        "image",
        "render",
        "--rootfs-only",
        id,
        rendered.to_str().unwrap(),
    ]);
    check_rendered_tree(&rendered);
    // Same manifest as the layout's: the same image, by the same ID.
    let from_layout = env.ok(&[
        "--insecure-options=image",
        "fetch",
        "--full",
        &format!("oci:{}", layout.display()),
    ]);
    assert_eq!(from_layout.trim(), id);
    assert_eq!(
        env.ok(&["fetch", "--full", "--pull-policy=never", &spec])
            .trim(),
        id,
        "found in the store by its docker:// source"
    );
    let err = env.fails(
        254,
        &[
            "--insecure-options=image,http",
            "fetch",
            &format!("docker://{host}/test/absent:1.0"),
        ],
    );
    assert!(err.contains("not found"), "{err}");
}

/// Debian's docker-registry on loopback, filled by skopeo from the test's
/// own OCI layout and docker-archive (so one OCI and one Docker schema 2
/// manifest).
#[test]
fn docker_registry_from_debian_filled_by_skopeo() {
    let env = Env::new();
    let layout = env.work.join("busybox-oci");
    write_layout(&layout);
    let archive = env.work.join("saved.tar");
    fs::write(&archive, docker_archive()).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = env.work.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            env.work.join("registry-data").display()
        ),
    )
    .unwrap();
    /// Stops the registry however the test ends.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let registry = KillOnDrop(
        Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("this test needs Debian's docker-registry package"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "docker-registry did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let host = format!("127.0.0.1:{port}");
    for (source, dest) in [
        (
            format!("oci:{}:1.0", layout.display()),
            format!("docker://{host}/test/oci:1.0"),
        ),
        (
            format!("docker-archive:{}", archive.display()),
            format!("docker://{host}/test/docker:1.0"),
        ),
    ] {
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                &source,
                &dest,
            ])
            .output()
            .expect("this test needs skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = env.ok(&["--insecure-options=image,http", "fetch", "--full", &dest]);
        let rendered = env
            .work
            .join(format!("rendered-{}", dest.rsplit('/').next().unwrap()));
        env.ok(&[
            "image",
            "render",
            "--rootfs-only",
            id.trim(),
            rendered.to_str().unwrap(),
        ]);
        check_rendered_tree(&rendered);
    }
    assert_eq!(env.ok(&["image", "list", "--no-legend"]).lines().count(), 2);
    drop(registry);
}

/// A private registry: its token service wants the credentials from a
/// dockerAuth file in `<local-config>/auth.d`.
#[test]
fn docker_registry_with_credentials_from_auth_d() {
    let env = Env::new();
    let layout = env.work.join("busybox-oci");
    let manifest_digest = write_layout(&layout);
    let blobs = layout.join("blobs/sha256");
    let base_cell: std::sync::Arc<std::sync::OnceLock<String>> = Default::default();
    let realm_base = base_cell.clone();
    let (base, _) = common::serve(move |path, headers| {
        let auth = headers.get("authorization").map(String::as_str);
        if path.starts_with("/token") {
            // base64("me:pw")
            return if auth == Some("Basic bWU6cHc=") {
                common::Reply::ok(br#"{"access_token":"private"}"#.to_vec())
            } else {
                common::Reply {
                    status: 401,
                    headers: vec![],
                    body: vec![],
                }
            };
        }
        if auth != Some("Bearer private") {
            let realm = format!("{}/token", realm_base.get().unwrap());
            return common::Reply {
                status: 401,
                headers: vec![(
                    "WWW-Authenticate".to_string(),
                    format!(r#"Bearer realm="{realm}",service="private""#),
                )],
                body: vec![],
            };
        }
        let hex = if path == "/v2/test/busybox/manifests/1.0" {
            Some(&manifest_digest[7..])
        } else {
            path.strip_prefix("/v2/test/busybox/blobs/sha256:")
        };
        match hex.and_then(|hex| fs::read(blobs.join(hex)).ok()) {
            Some(body) => common::Reply::ok(body),
            None => common::Reply::not_found(),
        }
    });
    base_cell.set(base.clone()).unwrap();
    let host = base.trim_start_matches("http://");
    let spec = format!("docker://{host}/test/busybox:1.0");

    let err = env.fails(254, &["--insecure-options=image,http", "fetch", &spec]);
    assert!(err.contains("auth.d"), "{err}");
    fs::create_dir_all(env.config.join("auth.d")).unwrap();
    fs::write(
        env.config.join("auth.d/private.json"),
        format!(
            r#"{{"rktKind":"dockerAuth","rktVersion":"v1","registries":["{host}"],
                "credentials":{{"user":"me","password":"pw"}}}}"#
        ),
    )
    .unwrap();
    let id = env.ok(&["--insecure-options=image,http", "fetch", "--full", &spec]);
    let rendered = env.work.join("rendered");
    env.ok(&[
        "image",
        "render",
        "--rootfs-only",
        id.trim(),
        rendered.to_str().unwrap(),
    ]);
    check_rendered_tree(&rendered);
}
