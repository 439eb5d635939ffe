//! End-to-end tests of the `rkt` binary's image commands: each test gets its
//! own --dir and --local-config, builds a busybox ACI, and signs it with a key
//! made in a throwaway GnuPG home (needs `gpg` and busybox-static's
//! /bin/busybox on the host).

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Env, Gpg};
use sha2::{Digest, Sha512};

/// A busybox ACI at the version these tests use.
fn busybox_aci(name: &str, extra: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
    common::busybox_aci(name, "1.36", extra)
}

fn image_id(tar: &[u8]) -> String {
    format!("sha512-{}", hex::encode(Sha512::digest(tar)))
}

#[test]
fn signed_fetch_needs_a_signature_and_a_trusted_key() {
    let env = Env::new();
    let tar = busybox_aci("example.com/busybox", &[]);
    let aci = env.path("busybox.aci");
    fs::write(&aci, &tar).unwrap();

    let err = env.fails(254, &["fetch", &aci]);
    assert!(err.starts_with("rkt: "), "{err}");
    assert!(
        err.contains("no signature") && err.contains("--insecure-options=image"),
        "{err}"
    );
    // --insecure-options given more than once: the last list counts, as in rkt, so a `none`
    // at the end turns the checks back on; a bad word in any of them is a usage error.
    env.fails(
        2,
        &[
            "--insecure-options=bogus",
            "--insecure-options=image",
            "fetch",
            &aci,
        ],
    );
    let err = env.fails(
        254,
        &[
            "--insecure-options=image",
            "--insecure-options=none",
            "fetch",
            &aci,
        ],
    );
    assert!(err.contains("no signature"), "{err}");
    let id = env.ok(&[
        "--insecure-options=ondisk",
        "--insecure-options=image",
        "fetch",
        &aci,
    ]);
    assert!(id.starts_with("sha512-"), "{id}");
    env.ok(&["image", "rm", id.trim()]);

    let gpg = Gpg::new();
    gpg.sign(&aci);
    let err = env.fails(254, &["fetch", &aci]);
    assert!(
        err.contains("no keys are trusted for example.com/busybox"),
        "{err}"
    );
    assert!(
        err.contains("rkt trust --prefix=example.com/busybox"),
        "{err}"
    );

    let key = env.path("key.asc");
    gpg.export_public(&key);
    // Without --skip-fingerprint-review the key is shown and "no" refuses it.
    let mut trust = env
        .command(&["trust", "--prefix=example.com/busybox", &key])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    trust.stdin.take().unwrap().write_all(b"no\n").unwrap();
    let out = trust.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(254));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GPG key fingerprint is:"));
    assert!(!env
        .config
        .join("trustedkeys/prefix.d/example.com/busybox")
        .exists());

    env.ok(&[
        "trust",
        "--prefix=example.com/busybox",
        "--skip-fingerprint-review",
        &key,
    ]);
    let keys: Vec<_> = fs::read_dir(env.config.join("trustedkeys/prefix.d/example.com/busybox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].len(), 40, "named by the v4 fingerprint: {keys:?}");

    let id = image_id(&tar);
    let short = env.ok(&["fetch", &aci]);
    assert_eq!(short.trim(), &id[..7 + 32]);
    let full = env.ok(&["fetch", "--full", &format!("file://{aci}")]);
    assert_eq!(full.trim(), id);

    // A tampered image with the old signature is refused.
    let mut tampered = tar.clone();
    let last = tampered.len() - 2000;
    tampered[last] ^= 0xff;
    fs::write(&aci, &tampered).unwrap();
    let err = env.fails(254, &["fetch", &aci]);
    assert!(err.contains("does not verify"), "{err}");

    // A key trusted for another prefix does not count.
    let other_tar = busybox_aci("example.org/other", &[]);
    let other = env.path("other.aci");
    fs::write(&other, &other_tar).unwrap();
    gpg.sign(&other);
    let err = env.fails(254, &["fetch", &other]);
    assert!(
        err.contains("no keys are trusted for example.org/other"),
        "{err}"
    );
    // A root key does.
    env.ok(&["trust", "--root", "--skip-fingerprint-review", &key]);
    assert_eq!(
        env.ok(&["fetch", "--full", &other]).trim(),
        image_id(&other_tar)
    );
}

#[test]
fn image_commands_round_trip() {
    let env = Env::new();
    let tar = busybox_aci("example.com/busybox", &[]);
    let id = image_id(&tar);
    // Fetch a gzip-compressed copy: the ID is still that of the plain tar.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let aci = env.path("busybox.aci");
    fs::write(&aci, gz.finish().unwrap()).unwrap();
    let fetched = env.ok(&["--insecure-options=image", "fetch", "--full", &aci]);
    assert_eq!(fetched.trim(), id);

    let list = env.ok(&["image", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    for column in ["ID", "NAME", "SIZE", "IMPORT TIME", "LAST USED"] {
        assert!(lines[0].contains(column), "{list}");
    }
    assert!(lines[1].starts_with(&id[..7 + 12]), "{list}");
    assert!(lines[1].contains("example.com/busybox:1.36"), "{list}");
    let bare = env.ok(&["image", "list", "--no-legend", "--full", "--fields=id,size"]);
    assert_eq!(bare.trim(), format!("{id}  {}", tar.len()));
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "list", "--format=json"])).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["size"], tar.len() as u64);

    let manifest: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "cat-manifest", &id[..20]])).unwrap();
    assert_eq!(manifest["name"], "example.com/busybox");
    assert_eq!(
        env.ok(&["image", "cat-manifest", "example.com/busybox:1.36"]),
        env.ok(&["image", "cat-manifest", &id])
    );

    let exported = env.path("out.aci");
    env.ok(&["image", "export", &id, &exported]);
    assert_eq!(
        fs::read(&exported).unwrap(),
        tar,
        "export writes the uncompressed ACI"
    );
    let err = env.fails(254, &["image", "export", &id, &exported]);
    assert!(err.contains("--overwrite"), "{err}");
    env.ok(&["image", "export", "--overwrite", &id, &exported]);

    let extracted = env.path("extracted");
    env.ok(&["image", "extract", &id, &extracted]);
    assert!(Path::new(&extracted).join("manifest").is_file());
    assert!(Path::new(&extracted).join("rootfs/bin/busybox").is_file());

    let rendered = env.path("rendered");
    env.ok(&["image", "render", "--rootfs-only", &id, &rendered]);
    let echo = Command::new(Path::new(&rendered).join("bin/sh"))
        .args(["-c", "echo hello from the image"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&echo.stdout),
        "hello from the image\n"
    );
    env.fails(254, &["image", "render", "--rootfs-only", &id, &rendered]);
    env.ok(&["image", "render", "--overwrite", &id, &rendered]);
    assert!(Path::new(&rendered).join("manifest").is_file());
    // Both renders used one cached tree.
    assert_eq!(fs::read_dir(env.dir.join("cas/tree")).unwrap().count(), 1);

    // gc keeps recently used images; a zero grace period removes them.
    env.ok(&["image", "gc"]);
    assert!(env
        .ok(&["image", "list", "--no-legend"])
        .contains("busybox"));
    let err = env.fails(254, &["image", "rm", "sha512-0000"]);
    assert!(err.contains("sha512-0000"), "{err}");
    env.ok(&["image", "rm", &id]);
    assert_eq!(env.ok(&["image", "list", "--no-legend"]), "");
    assert_eq!(fs::read_dir(env.dir.join("cas/tree")).unwrap().count(), 0);
    env.ok(&["--insecure-options=image", "fetch", &aci]);
    env.ok(&["image", "gc", "--grace-period=0s"]);
    assert_eq!(env.ok(&["image", "list", "--no-legend"]), "");
}

