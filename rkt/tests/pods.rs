//! End-to-end tests of the pod commands through the real `rkt` binary:
//! `prepare` -> `list`/`status`/`cat-manifest` -> `rm`, `gc` of exited,
//! failed and expired pods, and the errors (with exit codes) of bad flags.
//! Images are busybox ACIs built here (needs busybox-static's /bin/busybox);
//! the stage1 is a busybox ACI carrying the stage1 annotations, since these
//! tests never run a pod. Running and exited pods are simulated exactly as a
//! stage1 leaves them: a directory in `pods/run/` that is flock-ed (running)
//! or not (exited), with `pid` and `stage1/rootfs/rkt/status/<app>` files.
//! Some checks need root (overlay and tmpfs mounts); the project's test
//! machines run as root.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use common::Env;
use serde_json::Value;

/// A test world: a data dir with an app image and a stage1 image on disk.
struct Pods {
    env: Env,
    app: String,
    stage1: String,
}

const APP_NAME: &str = "example.com/busybox";

fn stage1_manifest() -> String {
    r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/stage1-test",
        "labels":[{"name":"version","value":"0.1"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],
        "annotations":[
          {"name":"coreos.com/rkt/stage1/run","value":"/init"},
          {"name":"coreos.com/rkt/stage1/gc","value":"/gc"},
          {"name":"coreos.com/rkt/stage1/interface-version","value":"6"}]}"#
        .to_string()
}

impl Pods {
    fn new() -> Pods {
        let env = Env::new();
        let app = env.path("busybox.aci");
        fs::write(&app, common::busybox_aci(APP_NAME, "1.36", &[])).unwrap();
        let stage1 = env.path("stage1.aci");
        fs::write(
            &stage1,
            common::busybox_aci_with_manifest(&stage1_manifest(), &[]),
        )
        .unwrap();
        Pods { env, app, stage1 }
    }

