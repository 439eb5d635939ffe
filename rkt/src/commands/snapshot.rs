//! `rkt snapshot list [--no-legend]` and `rkt snapshot clear`: the kvm stage1's warm-start
//! snapshots under `$dir/stage1-kvm/snapshots/` (docs/stage1-kvm.md, "Warm start"). Our
//! extension: upstream rkt has no snapshots. `rkt gc` removes the stale ones (`remove_stale`).

use std::path::Path;

use clap::{Args, Subcommand};
use snapshot_cache::{Cache, Entry, CACHE_FORMAT};

use super::format::{ago, human_size};
use super::list::print_table;
use crate::error::RktError;
use crate::globals::GlobalOptions;

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// List the cached snapshots (one per stage1 image and VM shape).
    List(ListArgs),
    /// Remove every cached snapshot (pods then boot cold until the next one is made).
    Clear,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Leave out the header line.
    #[arg(long)]
    no_legend: bool,
}

pub fn run(globals: &GlobalOptions, command: SnapshotCommand) -> Result<(), RktError> {
    let cache = Cache::new(&globals.dir);
    match command {
        SnapshotCommand::List(args) => list(&cache, &args),
        SnapshotCommand::Clear => {
            let removed = cache
                .remove_where(|_| true)
                .map_err(|e| RktError::Message(e.to_string()))?;
            println!("Removed {} snapshot(s)", removed.len());
            Ok(())
        }
    }
}

fn list(cache: &Cache, args: &ListArgs) -> Result<(), RktError> {
    let entries = cache.list().map_err(|e| RktError::Message(e.to_string()))?;
    let now = crate::store::unix_now();
    let mut rows = Vec::new();
    if !args.no_legend {
        rows.push(
            [
                "ID", "STAGE1", "MEMORY", "VCPUS", "NICS", "SHARES", "DISK", "CREATED",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    for entry in &entries {
        let Some(info) = &entry.info else {
            rows.push(vec![entry.id.clone(), "(unreadable: gc removes it)".into()]);
            continue;
        };
        let key = &info.key;
        let shares: Vec<String> = key
            .shares
            .iter()
            .map(|s| format!("{}{}", s.tag, if s.read_only { "(ro)" } else { "" }))
            .collect();
        rows.push(vec![
            entry.id.clone(),
            key.stage1_tree.chars().take(24).collect(),
            format!("{}MiB", key.mem_mib),
            key.vcpus.to_string(),
            key.nics.to_string(),
            shares.join(","),
            human_size(info.disk_bytes),
            ago(i64::try_from(info.created).unwrap_or(i64::MAX), now),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// Why `entry` is stale, if it is: made by another cache format, unreadable, or made from a
/// stage1 image whose tree is no longer in the store under `data_dir`.
pub fn stale_reason(entry: &Entry, data_dir: &Path) -> Option<&'static str> {
    let Some(info) = &entry.info else {
        return Some("it is unreadable");
    };
    if info.key.format != CACHE_FORMAT {
        return Some("another cache format made it");
    }
    let tree = &info.key.stage1_tree;
    let plain = !tree.is_empty() && !tree.contains('/') && !tree.starts_with('.');
    if !plain || !data_dir.join("cas/tree").join(tree).is_dir() {
        return Some("its stage1 image is no longer in the store");
    }
    None
}

/// `rkt gc`'s part: removes stale snapshots, one line each.
pub fn remove_stale(data_dir: &Path) -> Result<(), RktError> {
    let cache = Cache::new(data_dir);
    cache
        .remove_where(|entry| match stale_reason(entry, data_dir) {
            Some(reason) => {
                eprintln!("rkt: removing warm-start snapshot {} ({reason})", entry.id);
                true
            }
            None => false,
        })
        .map(|_| ())
        .map_err(|e| RktError::Message(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_cache::{Key, ShareShape};

    fn key(tree: &str) -> Key {
        Key {
            format: CACHE_FORMAT,
            stage1_tree: tree.into(),
            cmdline: "rkt.warm=1".into(),
            mem_mib: 128,
            vcpus: 1,
            rng: true,
            shares: vec![ShareShape {
                tag: "pod".into(),
                read_only: false,
            }],
            vsock_cid: 3,
            nics: 0,
        }
    }

    #[test]
    fn gc_removes_entries_whose_stage1_left_the_store() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("cas/tree/deps-sha512-kept")).unwrap();
        let cache = Cache::new(data.path());
        for tree in [
            "deps-sha512-kept",
            "deps-sha512-gone",
            "../cas/tree/deps-sha512-kept",
        ] {
            cache.make(&key(tree), |_| Ok(())).unwrap();
        }
        remove_stale(data.path()).unwrap();
        let left: Vec<String> = cache
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.info.unwrap().key.stage1_tree)
            .collect();
        assert_eq!(left, ["deps-sha512-kept"]);
    }
}