#[test]
fn malicious_images_are_refused_naming_the_entry() {
    let env = Env::new();
    let dotdot = busybox_aci(
        "example.com/evil",
        &[("rootfs/../../evil", tar::EntryType::Regular, None)],
    );
    let path = env.path("dotdot.aci");
    fs::write(&path, &dotdot).unwrap();
    let err = env.fails(254, &["--insecure-options=image", "fetch", &path]);
    assert!(
        err.contains("\"rootfs/../../evil\"") && err.contains("`..`"),
        "{err}"
    );
    assert_eq!(env.ok(&["image", "list", "--no-legend"]), "");
    assert_eq!(fs::read_dir(env.dir.join("cas/tmp")).unwrap().count(), 0);

    // Passes the fetch-time layout check, refused when rendered.
    let planted = busybox_aci(
        "example.com/evil",
        &[
            (
                "rootfs/escape",
                tar::EntryType::Symlink,
                Some(env.work.to_str().unwrap()),
            ),
            ("rootfs/escape/owned", tar::EntryType::Regular, None),
        ],
    );
    let path = env.path("planted.aci");
    fs::write(&path, &planted).unwrap();
    let id = env.ok(&["--insecure-options=image", "fetch", "--full", &path]);
    let err = env.fails(254, &["image", "render", id.trim(), &env.path("out")]);
    assert!(
        err.contains("\"rootfs/escape/owned\"") && err.contains("symlink"),
        "{err}"
    );
    assert!(!env.work.join("owned").exists());
    assert!(!env.work.join("out").exists());

    let bad_manifest = env.path("bad.aci");
    let mut builder = tar::Builder::new(Vec::new());
    let manifest = br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/x","app":{"exec":["/bin/sh"],"user":"0","group":"0","workingDirectory":"relative"}}"#;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "manifest", &manifest[..])
        .unwrap();
    fs::write(&bad_manifest, builder.into_inner().unwrap()).unwrap();
    let err = env.fails(254, &["--insecure-options=image", "fetch", &bad_manifest]);
    assert!(err.contains("app.workingDirectory"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_bad_or_unsupported_sources_say_so() {
    let env = Env::new();
    env.fails(2, &["no-such-command"]);
    env.fails(2, &["--insecure-options=bogus", "image", "list"]);
    env.fails(2, &["image", "gc", "--grace-period=soon"]);
    let err = env.fails(
        254,
        &["--insecure-options=image", "fetch", "docker://Not_Valid"],
    );
    assert!(err.contains("not a valid image reference"), "{err}");
    // Discovery of a name not in the store asks https://localhost (loopback
    // only) and finds nothing there.
    let err = env.fails(254, &["fetch", "localhost/not-stored"]);
    assert!(
        err.contains("appc discovery found no ac-discovery meta tag"),
        "{err}"
    );
    let err = env.fails(254, &["fetch", "--pull-policy=never", "example.com/absent"]);
    assert!(err.contains("--pull-policy=never"), "{err}");
    let err = env.fails(254, &["trust", &env.path("k.asc")]);
    assert!(err.contains("--prefix"), "{err}");
    assert!(env.ok(&["version"]).contains("appc Version: 0.8.11"));
}

#[test]
fn concurrent_fetches_and_a_killed_fetch_leave_a_sound_store() {
    let env = Env::new();
    let tar = busybox_aci("example.com/busybox", &[]);
    let aci = env.path("busybox.aci");
    fs::write(&aci, &tar).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            env.command(&["--insecure-options=image", "fetch", "--full", &aci])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), image_id(&tar));
    }
    assert_eq!(env.ok(&["image", "list", "--no-legend"]).lines().count(), 1);

    // A big image, killed mid-fetch at a few different moments.
    let mut big = busybox_aci("example.com/big", &[]);
    // Append a large rootfs file by rebuilding with padding data.
    let padding: Vec<u8> = (0..48 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    {
        let mut builder = tar::Builder::new(Vec::new());
        let mut archive = tar::Archive::new(&big[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            builder.append(&header, &data[..]).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(padding.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "rootfs/padding", &padding[..])
            .unwrap();
        big = builder.into_inner().unwrap();
    }
    let big_path = env.path("big.aci");
    fs::write(&big_path, &big).unwrap();
    for delay_ms in [5u64, 50, 200] {
        let mut child = env
            .command(&["--insecure-options=image", "fetch", &big_path])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        // SIGKILL: no destructors, no cleanup.
        let _ = child.kill();
        let _ = child.wait();
        // The store still opens and lists; the busybox image is intact.
        let list = env.ok(&["image", "list", "--no-legend", "--full", "--fields=id"]);
        assert!(list.contains(&image_id(&tar)), "{list}");
    }
    env.ok(&["image", "gc"]);
    assert_eq!(fs::read_dir(env.dir.join("cas/tmp")).unwrap().count(), 0);
    assert_eq!(
        env.ok(&["--insecure-options=image", "fetch", "--full", &big_path])
            .trim(),
        image_id(&big)
    );
    let rendered = env.path("big-rendered");
    env.ok(&[
        "image",
        "render",
        "--rootfs-only",
        "example.com/big",
        &rendered,
    ]);
    assert_eq!(
        fs::read(Path::new(&rendered).join("padding")).unwrap(),
        padding
    );
}

#[test]
fn http_aci_fetch_checks_the_signature_next_to_it() {
    let env = Env::new();
    let tar = busybox_aci("example.com/busybox", &[]);
    let aci = env.path("busybox.aci");
    fs::write(&aci, &tar).unwrap();
    let gpg = Gpg::new();
    gpg.sign(&aci);
    let key = env.path("key.asc");
    gpg.export_public(&key);
    let mut files = std::collections::HashMap::new();
    files.insert("/busybox.aci".to_string(), tar.clone());
    files.insert(
        "/busybox.aci.asc".to_string(),
        fs::read(format!("{aci}.asc")).unwrap(),
    );
    files.insert("/unsigned.aci".to_string(), tar.clone());
    files.insert("/key.asc".to_string(), fs::read(&key).unwrap());
    let (base, requests) = common::serve(move |path, _| match files.get(path) {
        Some(body) => common::Reply::ok(body.clone()),
        None => common::Reply::not_found(),
    });
    // The key itself comes over HTTP too, which needs saying so.
    let key_url = format!("{base}/key.asc");
    let trust = [
        "trust",
        "--prefix=example.com/busybox",
        "--skip-fingerprint-review",
    ];
    let err = env.fails(254, &[&trust[..], &[key_url.as_str()]].concat());
    assert!(err.contains("--insecure-allow-http"), "{err}");
    env.ok(&[&trust[..], &["--insecure-allow-http", key_url.as_str()]].concat());

    let url = format!("{base}/busybox.aci");
    assert_eq!(env.ok(&["fetch", "--full", &url]).trim(), image_id(&tar));
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "list", "--format=json"])).unwrap();
    assert_eq!(json[0]["source"], url.as_str());

    // --pull-policy=new uses the stored copy without asking the server.
    let before = requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        env.ok(&["fetch", "--full", "--pull-policy=new", &url])
            .trim(),
        image_id(&tar)
    );
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), before);

    let unsigned = format!("{base}/unsigned.aci");
    let err = env.fails(254, &["fetch", &unsigned]);
    assert!(
        err.contains("no signature") && err.contains("unsigned.aci.asc"),
        "{err}"
    );
    env.ok(&["--insecure-options=image", "fetch", &unsigned]);
    let err = env.fails(
        254,
        &["fetch", "--pull-policy=never", &format!("{base}/other.aci")],
    );
    assert!(err.contains("--pull-policy=never"), "{err}");
    let err = env.fails(
        254,
        &[
            "--insecure-options=image",
            "fetch",
            &format!("{base}/missing.aci"),
        ],
    );
    assert!(err.contains("404"), "{err}");
}

