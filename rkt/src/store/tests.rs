use std::time::Duration;

use super::*;
use crate::testutil::{import, listing, manifest};

fn open(dir: &Path) -> Store {
    Store::open(dir, LockMode::Shared).unwrap()
}

#[test]
fn insert_then_resolve_by_id_prefix_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let v1 = import(
        &store,
        &manifest("example.com/app", "1", ""),
        &[("a", b"1")],
    );
    let v2 = import(
        &store,
        &manifest("example.com/app", "2", ""),
        &[("a", b"2")],
    );
    assert_ne!(v1, v2);
    let blob = dir
        .path()
        .join("cas/blob/sha512")
        .join(&v1.hex()[..2])
        .join(v1.hex());
    assert!(blob.is_file());
    assert_eq!(store.resolve(v1.short()).unwrap().id, v1);
    assert_eq!(store.resolve(v1.as_str()).unwrap().id, v1);
    assert_eq!(store.resolve("example.com/app:1").unwrap().id, v1);
    assert_eq!(store.resolve("example.com/app:2").unwrap().id, v2);
    assert!(matches!(
        store.resolve("sha512-"),
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    assert!(matches!(
        store.resolve("example.com/app:3"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.resolve("example.com/other"),
        Err(StoreError::NotFound { .. })
    ));
    // Fetching the same bytes again is idempotent.
    let again = import(
        &store,
        &manifest("example.com/app", "1", ""),
        &[("a", b"1")],
    );
    assert_eq!(again, v1);
    assert_eq!(store.images().unwrap().len(), 2);
}

#[test]
fn renders_dependencies_in_order_with_path_whitelist_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let base = import(
        &store,
        &manifest("example.com/base", "1", ""),
        &[
            ("etc/os", b"base"),
            ("bin/tool", b"base"),
            ("lib/junk", b"x"),
        ],
    );
    let app = import(
        &store,
        &manifest(
            "example.com/app",
            "1",
            r#","dependencies":[{"imageName":"example.com/base","labels":[{"name":"version","value":"1"}]}],
               "pathWhitelist":["/etc/os","/bin/tool","/bin/app"]"#,
        ),
        &[("bin/tool", b"app"), ("bin/app", b"app")],
    );
    let tree = store.tree(&app).unwrap();
    let rootfs = tree.join("rootfs");
    assert_eq!(
        listing(&rootfs),
        vec!["bin/", "bin/app", "bin/tool", "etc/", "etc/os"]
    );
    assert_eq!(
        fs::read(rootfs.join("bin/tool")).unwrap(),
        b"app",
        "later layers win"
    );
    assert_eq!(fs::read(rootfs.join("etc/os")).unwrap(), b"base");
    assert!(fs::read_to_string(tree.join("manifest"))
        .unwrap()
        .contains("example.com/app"));

    // The second render is the cached tree: same directory, untouched.
    let marker = rootfs.join("etc/marker");
    fs::write(&marker, b"still here").unwrap();
    assert_eq!(store.tree(&app).unwrap(), tree);
    assert!(marker.exists());
    // Rendering the base alone is a different tree.
    assert_ne!(store.tree(&base).unwrap(), tree);
}

#[test]
fn missing_dependency_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let app = import(
        &store,
        &manifest(
            "example.com/app",
            "1",
            r#","dependencies":[{"imageName":"example.com/nope"}]"#,
        ),
        &[],
    );
    let err = store.tree(&app).unwrap_err().to_string();
    assert!(
        err.contains("example.com/nope") && err.contains("fetch it first"),
        "{err}"
    );
}

