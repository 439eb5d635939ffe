//! `rkt image rm` and `rkt image gc` never take away what a pod uses, in
//! any state the pod is in until `rkt rm`/`rkt gc` removes it: prepared
//! (copied or overlay), exited, exited and marked as garbage. Through the
//! real `rkt` binary; images are busybox ACIs built here (needs
//! busybox-static's /bin/busybox). Pods are only prepared, never run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Env;

struct World {
    env: Env,
    app: String,
    stage1: String,
}

const APP: &str = "example.com/in-use";

impl World {
    fn new() -> World {
        let env = Env::new();
        let app = env.path("app.aci");
        fs::write(&app, common::busybox_aci(APP, "1", &[])).unwrap();
        let stage1 = env.path("stage1.aci");
        fs::write(
            &stage1,
            common::test_stage1_aci("example.com/stage1-in-use"),
        )
        .unwrap();
        World { env, app, stage1 }
    }

    /// Prepares a pod of the app image; returns its UUID.
    fn prepare(&self, extra: &[&str]) -> String {
        let stage1 = format!("--stage1-path={}", self.stage1);
        let mut args = vec!["--insecure-options=image", "prepare", "--quiet", &stage1];
        args.extend_from_slice(extra);
        args.push(&self.app);
        let uuid = self.env.ok(&args).trim().to_string();
        assert_eq!(uuid.len(), 36, "prepare printed {uuid:?}");
        uuid
    }

    /// The app image's full ID, from `image list`.
    fn app_id(&self) -> String {
        let listing = self.env.ok(&["image", "list", "--full", "--no-legend"]);
        listing
            .lines()
            .find(|line| line.contains(APP))
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or_else(|| panic!("{APP} not listed: {listing}"))
            .to_string()
    }

    fn listed(&self) -> bool {
        self.env
            .ok(&["image", "list", "--full", "--no-legend"])
            .contains(APP)
    }

