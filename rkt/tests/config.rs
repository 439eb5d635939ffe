//! `rkt config` through the real binary: the configuration merged from the system, local and
//! user directories, printed as rkt printed it, and the same settings in effect for the other
//! commands (the data directory from paths.d, the default stage1 from stage1.d).

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// `rkt --system-config=S --local-config=L --user-config=U ARGS` (no --dir unless in ARGS).
fn rkt(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkt"))
        .arg(format!("--system-config={}", root.join("system").display()))
        .arg(format!("--local-config={}", root.join("local").display()))
        .arg(format!("--user-config={}", root.join("user").display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_prints_the_merged_configuration_and_it_is_in_effect() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("configured-data");
    write(
        &root.join("system"),
        "auth.d/basic.json",
        r#"{"rktKind":"auth","rktVersion":"v1","domains":["foo.com","bar.com","baz.com"],
            "type":"basic","credentials":{"user":"sysUser","password":"sysPassword"}}"#,
    );
    write(
        &root.join("user"),
        "auth.d/basic.json",
        r#"{"rktKind":"auth","rktVersion":"v1","domains":["foo.com"],
            "type":"basic","credentials":{"user":"user","password":"password"}}"#,
    );
    write(
        &root.join("local"),
        "auth.d/docker.json",
        r#"{"rktKind":"dockerAuth","rktVersion":"v1","registries":["quay.io","127.0.0.1:5000"],
            "credentials":{"user":"dock","password":"er"}}"#,
    );
    write(
        &root.join("local"),
        "paths.d/paths.json",
        &format!(
            r#"{{"rktKind":"paths","rktVersion":"v1","data":"{}","stage1-images":"/opt/s1"}}"#,
            data.display()
        ),
    );
    write(
        &root.join("user"),
        "stage1.d/stage1.json",
        &format!(
            r#"{{"rktKind":"stage1","rktVersion":"v1","name":"example.com/my-stage1",
                "version":"2.0","location":"{}/my-stage1.aci"}}"#,
            root.display()
        ),
    );

    let out = rkt(root, &["config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.starts_with("{\n\t\"stage0\": ["),
        "tab-indented: {printed}"
    );
    let value: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let expected = serde_json::json!({"stage0": [
        {"rktVersion": "v1", "rktKind": "auth", "domains": ["bar.com"], "type": "basic",
         "credentials": {"user": "sysUser", "password": "sysPassword"}},
        {"rktVersion": "v1", "rktKind": "auth", "domains": ["baz.com"], "type": "basic",
         "credentials": {"user": "sysUser", "password": "sysPassword"}},
        {"rktVersion": "v1", "rktKind": "auth", "domains": ["foo.com"], "type": "basic",
         "credentials": {"user": "user", "password": "password"}},
        {"rktVersion": "v1", "rktKind": "dockerAuth", "registries": ["127.0.0.1:5000"],
         "credentials": {"user": "dock", "password": "er"}},
        {"rktVersion": "v1", "rktKind": "dockerAuth", "registries": ["quay.io"],
         "credentials": {"user": "dock", "password": "er"}},
        {"rktVersion": "v1", "rktKind": "paths", "data": data.display().to_string(),
         "stage1-images": "/opt/s1"},
        {"rktVersion": "v1", "rktKind": "stage1", "name": "example.com/my-stage1",
         "version": "2.0", "location": format!("{}/my-stage1.aci", root.display())}
    ]});
    assert_eq!(value, expected);

    // --pretty-print=false: the same, on one line; --dir beats paths.d.
    let out = rkt(
        root,
        &["--dir=/elsewhere", "config", "--pretty-print=false"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let flat = text(&out.stdout);
    assert_eq!(flat.trim_end().lines().count(), 1, "{flat}");
    let value: serde_json::Value = serde_json::from_str(&flat).unwrap();
    assert_eq!(value["stage0"][5]["data"], "/elsewhere");

    // In effect: without --dir, pods go to paths.d's data directory; without --stage1-*, the
    // stage1 is stage1.d's location (missing here, so prepare names it).
    let image = root.join("not-needed.aci");
    let out = rkt(
        root,
        &[
            "prepare",
            "--insecure-options=image",
            image.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(254), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}/my-stage1.aci", root.display())),
        "{err}"
    );
    assert!(
        data.join("cas").is_dir(),
        "the store is in paths.d's data dir"
    );

    // A broken configuration file is named, with the problem; exit 254.
    write(
        &root.join("system"),
        "paths.d/zz.json",
        r#"{"rktKind":"paths","rktVersion":"v1","stage1-images":"relative/dir"}"#,
    );
    let out = rkt(root, &["config"]);
    assert_eq!(out.status.code(), Some(254));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("rkt: ") && err.contains("zz.json") && err.contains("absolute"),
        "{err}"
    );
}

mod common;

/// Sets `path`'s modification time to `seconds` ago (coreutils' touch).
fn age(path: &Path, seconds: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let status = Command::new("touch")
        .arg("-d")
        .arg(format!("@{}", now - seconds))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_default_stage1_file_is_imported_again_only_when_it_changed() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let images = root.join("stage1-images");
    fs::create_dir_all(&images).unwrap();
    write(
        &root.join("local"),
        "paths.d/paths.json",
        &format!(
            r#"{{"rktKind":"paths","rktVersion":"v1","stage1-images":"{}"}}"#,
            images.display()
        ),
    );
    let stage1 = images.join("stage1-kvm.aci");
    let manifest = r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"coreos.com/rkt/stage1-kvm",
        "labels":[{"name":"version","value":"0.1"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],
        "annotations":[{"name":"coreos.com/rkt/stage1/run","value":"/init"},
                       {"name":"coreos.com/rkt/stage1/interface-version","value":"6"}]}"#;
    fs::write(&stage1, common::busybox_aci_with_manifest(manifest, &[])).unwrap();
    age(&stage1, 100);
    let app = root.join("app.aci");
    fs::write(&app, common::busybox_aci("example.com/app", "1", &[])).unwrap();
    let data = format!("--dir={}", root.join("data").display());
    let prepare = |expect: i32| {
        let out = rkt(
            root,
            &[
                &data,
                "--insecure-options=image",
                "prepare",
                "--quiet",
                app.to_str().unwrap(),
                "--exec=/bin/sh",
            ],
        );
        assert_eq!(out.status.code(), Some(expect), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    prepare(0);
    // Unchanged since the import (the same stamp): the stored import.
    prepare(0);
    // Other bytes with the old modification time, as `install -p`, `cp -p`, dpkg or tar leave
    // an upgraded stage1: the change of ctime says it is another file, which is read again
    // (and refused, being no image now) rather than the old stage1 used for every pod.
    fs::write(&stage1, b"not an image any more").unwrap();
    age(&stage1, 100);
    let err = prepare(254);
    assert!(err.contains("stage1-kvm.aci"), "{err}");
    // Changed since the import by its content's time as well: read again.
    age(&stage1, 0);
    let err = prepare(254);
    assert!(err.contains("stage1-kvm.aci"), "{err}");
}