#[test]
fn remove_and_gc_clean_up_everything_including_crash_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let (keep, old) = {
        let store = open(dir.path());
        let keep = import(
            &store,
            &manifest("example.com/keep", "1", ""),
            &[("a", b"1")],
        );
        let old = import(
            &store,
            &manifest("example.com/old", "1", ""),
            &[("a", b"2")],
        );
        store.tree(&keep).unwrap();
        store.tree(&old).unwrap();
        (keep, old)
    };
    // What a kill -9 mid-fetch or mid-render leaves: a temp file, a blob
    // without an index row, a tree without one.
    fs::write(dir.path().join("cas/tmp/aci-stray"), b"partial").unwrap();
    let stray_blob = dir.path().join("cas/blob/sha512/ff").join("f".repeat(128));
    fs::create_dir_all(stray_blob.parent().unwrap()).unwrap();
    fs::write(&stray_blob, b"orphan").unwrap();
    fs::create_dir_all(dir.path().join("cas/tree/deps-sha512-stray/rootfs")).unwrap();

    let mut store = Store::open(dir.path(), LockMode::Exclusive).unwrap();
    // Make `old` look unused for two days.
    store
        .index
        .touch(old.as_str(), unix_now() - 2 * 86400)
        .unwrap();
    let report = store
        .gc(Duration::from_secs(86400), &Holds::default())
        .unwrap();
    assert_eq!(report.images, vec![old.clone()]);
    assert_eq!(report.stray_trees, 1);
    assert_eq!(report.stray_blobs, 1);
    assert_eq!(report.stray_temp_files, 1);
    assert!(!stray_blob.exists());
    let remaining: Vec<_> = store.images().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(remaining, vec![keep.clone()]);
    assert_eq!(
        fs::read_dir(dir.path().join("cas/tree")).unwrap().count(),
        1
    );

    store.remove(&keep, &Holds::default()).unwrap();
    assert!(store.images().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(dir.path().join("cas/tree")).unwrap().count(),
        0
    );
    assert!(listing(&dir.path().join("cas/blob/sha512"))
        .iter()
        .all(|p| p.ends_with('/')));
}

#[test]
fn concurrent_fetches_of_the_same_image_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = open(&path);
                let id = import(
                    &store,
                    &manifest("example.com/same", "1", ""),
                    &[("a", b"1")],
                );
                store.tree(&id).unwrap();
                id
            })
        })
        .collect();
    let ids: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let store = open(&path);
    assert_eq!(store.images().unwrap().len(), 1);
    assert_eq!(fs::read_dir(path.join("cas/tree")).unwrap().count(), 1);
    assert_eq!(fs::read_dir(path.join("cas/tmp")).unwrap().count(), 0);
}

/// A store in `dir` with one small image in it.
fn store_with_one_image(dir: &Path) -> (Store, ImageId) {
    let store = open(dir);
    let id = import(
        &store,
        &manifest("example.com/app", "1", ""),
        &[("a", b"1")],
    );
    (store, id)
}

#[test]
fn verify_finds_a_corrupted_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id) = store_with_one_image(dir.path());
    let image = store.image(&id).unwrap();
    assert!(store.verify(&image).unwrap().is_empty());
    let blob = dir
        .path()
        .join("cas/blob/sha512")
        .join(&id.hex()[..2])
        .join(id.hex());
    let mut bytes = fs::read(&blob).unwrap();
    bytes[600] ^= 1;
    fs::write(&blob, bytes).unwrap();
    let problems = store.verify(&image).unwrap();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].contains("does not hash to its ID"),
        "{problems:?}"
    );
}