    /// `rkt --insecure-options=image prepare --stage1-path=... ARGS`.
    fn prepare_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "--insecure-options=image".to_string(),
            "prepare".to_string(),
            format!("--stage1-path={}", self.stage1),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// Prepares a pod and returns its UUID.
    fn prepare(&self, args: &[&str]) -> String {
        let args = self.prepare_args(args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.env.ok(&refs);
        let uuid = out.trim().to_string();
        assert_eq!(uuid.len(), 36, "prepare printed {out:?}");
        uuid
    }

    fn prepare_fails(&self, code: i32, args: &[&str]) -> String {
        let args = self.prepare_args(args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.env.fails(code, &refs)
    }

    fn pods_dir(&self, state: &str) -> PathBuf {
        self.env.dir.join("pods").join(state)
    }

    fn pod_dir(&self, state: &str, uuid: &str) -> PathBuf {
        self.pods_dir(state).join(uuid)
    }

    /// Every pod directory, as `state/uuid`.
    fn all_pods(&self) -> Vec<String> {
        let mut found = Vec::new();
        for state in [
            "embryo",
            "prepare",
            "prepared",
            "run",
            "exited-garbage",
            "garbage",
        ] {
            if let Ok(entries) = fs::read_dir(self.pods_dir(state)) {
                for entry in entries {
                    found.push(format!(
                        "{state}/{}",
                        entry.unwrap().file_name().to_string_lossy()
                    ));
                }
            }
        }
        found.sort();
        found
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.env.ok(args)).unwrap()
    }

    /// Turns a prepared pod into one that a stage1 ran and left: in `run/`,
    /// with `pid` and the app's exit status. Returns its directory.
    fn simulate_run(&self, uuid: &str, app_status: Option<i32>) -> PathBuf {
        let run = self.pod_dir("run", uuid);
        fs::rename(self.pod_dir("prepared", uuid), &run).unwrap();
        fs::write(run.join("pid"), "4242").unwrap();
        if let Some(code) = app_status {
            let status = run.join("stage1/rootfs/rkt/status");
            fs::create_dir_all(&status).unwrap();
            fs::write(status.join("busybox"), code.to_string()).unwrap();
        }
        run
    }
}

fn is_root() -> bool {
    // The effective UID is the second field of the `Uid:` line.
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

fn mounted_under(path: &Path) -> bool {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| Path::new(point).starts_with(&path))
}

#[test]
fn prepare_then_list_status_cat_manifest_and_rm() {
    let pods = Pods::new();
    let env_file = pods.env.path("env");
    fs::write(&env_file, "# comment\nFROM_FILE=file\nBOTH=file\n").unwrap();
    let uuid_file = pods.env.path("uuid");
    let host_dir = pods.env.path("shared");
    fs::create_dir(&host_dir).unwrap();
    let volume = format!("shared,kind=host,source={host_dir},readOnly=true");
    let args = pods.prepare_args(&[
        "--no-overlay",
        "--set-env=BOTH=set",
        &format!("--set-env-file={env_file}"),
        "--volume",
        &volume,
        "--volume=scratch,kind=empty,mode=0700",
        "--mount=volume=scratch,target=/scratch",
        &format!("--uuid-file-save={uuid_file}"),
        &pods.app,
        "--exec=/bin/sh",
        "--environment=OWN=env",
        "--user=1000",
        "--group=1000",
        "--supplementary-gids=10,11",
        "--working-dir=/bin",
        "--readonly-rootfs",
        "--memory=64M",
        "--cpu=500m",
        "--mount=volume=shared,target=/shared",
        "--",
        "-c",
        "exit 3",
        "---",
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pods.env.command(&refs).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uuid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(fs::read_to_string(&uuid_file).unwrap(), uuid);
    assert_eq!(pods.all_pods(), [format!("prepared/{uuid}")]);

    // The on-disk format (copy mode).
    let dir = pods.pod_dir("prepared", &uuid);
    for file in [
        "pod",
        "pod-created",
        "pod.lck",
        "stage1TreeStoreID",
        "stage1/manifest",
        "stage1/rootfs/bin/busybox",
        "stage1/rootfs/opt/stage2/busybox/manifest",
        "stage1/rootfs/opt/stage2/busybox/rootfs/bin/busybox",
        "appsinfo/busybox/manifest",
    ] {
        assert!(dir.join(file).exists(), "missing {file}");
    }
    assert!(!dir.join("overlay-prepared").exists());

    // cat-manifest: the reified manifest.
    let manifest = pods.json(&["cat-manifest", &uuid]);
    assert_eq!(manifest["acKind"], "PodManifest");
    let app = &manifest["apps"][0];
    assert_eq!(app["name"], "busybox");
    assert_eq!(app["image"]["name"], APP_NAME);
    assert_eq!(app["image"]["id"].as_str().unwrap().len(), 7 + 128);
    assert_eq!(app["readOnlyRootFS"], true);
    let section = &app["app"];
    assert_eq!(
        section["exec"],
        serde_json::json!(["/bin/sh", "-c", "exit 3"])
    );
    assert_eq!(section["user"], "1000");
    assert_eq!(section["group"], "1000");
    assert_eq!(section["supplementaryGIDs"], serde_json::json!([10, 11]));
    assert_eq!(section["workingDirectory"], "/bin");
    let env: Vec<(String, String)> = section["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(env.contains(&("BOTH".into(), "set".into())), "{env:?}");
    assert!(env.contains(&("FROM_FILE".into(), "file".into())));
    assert!(env.contains(&("OWN".into(), "env".into())));
    let isolators = section["isolators"].as_array().unwrap();
    assert!(isolators
        .iter()
        .any(|i| i["name"] == "resource/memory" && i["value"]["limit"] == "64M"));
    assert!(isolators.iter().any(|i| i["name"] == "resource/cpu"));
    let mounts = app["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    let volumes = manifest["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["name"] == "shared"
        && v["kind"] == "host"
        && v["readOnly"] == true
        && v["source"] == host_dir.as_str()));
    assert!(volumes
        .iter()
        .any(|v| v["name"] == "scratch" && v["kind"] == "empty" && v["mode"] == "0700"));
    assert_eq!(
        manifest["annotations"][0],
        serde_json::json!({"name": "coreos.com/rkt/stage1/mutable", "value": "false"})
    );
    // --pretty-print=false prints the file as stored.
    let raw = pods
        .env
        .ok(&["cat-manifest", "--pretty-print=false", &uuid]);
    assert_eq!(raw.trim_end(), fs::read_to_string(dir.join("pod")).unwrap());

    // list, tabbed.
    let listing = pods.env.ok(&["list"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    let header: Vec<&str> = lines[0].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header,
        [
            "UUID",
            "APP",
            "IMAGE NAME",
            "STATE",
            "CREATED",
            "STARTED",
            "NETWORKS"
        ]
    );
    let row: Vec<&str> = lines[1].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(row[0], &uuid[..8]);
    assert_eq!(row[1], "busybox");
    assert_eq!(row[2], "example.com/busybox:1.36");
    assert_eq!(row[3], "prepared");
    assert!(row[4].ends_with("ago"), "{row:?}");
    let full = pods.env.ok(&["list", "--full", "--no-legend"]);
    let row: Vec<&str> = full.trim().split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(row[0], uuid);
    assert!(
        row[3].starts_with("sha512-") && row[3].len() == 19,
        "{row:?}"
    );
    assert!(row[5].ends_with("+0000 UTC"), "{row:?}");

    // list, JSON.
    for format in ["--format=json", "--format=json-pretty"] {
        let listed = pods.json(&["list", format]);
        let pod = &listed[0];
        assert_eq!(pod["name"], uuid.as_str());
        assert_eq!(pod["state"], "prepared");
        assert_eq!(pod["app_names"], serde_json::json!(["busybox"]));
        assert!(pod["created_at"].as_i64().unwrap() > 1_700_000_000);
        assert!(pod.get("started_at").is_none());
        let app = &pod["apps"][0];
        assert_eq!(app["state"], "created");
        assert_eq!(app["image_id"], manifest["apps"][0]["image"]["id"]);
        assert!(app.get("exit_code").is_none());
        let mounts = app["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["name"] == "shared"
            && m["container_path"] == "/shared"
            && m["host_path"] == host_dir.as_str()
            && m["read_only"] == true));
    }

    // status, by unique prefix and by --uuid-file.
    let status = pods.env.ok(&["status", &uuid[..6]]);
    let keys: Vec<&str> = status
        .lines()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    assert_eq!(keys, ["state", "created"], "{status}");
    assert!(status.starts_with("state=prepared\ncreated="));
    let by_file = pods
        .env
        .ok(&["status", &format!("--uuid-file={uuid_file}")]);
    assert_eq!(by_file, status);
    let json = pods.json(&["status", "--format=json", &uuid]);
    assert_eq!(json["state"], "prepared");
    // Nothing to wait for: a bounded wait on an unfinished pod times out.
    let err = pods.env.fails(254, &["status", "--wait=200ms", &uuid]);
    assert!(err.contains("timed out"), "{err}");

    // run-prepared refusing a runtime flag leaves the pod prepared.
    let err = pods.env.fails(254, &["run-prepared", "--net=host", &uuid]);
    assert!(err.contains("--net=host"), "{err}");
    assert_eq!(pods.all_pods(), [format!("prepared/{uuid}")]);

    // rm.
    let removed = pods.env.ok(&["rm", &uuid]);
    assert_eq!(removed.trim(), format!("\"{uuid}\""));
    assert!(pods.all_pods().is_empty());
    assert_eq!(pods.env.ok(&["list", "--no-legend"]), "");
    assert_eq!(pods.json(&["list", "--format=json"]), serde_json::json!([]));
    let err = pods.env.fails(254, &["status", &uuid]);
    assert!(err.contains("no pod matches"), "{err}");
}

#[test]
fn inherit_env_is_lowest_precedence_and_app_names_follow_images() {
    let pods = Pods::new();
    let args = pods.prepare_args(&[
        "--no-overlay",
        "--inherit-env",
        "--set-env=SET=set",
        &pods.app,
        "---",
        &pods.app,
        "--name=second",
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pods
        .env
        .command(&refs)
        .env("FROM_PARENT", "parent")
        .env("SET", "parent")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uuid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let manifest = pods.json(&["cat-manifest", &uuid]);
    let names: Vec<&str> = manifest["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["busybox", "second"]);
    let env = &manifest["apps"][1]["app"]["environment"];
    let value = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["value"].as_str().unwrap().to_string())
    };
    assert_eq!(value("FROM_PARENT").as_deref(), Some("parent"));
    assert_eq!(value("SET").as_deref(), Some("set"));
    // Same image twice without --name: a clear error, and no pod left.
    let err = pods.prepare_fails(254, &["--no-overlay", &pods.app, "---", &pods.app]);
    assert!(err.contains("--name"), "{err}");
    assert_eq!(pods.all_pods(), [format!("prepared/{uuid}")]);
}

#[test]
fn running_exited_and_garbage_pods() {
    let pods = Pods::new();
    let exited = pods.prepare(&["--no-overlay", &pods.app]);
    let running = pods.prepare(&["--no-overlay", &pods.app]);
    let exited_dir = pods.simulate_run(&exited, Some(3));
    let running_dir = pods.simulate_run(&running, None);
    // The stage1 of `running` still holds RKT_LOCK_FD.
    let stage1_lock = File::open(&running_dir).unwrap();
    stage1_lock.try_lock().unwrap();

    let status = pods.env.ok(&["status", &exited]);
    assert!(status.starts_with("state=exited\ncreated="), "{status}");
    assert!(status.contains("\nstarted="));
    assert!(
        status.contains("\npid=4242\nexited=true\napp-busybox=3\n"),
        "{status}"
    );
    let status = pods.env.ok(&["status", &running]);
    assert!(status.starts_with("state=running\n"), "{status}");
    assert!(
        status.contains("\nnetworks=\npid=4242\nexited=false\n"),
        "{status}"
    );
    assert!(!status.contains("app-busybox"));

    let json = pods.json(&["status", "--format=json", &exited]);
    assert_eq!(json["state"], "exited");
    assert!(json["started_at"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(json["apps"][0]["state"], "exited");
    assert_eq!(json["apps"][0]["exit_code"], 3);
    assert!(json["apps"][0]["finished_at"].as_i64().unwrap() > 1_700_000_000_000_000_000);
    let json = pods.json(&["status", "--format=json", &running]);
    assert_eq!(json["apps"][0]["state"], "running");

    // A running pod is neither removable nor collectable.
    let err = pods.env.fails(254, &["rm", &running]);
    assert!(err.contains("running"), "{err}");

    // A failed prepare (the preparer died: unlocked in prepare/) and an
    // embryo are collected too.
    let aborted = "00000000-0000-4000-8000-000000000001";
    fs::create_dir_all(pods.pod_dir("prepare", aborted)).unwrap();
    // Something left mounted in the exited pod (as root): gc must unmount
    // it, not delete through it.
    let mount_point = exited_dir.join("stage1/rootfs/mnt");
    if is_root() {
        fs::create_dir_all(&mount_point).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mount_point)
            .status()
            .unwrap();
        assert!(status.success());
        fs::write(mount_point.join("kept"), b"x").unwrap();
    }

    // --mark-only: moves, removes nothing.
    pods.env.ok(&["gc", "--mark-only"]);
    let mut expected = vec![
        format!("exited-garbage/{exited}"),
        format!("garbage/{aborted}"),
        format!("run/{running}"),
    ];
    expected.sort();
    assert_eq!(pods.all_pods(), expected);
    let status = pods.env.ok(&["status", &exited]);
    assert!(status.starts_with("state=exited garbage\n"), "{status}");
    assert!(status.contains("app-busybox=3"));

    // Default grace period: the exited pod stays a while; garbage goes.
    let out = pods.env.command(&["gc"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still within the grace period (30m)"));
    let mut expected = vec![format!("exited-garbage/{exited}"), format!("run/{running}")];
    expected.sort();
    assert_eq!(pods.all_pods(), expected);

    pods.env.ok(&["gc", "--grace-period=0s"]);
    assert_eq!(pods.all_pods(), [format!("run/{running}")]);
    if is_root() {
        assert!(!mounted_under(&pods.env.dir), "a mount was left behind");
    }

    // The stage1 exits: the lock goes, the pod is exited, gc takes it.
    drop(stage1_lock);
    assert!(pods
        .env
        .ok(&["status", &running])
        .starts_with("state=exited\n"));
    let out = pods.env.ok(&["gc", "--grace-period=0s"]);
    assert!(out.contains(&running), "{out}");
    assert!(pods.all_pods().is_empty());
}

#[test]
fn gc_expires_prepared_pods_and_rm_takes_exited_ones() {
    let pods = Pods::new();
    let prepared = pods.prepare(&["--no-overlay", &pods.app]);
    pods.env.ok(&["gc"]);
    assert_eq!(pods.all_pods(), [format!("prepared/{prepared}")]);
    pods.env.ok(&["gc", "--expire-prepared=0s"]);
    assert!(pods.all_pods().is_empty());

    let exited = pods.prepare(&["--no-overlay", &pods.app]);
    pods.simulate_run(&exited, Some(0));
    pods.env.ok(&["rm", &exited[..13]]);
    assert!(pods.all_pods().is_empty());
}

#[test]
fn overlay_pods_record_trees_instead_of_copying() {
    if !is_root() {
        // Without root rkt falls back to copying, which the other tests cover.
        let pods = Pods::new();
        let uuid = pods.prepare(&[&pods.app]);
        assert!(!pods
            .pod_dir("prepared", &uuid)
            .join("overlay-prepared")
            .exists());
        return;
    }
    let pods = Pods::new();
    let uuid = pods.prepare(&[&pods.app]);
    let dir = pods.pod_dir("prepared", &uuid);
    assert!(dir.join("overlay-prepared").is_file());
    let app_tree = fs::read_to_string(dir.join("appsinfo/busybox/treeStoreID")).unwrap();
    let stage1_tree = fs::read_to_string(dir.join("stage1TreeStoreID")).unwrap();
    for tree in [&app_tree, &stage1_tree] {
        assert!(tree.starts_with("deps-sha512-"), "{tree}");
        assert!(pods
            .env
            .dir
            .join("cas/tree")
            .join(tree)
            .join("rootfs/bin/busybox")
            .is_file());
    }
    // Nothing copied, nothing mounted at prepare time.
    assert!(!dir.join("stage1/rootfs/bin").exists());
    assert!(!dir.join("stage1/rootfs/opt").exists());
    assert!(!mounted_under(&pods.env.dir));
    let status = pods.env.ok(&["status", &uuid]);
    assert!(status.starts_with("state=prepared\n"));
    pods.env.ok(&["rm", &uuid]);
    assert!(pods.all_pods().is_empty());
}

#[test]
fn bad_flags_are_usage_errors_and_bad_requests_leave_no_pod() {
    let pods = Pods::new();
    // Usage errors: exit 2.
    for (args, says) in [
        (vec!["--bogus"], "--bogus"),
        (vec![], "at least one image"),
        (vec![pods.app.as_str(), "--bogus=1"], "unknown flag --bogus"),
        (
            vec![pods.app.as_str(), "--volume=a,kind=empty"],
            "whole pod",
        ),
        (
            vec!["--volume=data,kind=host", pods.app.as_str()],
            "source=",
        ),
        (
            vec!["--volume=Data,kind=empty", pods.app.as_str()],
            "valid name",
        ),
        (vec!["--mount=volume=data", pods.app.as_str()], "target"),
        (vec!["--set-env=novalue", pods.app.as_str()], "NAME=VALUE"),
        (
            vec!["--pull-policy=sometimes", pods.app.as_str()],
            "sometimes",
        ),
        (vec![pods.app.as_str(), "--memory=lots"], "quantity"),
        (vec![pods.app.as_str(), "--working-dir=tmp"], "absolute"),
        (
            vec![pods.app.as_str(), "--supplementary-gids=a"],
            "group ID",
        ),
        (vec!["--exec=/bin/sh", pods.app.as_str()], "--exec"),
    ] {
        let err = pods.prepare_fails(2, &args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Runtime errors: exit 254, one line naming the problem.
    let missing = pods.env.path("missing");
    let volume = format!("--volume=data,kind=host,source={missing}");
    for (args, says) in [
        (vec![volume.as_str(), pods.app.as_str()], "does not exist"),
        (
            vec![pods.app.as_str(), "--mount=volume=nope,target=/x"],
            "nope",
        ),
        (
            vec!["--pull-policy=never", "example.com/not-fetched"],
            "--pull-policy=never",
        ),
        (vec!["--private-users", pods.app.as_str()], "own VM"),
        (
            vec![pods.app.as_str(), "--exec=/bin/nope"],
            "/bin/nope does not exist in image example.com/busybox",
        ),
        (vec![pods.app.as_str(), "--exec=nope"], "nope is not found"),
        (
            vec![pods.app.as_str(), "--working-dir=/srv"],
            "working directory /srv does not exist",
        ),
    ] {
        let err = pods.prepare_fails(254, &args);
        assert!(err.contains(says), "{args:?}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("rkt:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(says), "{err}");
    }
    // The stage1 must exist and be a stage1, and be signed unless the user
    // says otherwise.
    // (A copy of rkt in a directory without stage1-kvm.aci: the build installs
    // one beside target/release/rkt.)
    let lonely = pods.env.work.join("lonely-bin");
    fs::create_dir_all(&lonely).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_rkt"), lonely.join("rkt")).unwrap();
    let usual = pods
        .env
        .command(&["--insecure-options=image", "prepare", &pods.app]);
    let out = std::process::Command::new(lonely.join("rkt"))
        .args(usual.get_args())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(254));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no stage1 image at"), "{err}");
    let err = pods.env.fails(
        254,
        &[
            "--insecure-options=image",
            "prepare",
            &format!("--stage1-path={}", pods.app),
            &pods.app,
        ],
    );
    assert!(err.contains("not a stage1"), "{err}");
    // A --stage1-path outside the stage1 directory, under --insecure-options=image, is found
    // again by its file stamp (the second prepare imports only the app); without that option
    // its signature is checked on every run, also after an import that skipped the check.
    let skipped_checks = |args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = pods.env.rkt(&refs);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr)
            .matches("signature verification skipped")
            .count()
    };
    let copy = pods.env.work.join("stage1-copy.aci");
    fs::copy(&pods.stage1, &copy).unwrap();
    let copy = copy.display().to_string();
    let args: Vec<String> = [
        "--insecure-options=image",
        "prepare",
        &format!("--stage1-path={copy}"),
        &pods.app,
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(skipped_checks(&args), 2, "the stage1 and the app imported");
    assert_eq!(skipped_checks(&args), 1, "only the app read again");
    let err = pods.env.fails(
        254,
        &["prepare", &format!("--stage1-path={copy}"), &pods.app],
    );
    assert!(err.contains("signature"), "{err}");
    let err = pods.env.fails(
        2,
        &[
            "prepare",
            "--stage1-path=/a.aci",
            "--stage1-name=example.com/s",
            &pods.app,
        ],
    );
    assert!(err.contains("cannot be used with"), "{err}");
    let err = pods.env.fails(
        2,
        &[
            "--insecure-options=image",
            "prepare",
            "--stage1=nspawn",
            &pods.app,
        ],
    );
    assert!(err.contains("kvm"), "{err}");
    for pod in pods.all_pods() {
        let uuid = pod.rsplit('/').next().unwrap_or(&pod).to_string();
        pods.env.ok(&["rm", &uuid]);
    }
    assert!(pods.all_pods().is_empty(), "{:?}", pods.all_pods());

    // Pod lookup errors.
    let err = pods.env.fails(254, &["status", "ffff"]);
    assert!(err.contains("no pod matches"), "{err}");
    for uuid in [
        "11111111-0000-4000-8000-000000000001",
        "11111111-0000-4000-8000-000000000002",
    ] {
        fs::create_dir_all(pods.pod_dir("garbage", uuid)).unwrap();
    }
    let err = pods.env.fails(254, &["cat-manifest", "1111"]);
    assert!(err.contains("matches 2 pods"), "{err}");
    pods.env.fails(2, &["status"]);
    pods.env.fails(2, &["list", "--format=yaml"]);
}

#[test]
fn run_and_run_prepared_check_their_flags_before_the_host() {
    let pods = Pods::new();
    let app = pods.app.as_str();
    for (code, args, says) in [
        (
            254,
            vec!["run", "--net=host", app],
            "--net=host is impossible",
        ),
        (254, vec!["run", "--net=default,host:x", app], "--net=host"),
        (254, vec!["run", "--ipc=parent", app], "--ipc=parent"),
        (254, vec!["run", "--mds-register", app], "metadata service"),
        (2, vec!["run", "--ipc=shared", app], "shared"),
        (2, vec!["run", "--hostname=bad_name", app], "host name"),
        (
            2,
            vec!["run", "--dns=host", "--dns-search=x", app],
            "--dns=host",
        ),
        (2, vec!["run", "--dns=dns.example", app], "not an IP"),
        (2, vec!["run", "--hosts-entry=nope", app], "IP=HOSTNAME"),
        (2, vec!["run", "--interactive", app, "---", app], "one app"),
        (2, vec!["run", app, "--bogus"], "unknown flag --bogus"),
        (2, vec!["run", "--stage1=nspawn", app], "kvm"),
        (2, vec!["run"], "at least one image"),
        (
            254,
            vec!["run-prepared", "--net=host", "0000"],
            "--net=host",
        ),
        (
            2,
            vec!["run-prepared", "--hosts-entry=x", "0000"],
            "IP=HOSTNAME",
        ),
    ] {
        let err = pods.env.fails(code, &args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(pods.all_pods().is_empty());
}

#[test]
fn pod_manifest_files_are_prepared_as_given() {
    let pods = Pods::new();
    let first = pods.prepare(&["--no-overlay", &pods.app, "--exec=/bin/sh"]);
    let manifest_file = pods.env.path("pod.json");
    let bytes = fs::read(pods.pod_dir("prepared", &first).join("pod")).unwrap();
    fs::write(&manifest_file, &bytes).unwrap();
    let flag = format!("--pod-manifest={manifest_file}");

    let second = pods.prepare(&["--no-overlay", &flag]);
    let dir = pods.pod_dir("prepared", &second);
    assert_eq!(fs::read(dir.join("pod")).unwrap(), bytes);
    assert!(dir
        .join("stage1/rootfs/opt/stage2/busybox/rootfs/bin/busybox")
        .is_file());
    assert!(pods
        .env
        .ok(&["status", &second])
        .starts_with("state=prepared\n"));

    let err = pods.prepare_fails(2, &[&flag, "--set-env=A=1"]);
    assert!(err.contains("--pod-manifest"), "{err}");
    let err = pods.prepare_fails(2, &[&flag, &pods.app]);
    assert!(err.contains("--pod-manifest"), "{err}");

    let mut manifest: Value = serde_json::from_slice(&bytes).unwrap();
    manifest["apps"][0]["image"]["id"] = Value::String(format!("sha512-{}", "1".repeat(128)));
    fs::write(&manifest_file, manifest.to_string()).unwrap();
    let err = pods.prepare_fails(254, &[&flag]);
    assert!(err.contains("not in the store"), "{err}");
    manifest["apps"][0]["image"]["id"] = Value::String("sha512-short".into());
    fs::write(&manifest_file, manifest.to_string()).unwrap();
    let err = pods.prepare_fails(254, &[&flag]);
    assert!(err.contains("apps[0].image.id"), "{err}");
    let mut expected = vec![format!("prepared/{first}"), format!("prepared/{second}")];
    expected.sort();
    assert_eq!(pods.all_pods(), expected);
}

/// What a hostile guest could leave in its pod directory (a FIFO for a status file, a link
/// to the host for `pid`, a 2 GiB `net-info.json`, links to a host directory): `status`
/// and `list` answer at once and name the pod and the file, and `rm` removes the pod without
/// touching what the links point at.
#[test]
fn planted_files_in_an_exited_pod_get_prompt_clear_answers() {
    let pods = Pods::new();
    let uuid = pods.prepare(&["--no-overlay", &pods.app]);
    let dir = pods.simulate_run(&uuid, Some(0));
    let canary = pods.env.work.join("canary");
    fs::create_dir_all(&canary).unwrap();
    fs::write(canary.join("pid"), "1").unwrap();
    fs::write(canary.join("keep"), "host data").unwrap();

    let status = dir.join("stage1/rootfs/rkt/status/busybox");
    fs::remove_file(&status).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&status)
        .status()
        .unwrap();
    assert!(made.success());
    fs::remove_file(dir.join("pid")).unwrap();
    std::os::unix::fs::symlink(canary.join("pid"), dir.join("pid")).unwrap();
    File::create(dir.join("net-info.json"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    std::os::unix::fs::symlink(&canary, dir.join("stage1/rootfs/escape")).unwrap();
    std::os::unix::fs::symlink(&canary, dir.join("appsinfo/busybox/escape")).unwrap();

    let started = std::time::Instant::now();
    let err = pods.env.fails(254, &["status", &uuid]);
    assert!(err.contains(&uuid) && err.contains("pid"), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    let out = pods.env.command(&["list", "--full"]).output().unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stderr);
    assert!(listed.contains(&uuid), "{listed}");
    // The FIFO, reached once the pid is readable again.
    fs::remove_file(dir.join("pid")).unwrap();
    fs::write(dir.join("pid"), "4242").unwrap();
    let err = pods.env.fails(254, &["status", &uuid]);
    assert!(
        err.contains("rkt/status/busybox") && err.contains("FIFO"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "something blocked"
    );

    pods.env.ok(&["rm", &uuid]);
    assert!(pods.all_pods().is_empty());
    assert_eq!(
        fs::read_to_string(canary.join("keep")).unwrap(),
        "host data"
    );
    assert_eq!(fs::read_to_string(canary.join("pid")).unwrap(), "1");
}

/// `--disk-limit` where the data directory's file system keeps no project quotas (the test's
/// temporary directory: tmpfs, an overlay, or a kernel without quota support) is refused with
/// what to change, and no pod is left behind. Where quotas hold: tests/vm_jail.rs.
#[test]
fn a_disk_limit_the_file_system_cannot_keep_is_refused() {
    let pods = Pods::new();
    let err = pods.prepare_fails(254, &["--disk-limit=16M", &pods.app]);
    assert!(
        err.contains("--disk-limit") && err.contains("prjquota"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("rkt:")).count(),
        1,
        "{err}"
    );
    assert!(pods.all_pods().is_empty(), "{:?}", pods.all_pods());
    let usage = pods.prepare_fails(2, &["--disk-limit=lots", &pods.app]);
    assert!(usage.contains("--disk-limit"), "{usage}");
}
