//! Images as Docker users bring them (issue 16, host side), through the real
//! `rkt` binary on images these tests build (busybox layers; needs
//! busybox-static's /bin/busybox): Docker-style names and ID prefixes, one
//! image under several names, `image rm` of a name, app names from the
//! repository, layers with device nodes or a traversal, a plain-HTTP
//! registry, and the close matches offered for an unknown name. Nothing
//! reaches beyond 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::{busybox, Env};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One tar entry, written byte for byte (a hostile path too).
struct Entry {
    path: String,
    kind: tar::EntryType,
    link: Option<String>,
    data: Vec<u8>,
    mode: u32,
}

fn entry(path: &str, kind: tar::EntryType, data: &[u8], mode: u32) -> Entry {
    Entry {
        path: path.to_string(),
        kind,
        link: None,
        data: data.to_vec(),
        mode,
    }
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            if let Some(link) = &e.link {
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(e.data.len() as u64);
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        header.set_cksum();
        builder.append(&header, &e.data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// busybox, /bin/sh, and an nginx-ish file.
fn base_layer() -> Vec<u8> {
    let mut sh = entry("bin/sh", tar::EntryType::Symlink, b"", 0o777);
    sh.link = Some("busybox".to_string());
    tar_of(&[
        entry("bin/", tar::EntryType::Directory, b"", 0o755),
        entry("bin/busybox", tar::EntryType::Regular, &busybox(), 0o755),
        sh,
        entry(
            "etc/nginx/nginx.conf",
            tar::EntryType::Regular,
            b"events {}\n",
            0o644,
        ),
    ])
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "echo hi"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

/// A `docker save` archive of `layers` tagged `repo_tags`.
fn docker_archive(layers: &[Vec<u8>], repo_tags: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = config(&diff_ids);
    let config_name = format!("{}.json", &digest(&config)[7..]);
    let layer_names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = json!([{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}]);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    files.insert(config_name, config);
    for (name, layer) in layer_names.iter().zip(layers) {
        files.insert(name.clone(), layer.clone());
    }
    let entries: Vec<Entry> = files
        .iter()
        .map(|(path, data)| entry(path, tar::EntryType::Regular, data, 0o644))
        .collect();
    tar_of(&entries)
}

/// Fetches `archive` as a docker-archive; returns (full ID, stderr).
fn fetch_archive(env: &Env, name: &str, archive: &[u8]) -> (String, String) {
    let path = env.work.join(name);
    fs::write(&path, archive).unwrap();
    let out = env.rkt(&[
        "--insecure-options=image",
        "fetch",
        "--full",
        &format!("docker-archive:{}", path.display()),
    ]);
    assert!(
        out.status.success(),
        "fetch {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn manifest_of(env: &Env, image: &str) -> Value {
    serde_json::from_str(&env.ok(&["image", "cat-manifest", image])).unwrap()
}

fn annotation(manifest: &Value, name: &str) -> String {
    manifest["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| a["value"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {name} in {manifest}"))
}

fn stored_blob(env: &Env, digest: &str) -> Vec<u8> {
    let hex = &digest[7..];
    fs::read(env.dir.join("cas/blob/sha256").join(&hex[..2]).join(hex)).unwrap()
}

/// Writes, at `dir`, an OCI layout holding the stored image `id` exactly
/// (its manifest, config and layers as the store keeps them), tagged `tag`:
/// the same image, so the same ID, reached another way.
fn layout_of_stored(env: &Env, id: &str, dir: &Path, tag: &str) -> String {
    let manifest_digest = annotation(&manifest_of(env, id), "appc.io/docker/manifesthash");
    let manifest_bytes = stored_blob(env, &manifest_digest);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut digests = vec![manifest_digest.clone()];
    digests.push(manifest["config"]["digest"].as_str().unwrap().to_string());
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_string());
    }
    for d in &digests {
        fs::write(blobs.join(&d[7..]), stored_blob(env, d)).unwrap();
    }
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    manifest_digest
}

fn names_listed(env: &Env, id: &str) -> Vec<String> {
    let list: Value = serde_json::from_str(&env.ok(&["image", "list", "--format=json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|image| image["id"] == id)
        .map(|image| {
            image["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn docker_style_names_id_prefixes_and_several_names_per_image() {
    let env = Env::new();
    let (id, stderr) = fetch_archive(
        &env,
        "debian-nginx.tar",
        &docker_archive(&[base_layer()], &["debian-nginx:bookworm"]),
    );
    assert_eq!(stderr, "", "a plain image fetches without a word");

    // The short name, the full name, `docker://`, and ID prefixes.
    let hex = &id["sha512-".len()..];
    for reference in [
        "debian-nginx:bookworm",
        "docker.io/library/debian-nginx:bookworm",
        "docker://debian-nginx:bookworm",
        &id[..19],
        &hex[..12],
    ] {
        let manifest = manifest_of(&env, reference);
        assert_eq!(
            annotation(&manifest, "appc.io/docker/repository"),
            "debian-nginx",
            "{reference}"
        );
    }
    // By its config digest too, bare, as `docker images` shows image IDs.
    let config_digest = annotation(&manifest_of(&env, &id), "appc.io/docker/imageid");
    manifest_of(&env, &config_digest[7..19]);

    // `debian-nginx` is `debian-nginx:latest`, which is not there: the
    // error offers what is.
    let err = env.fails(254, &["image", "cat-manifest", "debian-nginx"]);
    assert!(
        err.contains("not in the store; did you mean docker.io/library/debian-nginx:bookworm?"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // The same image from an OCI layout (a directory named `oci`, tagged
    // only): the same ID, and a second name.
    let layout = env.work.join("oci");
    layout_of_stored(&env, &id, &layout, "bookworm-nginx");
    let again = env.ok(&[
        "--insecure-options=image",
        "fetch",
        "--full",
        &format!("oci:{}:bookworm-nginx", layout.display()),
    ]);
    assert_eq!(again.trim(), id);
    let layout_name = format!("oci:{}:bookworm-nginx", layout.display());
    assert_eq!(
        names_listed(&env, &id),
        vec![
            "docker.io/library/debian-nginx:bookworm".to_string(),
            layout_name.clone()
        ]
    );
    let table = env.ok(&["image", "list", "--no-legend", "--fields=name"]);
    assert_eq!(
        table.trim(),
        format!("docker.io/library/debian-nginx:bookworm,{layout_name}")
    );
    assert_eq!(table.lines().count(), 1, "one image, one row: {table}");

    // `image rm NAME` removes that name; the image stays under the other.
    let out = env.rkt(&["image", "rm", "debian-nginx:bookworm"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("removed name docker.io/library/debian-nginx:bookworm"),
        "{said}"
    );
    assert_eq!(names_listed(&env, &id), vec![layout_name.clone()]);
    manifest_of(&env, &id);
    env.fails(254, &["image", "cat-manifest", "debian-nginx:bookworm"]);
    // Its last name (given with a relative path, as typed in the work
    // directory) takes the image with it.
    let out = env
        .command(&["image", "rm", "oci:oci:bookworm-nginx"])
        .current_dir(&env.work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed image"));
    assert_eq!(env.ok(&["image", "list", "--no-legend"]), "");

    // By ID, an image goes with all its names at once.
    let (id, _) = fetch_archive(
        &env,
        "two-tags.tar",
        &docker_archive(&[base_layer()], &["debian-nginx:bookworm", "someone/web:1"]),
    );
    assert_eq!(
        names_listed(&env, &id),
        vec![
            "docker.io/library/debian-nginx:bookworm".to_string(),
            "docker.io/someone/web:1".to_string()
        ]
    );
    env.ok(&["image", "rm", &id[..19]]);
    assert_eq!(env.ok(&["image", "list", "--no-legend"]), "");
}

/// A tiny registry on 127.0.0.1 serving one image over plain HTTP (no
/// auth). A TLS handshake gets what a plain-HTTP server answers to one: a
/// 400 in plain text. Returns `host:port`.
fn plain_http_registry(blobs: PathBuf, repository: &str, tag: &str, manifest: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let manifest_path = format!("/v2/{repository}/manifests/{tag}");
    let blob_prefix = format!("/v2/{repository}/blobs/sha256:");
    let digest_prefix = format!("/v2/{repository}/manifests/sha256:");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let first = reader
                .fill_buf()
                .map(|b| b.first().copied())
                .unwrap_or(None);
            if first == Some(0x16) {
                // A TLS ClientHello: not HTTP.
                let mut junk = [0u8; 4096];
                let _ = reader.read(&mut junk);
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let hex = if path == manifest_path {
                Some(manifest[7..].to_string())
            } else {
                path.strip_prefix(&blob_prefix)
                    .or_else(|| path.strip_prefix(&digest_prefix))
                    .map(str::to_string)
            };
            let (status, body) = match hex.and_then(|hex| fs::read(blobs.join(hex)).ok()) {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", b"not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: \
                 application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    host
}

/// The test stage1 (never run: pods are only prepared).
fn stage1(env: &Env) -> String {
    let path = env.path("stage1.aci");
    fs::write(&path, common::test_stage1_aci("example.com/stage1-names")).unwrap();
    format!("--stage1-path={path}")
}

/// Prepares a pod of `image`; returns its app's name.
fn app_name_of_pod(env: &Env, image: &str) -> String {
    let uuid = env
        .ok(&[
            "--insecure-options=image,http",
            "prepare",
            "--quiet",
            &stage1(env),
            image,
        ])
        .trim()
        .to_string();
    let manifest: Value = serde_json::from_str(&env.ok(&["cat-manifest", &uuid])).unwrap();
    manifest["apps"][0]["name"].as_str().unwrap().to_string()
}

#[test]
fn a_plain_http_registry_app_names_and_close_matches() {
    let env = Env::new();
    // The image first comes from a layout in a directory named `oci`,
    // tagged only, then from a registry: the issue's sequence.
    let (archived, _) = fetch_archive(
        &env,
        "seed.tar",
        &docker_archive(&[base_layer()], &["seed:1"]),
    );
    let layout = env.work.join("oci");
    let manifest = layout_of_stored(&env, &archived, &layout, "bookworm-nginx");
    env.ok(&["image", "rm", &archived]);
    let from_layout = format!("oci:{}:bookworm-nginx", layout.display());
    let id = env.ok(&["--insecure-options=image", "fetch", "--full", &from_layout]);
    let id = id.trim().to_string();
    // Known only by its layout so far: the app is named after the layout's
    // directory, the only name it has.
    assert_eq!(app_name_of_pod(&env, &from_layout), "oci");

    let host = plain_http_registry(
        layout.join("blobs/sha256"),
        "debian-nginx",
        "bookworm",
        manifest,
    );
    let remote = format!("docker://{host}/debian-nginx:bookworm");
    // HTTPS against a plain-HTTP registry: the error names the fix.
    let err = env.fails(254, &["--insecure-options=image", "fetch", &remote]);
    assert!(err.contains("--insecure-options=http"), "{err}");
    assert!(err.contains("plain HTTP"), "{err}");
    assert!(!err.contains("InvalidContentType"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let pulled = env.ok(&["--insecure-options=image,http", "fetch", "--full", &remote]);
    assert_eq!(pulled.trim(), id, "the same image");
    let registry_name = format!("{host}/debian-nginx:bookworm");
    assert_eq!(
        names_listed(&env, &id),
        vec![from_layout.clone(), registry_name.clone()]
    );
    // Found again by that name with --pull-policy=never (once "not in the
    // store": it was stored under the layout's source).
    assert_eq!(
        env.ok(&["fetch", "--full", "--pull-policy=never", &remote])
            .trim(),
        id
    );

    // Apps are named after the repository, however the image is named.
    for image in [
        remote.as_str(),
        from_layout.as_str(),
        registry_name.as_str(),
        &id[..19],
    ] {
        assert_eq!(app_name_of_pod(&env, image), "debian-nginx", "{image}");
    }

    // An unknown short name: no discovery for it, the close matches instead.
    for (args, expect) in [
        (vec!["fetch", "debian-nginx"], "docker://debian-nginx"),
        (
            vec!["image", "rm", "debian-ngnix:bookworm"],
            "image(s) could not be removed",
        ),
        (vec!["image", "render", "nginx", "out"], "nginx"),
    ] {
        let err = env.fails(254, &args);
        assert!(
            err.contains(&format!("did you mean {registry_name}?")),
            "{args:?}: {err}"
        );
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    let err = env.fails(
        254,
        &[
            "--insecure-options=image",
            "prepare",
            &stage1(&env),
            "debian-nginx",
        ],
    );
    assert!(
        err.contains(&format!("did you mean {registry_name}?")),
        "{err}"
    );
    // (The other line says the stage1's signature was not checked.)
    assert_eq!(
        err.lines().filter(|l| l.starts_with("rkt:")).count(),
        1,
        "{err}"
    );
}

/// A layer as a naive `tar -C rootfs .` makes it: /dev with its nodes.
fn dev_layer() -> Vec<u8> {
    tar_of(&[
        entry("dev/", tar::EntryType::Directory, b"", 0o755),
        entry("dev/null", tar::EntryType::Char, b"", 0o666),
        entry("dev/zero", tar::EntryType::Char, b"", 0o666),
        entry("dev/loop0", tar::EntryType::Block, b"", 0o660),
        entry("etc/hostname", tar::EntryType::Regular, b"debian\n", 0o644),
    ])
}

#[test]
fn device_nodes_are_skipped_with_one_warning_and_the_pod_prepares() {
    let env = Env::new();
    let (id, stderr) = fetch_archive(
        &env,
        "with-dev.tar",
        &docker_archive(&[base_layer(), dev_layer()], &["with-dev:1"]),
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one warning: {stderr}");
    assert!(lines[0].starts_with("rkt: warning: "), "{stderr}");
    assert!(
        lines[0].contains("skipped 3 device nodes") && lines[0].contains("(2 character, 1 block)"),
        "{stderr}"
    );

    // Prepared without a word about them; the tree has the rest.
    let uuid = env
        .ok(&[
            "--insecure-options=image",
            "prepare",
            "--quiet",
            &stage1(&env),
            "with-dev:1",
        ])
        .trim()
        .to_string();
    assert_eq!(uuid.len(), 36);
    let rendered = env.work.join("rendered");
    let out = env.rkt(&[
        "image",
        "render",
        "--rootfs-only",
        &id,
        rendered.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "reported once, at fetch"
    );
    assert_eq!(
        fs::read(rendered.join("etc/hostname")).unwrap(),
        b"debian\n"
    );
    assert!(rendered.join("dev").is_dir());
    assert!(fs::symlink_metadata(rendered.join("dev/null")).is_err());
    env.ok(&["image", "verify", "--all"]);
}

#[test]
fn a_traversal_in_a_layer_is_refused_at_fetch_and_nothing_is_stored() {
    let env = Env::new();
    let canary = env.work.join("escape");
    let hostile = tar_of(&[
        entry("dev/null", tar::EntryType::Char, b"", 0o666),
        entry("../escape", tar::EntryType::Regular, b"owned", 0o644),
    ]);
    let path = env.work.join("sub/hostile.tar");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        &path,
        docker_archive(&[base_layer(), hostile], &["hostile:1"]),
    )
    .unwrap();
    let err = env.fails(
        254,
        &[
            "--insecure-options=image",
            "fetch",
            &format!("docker-archive:{}", path.display()),
        ],
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("\"../escape\""), "{err}");
    assert!(err.contains("climb out"), "{err}");
    assert!(!canary.exists());
    assert_eq!(env.ok(&["image", "list", "--no-legend"]), "");
    for dir in ["cas/tree", "cas/tmp", "cas/blob/sha256"] {
        let left: Vec<_> = fs::read_dir(env.dir.join(dir))
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir} holds {left:?}");
    }
    // Nothing to find later either.
    let err = env.fails(254, &["image", "cat-manifest", "hostile:1"]);
    assert!(err.contains("not in the store"), "{err}");
}
