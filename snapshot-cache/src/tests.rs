use super::*;
use std::os::unix::fs::PermissionsExt;

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

/// Builds the test key's entry with a small `state` and a sparse `memory`.
fn made(cache: &Cache) -> PathBuf {
    cache
        .make(&key(0), |dir| {
            fs::write(dir.join("state"), b"vcpu registers").map_err(|e| e.to_string())?;
            let memory = File::create(dir.join("memory")).map_err(|e| e.to_string())?;
            memory.set_len(32 << 20).map_err(|e| e.to_string())
        })
        .unwrap();
    cache.root().join(key(0).id())
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn entries_are_root_only_and_record_their_files() {
    let data = tempfile::tempdir().unwrap();
    let cache = Cache::new(data.path());
    let entry = made(&cache);
    assert_eq!(mode(cache.root()), 0o700);
    assert_eq!(mode(cache.root().parent().unwrap()), 0o700);
    assert_eq!(mode(&entry), 0o700);
    for name in ["state", "memory", INFO_FILE] {
        assert_eq!(mode(&entry.join(name)), 0o600, "{name}");
    }
    let lock = cache.root().join(format!(".{}.lock", key(0).id()));
    assert_eq!(mode(&lock), 0o600);
    let info = cache.list().unwrap().remove(0).info.unwrap();
    let names: Vec<&str> = info.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["memory", "state"]);
    assert_eq!(info.files[1].size, b"vcpu registers".len() as u64);
    assert!(cache.open_checked(&key(0)).unwrap().is_some());
}

#[test]
fn looser_cache_directories_are_tightened_on_use() {
    let data = tempfile::tempdir().unwrap();
    let cache = Cache::new(data.path());
    fs::create_dir_all(cache.root()).unwrap();
    fs::set_permissions(cache.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        cache.root().parent().unwrap(),
        fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    assert!(cache.open(&key(0)).is_none());
    assert_eq!(mode(cache.root()), 0o700);
    assert_eq!(mode(cache.root().parent().unwrap()), 0o700);
}

/// Each way a file of an entry can change gets the entry refused, and `remove_refused` then
/// takes it away so the next pod makes a new one.
#[test]
fn a_snapshot_whose_files_changed_is_refused_and_replaced() {
    use std::os::unix::fs::FileExt;
    type Tamper = fn(&Path);
    let tampers: [(&str, Tamper); 6] = [
        ("state rewritten, same size and mtime", |entry| {
            let state = entry.join("state");
            let before = fs::metadata(&state).unwrap().modified().unwrap();
            let file = OpenOptions::new().write(true).open(&state).unwrap();
            file.write_at(b"V", 0).unwrap();
            file.set_modified(before).unwrap();
        }),
        ("memory written in place", |entry| {
            let file = OpenOptions::new()
                .write(true)
                .open(entry.join("memory"))
                .unwrap();
            file.write_at(b"\x01", 4096).unwrap();
        }),
        ("memory replaced by a copy", |entry| {
            fs::copy(entry.join("memory"), entry.join("copy")).unwrap();
            fs::rename(entry.join("copy"), entry.join("memory")).unwrap();
        }),
        ("a file added", |entry| {
            fs::write(entry.join("extra"), b"x").unwrap();
        }),
        ("state made readable by others", |entry| {
            fs::set_permissions(entry.join("state"), fs::Permissions::from_mode(0o644)).unwrap();
        }),
        ("state replaced by a symlink", |entry| {
            fs::remove_file(entry.join("state")).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", entry.join("state")).unwrap();
        }),
    ];
    for (what, tamper) in tampers {
        let data = tempfile::tempdir().unwrap();
        let cache = Cache::new(data.path());
        let entry = made(&cache);
        tamper(&entry);
        let refused = cache.open_checked(&key(0));
        assert!(
            matches!(refused, Err(CacheError::Refused { .. })),
            "{what}: {:?}",
            refused.as_ref().map(|o| o.is_some())
        );
        assert!(cache.open(&key(0)).is_none(), "{what}");
        cache.remove_refused(&key(0)).unwrap();
        assert!(!entry.exists(), "{what}: removed");
        made(&cache);
        assert!(cache.open_checked(&key(0)).unwrap().is_some(), "{what}");
    }
}