#[test]
fn http_aci_fetch_sends_auth_d_credentials_to_their_domain() {
    let tar = busybox_aci("example.com/busybox", &[]);
    let gpg = Gpg::new();
    let signing = Env::new();
    let aci = signing.path("busybox.aci");
    fs::write(&aci, &tar).unwrap();
    gpg.sign(&aci);
    let key = signing.path("key.asc");
    gpg.export_public(&key);
    let mut files = std::collections::HashMap::new();
    files.insert("/busybox.aci".to_string(), tar.clone());
    files.insert(
        "/busybox.aci.asc".to_string(),
        fs::read(format!("{aci}.asc")).unwrap(),
    );
    // admin:open sesame, or the oauth token.
    let accepted = ["Basic YWRtaW46b3BlbiBzZXNhbWU=", "Bearer t0k3n"];
    let (base, _) = common::serve(move |path, headers| {
        let authorized = headers
            .get("authorization")
            .is_some_and(|value| accepted.contains(&value.as_str()));
        match (authorized, files.get(path)) {
            (false, _) => common::Reply {
                status: 401,
                headers: vec![("WWW-Authenticate".into(), "Basic realm=\"rkt\"".into())],
                body: b"who are you?".to_vec(),
            },
            (true, Some(body)) => common::Reply::ok(body.clone()),
            (true, None) => common::Reply::not_found(),
        }
    });
    let host = base.trim_start_matches("http://").to_string();
    let url = format!("{base}/busybox.aci");
    let configs = [
        format!(
            r#"{{"rktKind":"auth","rktVersion":"v1","domains":["{host}"],"type":"basic",
                "credentials":{{"user":"admin","password":"open sesame"}}}}"#
        ),
        r#"{"rktKind":"auth","rktVersion":"v1","domains":["127.0.0.1"],"type":"oauth",
            "credentials":{"token":"t0k3n"}}"#
            .to_string(),
    ];
    for config in configs {
        let env = Env::new();
        env.ok(&[
            "trust",
            "--prefix=example.com/busybox",
            "--skip-fingerprint-review",
            &key,
        ]);
        let err = env.fails(254, &["fetch", &url]);
        assert!(err.contains("HTTP 401") && err.contains("auth.d/"), "{err}");

        // Credentials for another domain are not sent here.
        fs::create_dir_all(env.config.join("auth.d")).unwrap();
        fs::write(
            env.config.join("auth.d/other.json"),
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["example.org"],"type":"basic",
                "credentials":{"user":"admin","password":"open sesame"}}"#,
        )
        .unwrap();
        let err = env.fails(254, &["fetch", &url]);
        assert!(err.contains("HTTP 401") && err.contains("auth.d/"), "{err}");

        fs::write(env.config.join("auth.d/mine.json"), config).unwrap();
        assert_eq!(env.ok(&["fetch", "--full", &url]).trim(), image_id(&tar));
    }
}
