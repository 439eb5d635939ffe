use super::*;

/// A key for the tests (also key.rs's), with `nics` NICs.
pub(crate) fn key(nics: usize) -> Key {
    Key {
        format: CACHE_FORMAT,
        stage1_tree: "deps-sha512-aa".into(),
        cmdline: "quiet rkt.warm=1".into(),
        mem_mib: 128,
        vcpus: 1,
        rng: true,
        shares: vec![ShareShape {
            tag: "pod".into(),
            read_only: false,
        }],
        vsock_cid: 3,
        nics,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_entry_is_built_once_and_opened_through_its_descriptor() {
    let data = tempfile::tempdir().unwrap();
    let cache = Cache::new(data.path());
    assert!(cache.open(&key(0)).is_none());
    let made = cache
        .make(&key(0), |dir| {
            fs::write(dir.join("state"), b"s").map_err(|e| e.to_string())
        })
        .unwrap();
    assert!(matches!(made, Made::Built));
    let again = cache.make(&key(0), |_| panic!("built twice")).unwrap();
    assert!(matches!(again, Made::Found));
    let opened = cache.open(&key(0)).unwrap();
    assert_eq!(fs::read(opened.dir.join("state")).unwrap(), b"s");
    let listed = cache.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].info.as_ref().unwrap().key, key(0));
    assert!(cache.open(&key(1)).is_none(), "another shape");

    // Removed while open: the files it had not opened yet are gone (a clean failure, never
    // another entry's file).
    let state = File::open(opened.dir.join("state")).unwrap();
    cache.remove_where(|_| true).unwrap();
    assert!(fs::read(opened.dir.join("state")).is_err());
    assert_eq!(io::read_to_string(state).unwrap(), "s");
    assert!(cache.open(&key(0)).is_none());
    assert!(cache.list().unwrap().is_empty());
}

#[test]
fn a_failed_build_leaves_nothing() {
    let data = tempfile::tempdir().unwrap();
    let cache = Cache::new(data.path());
    let err = cache
        .make(&key(0), |dir| {
            fs::write(dir.join("memory"), b"half").unwrap();
            Err("the guest ended".into())
        })
        .err()
        .unwrap();
    assert!(err.to_string().contains("the guest ended"), "{err}");
    let id = key(0).id();
    assert_eq!(names(cache.root()), [format!(".{id}.lock")]);
}

#[test]
fn leftovers_of_a_killed_build_are_removed_and_a_broken_entry_replaced() {
    let data = tempfile::tempdir().unwrap();
    let cache = Cache::new(data.path());
    let id = key(0).id();
    fs::create_dir_all(cache.root().join(format!(".build-{id}-999999"))).unwrap();
    // An entry without info.json is never used, and replaced by the next build.
    fs::create_dir_all(cache.root().join(&id)).unwrap();
    assert!(cache.open(&key(0)).is_none());
    cache.make(&key(0), |_| Ok(())).unwrap();
    assert!(cache.open(&key(0)).is_some());
    assert_eq!(names(cache.root()), [format!(".{id}.lock"), id.clone()]);
}

#[test]
fn only_the_entry_that_failed_is_removed() {
    let data = tempfile::tempdir().unwrap();
    let cache = Cache::new(data.path());
    cache.make(&key(0), |_| Ok(())).unwrap();
    let stale = cache.open(&key(0)).unwrap();
    // Someone replaced it meanwhile: the new one stays.
    cache.remove_where(|_| true).unwrap();
    cache.make(&key(0), |_| Ok(())).unwrap();
    cache.remove_opened(&stale).unwrap();
    assert!(cache.open(&key(0)).is_some());
    let current = cache.open(&key(0)).unwrap();
    cache.remove_opened(&current).unwrap();
    assert!(cache.open(&key(0)).is_none());
}

#[test]
fn remove_where_picks_entries() {
    let data = tempfile::tempdir().unwrap();
    let cache = Cache::new(data.path());
    cache.make(&key(0), |_| Ok(())).unwrap();
    cache.make(&key(1), |_| Ok(())).unwrap();
    let removed = cache
        .remove_where(|e| e.info.as_ref().is_some_and(|i| i.key.nics == 1))
        .unwrap();
    assert_eq!(removed, [key(1).id()]);
    assert!(cache.open(&key(0)).is_some());
}