    fn trees(&self) -> Vec<PathBuf> {
        let mut trees: Vec<PathBuf> = fs::read_dir(self.env.dir.join("cas/tree"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        trees.sort();
        trees
    }

    fn pod_dir(&self, state: &str, uuid: &str) -> PathBuf {
        self.env.dir.join("pods").join(state).join(uuid)
    }

    /// What stage1 leaves when the pod has run and exited: the pod in
    /// `run/`, unlocked, with a pid file.
    fn simulate_exit(&self, uuid: &str) {
        let run = self.pod_dir("run", uuid);
        fs::rename(self.pod_dir("prepared", uuid), &run).unwrap();
        fs::write(run.join("pid"), "4242").unwrap();
    }

    /// `image rm` of the app (by name, then by ID) fails with 254 and one
    /// line naming exactly `pods`; `image gc --grace-period=0s` keeps it and
    /// says why under --debug; nothing of it is gone; the store verifies.
    fn assert_held_by(&self, pods: &[&str]) {
        let id = self.app_id();
        let trees = self.trees();
        let contents: Vec<Vec<u8>> = trees.iter().map(|tree| tree_listing(tree)).collect();
        let holders = match pods {
            [one] => format!("pod {one}; remove it"),
            many => format!("pods {}; remove them", many.join(", ")),
        };
        let expected = format!("rkt: image {id} is used by {holders} with `rkt rm` first\n");
        for reference in [APP, id.as_str(), &id[..20]] {
            let err = self.env.fails(254, &["image", "rm", reference]);
            assert_eq!(err, expected, "image rm {reference}");
        }
        // Naming a free image too removes nothing either.
        let err = self
            .env
            .fails(254, &["image", "rm", APP, "example.com/none"]);
        assert_eq!(err, expected);

        let out = self
            .env
            .command(&["--debug", "image", "gc", "--grace-period=0s"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let keeping = format!(
            "rkt: keeping image {id}: used by {}",
            &holders[..holders.find(';').unwrap()]
        );
        assert!(stderr.contains(&keeping), "{stderr}");
        assert!(!stderr.contains("successfully removed"), "{stderr}");

        assert!(self.listed());
        assert_eq!(self.trees(), trees, "image gc removed a tree");
        let after: Vec<Vec<u8>> = trees.iter().map(|tree| tree_listing(tree)).collect();
        assert!(after == contents, "a tree changed");
        self.env.ok(&["image", "verify", "--all"]);
    }

    /// With no pod holding it, `image rm` removes the app image.
    fn assert_free(&self) {
        let id = self.app_id();
        let err = self.env.fails(0, &["image", "rm", APP]);
        assert_eq!(err, format!("successfully removed image {id}\n"));
        assert!(!self.listed());
        self.env.ok(&["image", "verify", "--all"]);
    }
}

/// Every path under `tree` with its kind and size, sorted: enough to see
/// that nothing was removed or rewritten.
fn tree_listing(tree: &Path) -> Vec<u8> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let rel = entry
                .path()
                .strip_prefix(base)
                .unwrap()
                .display()
                .to_string();
            out.push(format!("{rel} {:?} {}", meta.file_type(), meta.len()));
            if meta.is_dir() {
                walk(&entry.path(), base, out);
            }
        }
    }
    let mut lines = Vec::new();
    walk(tree, tree, &mut lines);
    lines.join("\n").into_bytes()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn a_prepared_copied_pod_holds_its_image_until_rkt_rm() {
    let world = World::new();
    let uuid = world.prepare(&["--no-overlay"]);
    assert!(!world
        .pod_dir("prepared", &uuid)
        .join("overlay-prepared")
        .exists());
    world.assert_held_by(&[&uuid]);
    // `rkt gc` within the prepared pod's expiry keeps it, and so the image.
    world.env.ok(&["gc"]);
    world.assert_held_by(&[&uuid]);

    world.env.ok(&["rm", &uuid]);
    world.assert_free();
    // The stage1 image was held too, and is free now.
    world.env.ok(&["image", "gc", "--grace-period=0s"]);
    assert!(world.trees().is_empty());
    assert_eq!(
        world.env.ok(&["image", "list", "--no-legend"]).trim(),
        "",
        "every image removed"
    );
}

#[test]
fn an_overlay_pod_holds_the_tree_it_mounts() {
    let world = World::new();
    let uuid = world.prepare(&[]);
    let pod = world.pod_dir("prepared", &uuid);
    let overlay = pod.join("overlay-prepared").exists();
    // Without overlay support (not root) rkt copies; the test above covers that.
    assert!(
        overlay || !is_root(),
        "root, yet the pod was not overlay-prepared"
    );
    world.assert_held_by(&[&uuid]);
    // The trees the overlay pod mounts at run time are still there.
    if overlay {
        for name in ["stage1TreeStoreID", "appsinfo/in-use/treeStoreID"] {
            let id = fs::read_to_string(pod.join(name)).unwrap();
            let tree = world.env.dir.join("cas/tree").join(id.trim());
            assert!(tree.join("rootfs/bin/busybox").is_file(), "{name} {id}");
        }
    }
    // A second pod of the same image: both are named, and one going is not enough.
    let second = world.prepare(&[]);
    let mut both = [uuid.as_str(), second.as_str()];
    both.sort();
    world.assert_held_by(&both);
    world.env.ok(&["rm", &uuid]);
    world.assert_held_by(&[&second]);
    world.env.ok(&["rm", &second]);
    world.assert_free();
}

#[test]
fn an_exited_pod_holds_its_image_until_gc_removes_it() {
    let world = World::new();
    let uuid = world.prepare(&["--no-overlay"]);
    world.simulate_exit(&uuid);
    world.assert_held_by(&[&uuid]);
    // gc marks it (exited garbage), but within the grace period keeps it.
    world.env.ok(&["gc", "--grace-period=1h"]);
    assert_eq!(
        common::pod_dirs(&world.env.dir),
        [format!("exited-garbage/{uuid}")]
    );
    world.assert_held_by(&[&uuid]);
    world.env.ok(&["gc", "--grace-period=0s"]);
    assert!(common::pod_dirs(&world.env.dir).is_empty());
    world.assert_free();
}

#[test]
fn image_gc_removes_the_images_of_pods_gc_has_removed() {
    let world = World::new();
    let uuid = world.prepare(&["--no-overlay"]);
    world.env.ok(&["gc", "--expire-prepared=0s"]);
    assert!(common::pod_dirs(&world.env.dir).is_empty(), "{uuid} stayed");
    let err = world.env.fails(0, &["image", "gc", "--grace-period=0s"]);
    assert!(err.contains("rkt: 2 image(s) removed"), "{err}");
    assert!(world.trees().is_empty());
    world.env.ok(&["image", "verify", "--all"]);
}