/// A pod's record keeps its tree and every image the tree was rendered
/// from (dependency included) through `remove` and `gc`, until the pod is
/// gone; then the record is dropped and both go.
#[test]
fn what_a_pod_holds_survives_rm_and_gc_until_the_pod_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (base, app, tree) = {
        let store = open(dir.path());
        let base = import(
            &store,
            &manifest("example.com/base", "1", ""),
            &[("etc/os", b"base")],
        );
        let app = import(
            &store,
            &manifest(
                "example.com/app",
                "1",
                r#","dependencies":[{"imageName":"example.com/base"}]"#,
            ),
            &[("bin/app", b"app")],
        );
        let rendered = store.rendered(&app).unwrap();
        assert_eq!(rendered.images, vec![base.clone(), app.clone()]);
        store
            .hold_for_pod("pod-a", std::slice::from_ref(&rendered))
            .unwrap();
        (base, app, rendered.path)
    };
    let mut store = Store::open(dir.path(), LockMode::Exclusive).unwrap();
    for id in [&base, &app] {
        store.index.touch(id.as_str(), 0).unwrap();
    }
    let holds = store.holds(|pod| pod == "pod-a").unwrap();
    for id in [&base, &app] {
        let err = store.remove(id, &holds).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("image {id} is used by pod pod-a; remove it with `rkt rm` first")
        );
    }
    let report = store.gc(Duration::ZERO, &holds).unwrap();
    assert!(report.images.is_empty(), "{report:?}");
    assert_eq!(report.kept_in_use.len(), 2);
    assert!(tree.join("rootfs/bin/app").is_file());
    assert!(store.check_consistency().unwrap().is_empty());

    // The pod is removed: its record goes with the next look, then the images.
    let holds = store.holds(|_| false).unwrap();
    assert!(store.index.pod_refs().unwrap().is_empty());
    let report = store.gc(Duration::ZERO, &holds).unwrap();
    assert_eq!(report.images.len(), 2);
    assert!(!tree.exists());
    assert!(store.check_consistency().unwrap().is_empty());
}

#[test]
fn the_consistency_check_finds_missing_blobs_and_trees() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id) = store_with_one_image(dir.path());
    let tree = store.tree(&id).unwrap();
    assert!(store.check_consistency().unwrap().is_empty());
    fs::remove_dir_all(&tree).unwrap();
    fs::remove_file(store.blob_path(&id)).unwrap();
    let problems = store.check_consistency().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("its blob"), "{problems:?}");
    assert!(
        problems[1].contains("its directory is missing"),
        "{problems:?}"
    );
}

/// One image row whose manifest cannot be read is one problem of the listing and of the
/// consistency check; the other images are still there to check, and the damaged image's tree
/// is not reported again as naming an image not in the index.
#[test]
fn a_damaged_image_row_does_not_stop_the_checks_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (store, damaged) = store_with_one_image(dir.path());
    store.tree(&damaged).unwrap();
    let intact = import(
        &store,
        &manifest("example.com/other", "1", ""),
        &[("b", b"2")],
    );
    let db = rusqlite::Connection::open(dir.path().join("cas/db/index.sqlite")).unwrap();
    db.execute(
        "UPDATE images SET manifest = ?2 WHERE id = ?1",
        rusqlite::params![damaged.as_str(), b"{not json".to_vec()],
    )
    .unwrap();
    drop(db);

    let records = store.image_records().unwrap();
    assert_eq!(records.len(), 2);
    let readable: Vec<_> = records.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(readable.len(), 1);
    assert_eq!(readable[0].id, intact);
    assert!(store.verify(readable[0]).unwrap().is_empty());

    let problems = store.check_consistency().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(damaged.as_str()), "{problems:?}");
}

#[test]
fn a_recorded_file_is_found_only_with_the_same_stamp_and_while_its_image_is_here() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id) = store_with_one_image(dir.path());
    let stamp = FileStamp {
        dev: 1,
        ino: -2, // an inode number above i64::MAX, kept by its bits
        size: 3,
        mtime_ns: 4,
        ctime_ns: 5,
    };
    let source = "file:///usr/lib/rkt/stage1-kvm.aci";
    assert_eq!(store.unchanged_file(source, &stamp).unwrap(), None);
    store.record_file(source, &id, &stamp).unwrap();
    assert_eq!(
        store.unchanged_file(source, &stamp).unwrap(),
        Some(id.clone())
    );
    let touched = FileStamp {
        ctime_ns: 6,
        ..stamp
    };
    assert_eq!(store.unchanged_file(source, &touched).unwrap(), None);
    assert_eq!(
        store
            .unchanged_file("file:///elsewhere.aci", &stamp)
            .unwrap(),
        None
    );
    drop(store);
    let mut store = Store::open(dir.path(), LockMode::Exclusive).unwrap();
    store.remove(&id, &Holds::default()).unwrap();
    assert_eq!(
        store.unchanged_file(source, &stamp).unwrap(),
        None,
        "its image is gone"
    );
}
