//! The kvm stage1's cache of warm-start snapshots (docs/stage1-kvm.md, "Warm start"), shared
//! by the stage1 (which makes and uses entries) and `rkt` (`rkt snapshot list|clear`, `rkt gc`).
//!
//! Layout under the rkt data directory, `$dir/stage1-kvm/snapshots/`:
//!
//! - `<id>/`: one complete entry (`id` = [`Key::id`]): `info.json` (the key and sizes) plus
//!   whatever the stage1's builder put there (the VMM's `state` and `memory`, the kernel and
//!   initramfs it booted). An entry directory only ever appears whole: it is built in
//!   `.build-<id>-<pid>/` and renamed into place, and is never changed afterwards, only
//!   removed (renamed to `.trash-...` first, then deleted).
//! - `.<id>.lock`: held while the entry is made or removed, so two pods of one shape never
//!   both build it and a removal never races a build.
//!
//! Users of an entry take no lock: they open the entry directory once and read everything
//! through that descriptor (`/proc/self/fd/N/...`), so they never mix files of two entries; a
//! removal while they open files is a clean failure (which the stage1 answers with a cold
//! boot), and files they have open stay readable.

mod key;
mod lock;

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use key::{is_id, Key, ShareShape, CACHE_FORMAT};
pub use lock::EntryLock;

/// The cache directory, relative to the rkt data directory.
pub const CACHE_DIR: &str = "stage1-kvm/snapshots";
/// Every entry's description.
pub const INFO_FILE: &str = "info.json";

const BUILD_PREFIX: &str = ".build-";
const TRASH_PREFIX: &str = ".trash-";

/// A cache operation that failed; each message names the path.
#[derive(Debug, Error)]
pub enum CacheError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("making the snapshot failed: {0}")]
    Build(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `info.json`: what an entry is, for `rkt snapshot list` and gc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub key: Key,
    /// Seconds since the epoch.
    pub created: u64,
    /// Bytes the entry takes on disk (sparse files counted by their blocks).
    pub disk_bytes: u64,
}

/// One entry found by [`Cache::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub dir: PathBuf,
    /// None when `info.json` is missing or unreadable (such an entry is never used).
    pub info: Option<Info>,
}

/// An entry opened for use: `dir` names the directory that was opened, whatever is renamed
/// in the cache meanwhile.
pub struct OpenEntry {
    handle: File,
    /// `/proc/self/fd/N`: the entry's directory as opened.
    pub dir: PathBuf,
    pub id: String,
}

/// What [`Cache::make`] did.
pub enum Made {
    /// This call built the entry.
    Built,
    /// Another pod had built it meanwhile.
    Found,
}

/// The cache under one rkt data directory.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache of the rkt data directory `data_dir` (nothing is created yet).
    pub fn new(data_dir: &Path) -> Cache {
        Cache {
            root: data_dir.join(CACHE_DIR),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock_path(&self, id: &str) -> PathBuf {
        self.root.join(format!(".{id}.lock"))
    }

    /// Opens the complete entry for `key`, if there is one.
    pub fn open(&self, key: &Key) -> Option<OpenEntry> {
        let id = key.id();
        let dir = self.root.join(&id);
        let handle = File::open(&dir).ok()?;
        if !handle.metadata().ok()?.is_dir() {
            return None;
        }
        let proc_dir = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        let info = read_info(&proc_dir.join(INFO_FILE))?;
        (info.key == *key).then_some(OpenEntry {
            handle,
            dir: proc_dir,
            id,
        })
    }

    /// Makes the entry for `key` unless it exists: waits for the entry's lock, clears what an
    /// interrupted build left, lets `build` fill a fresh temporary directory, writes
    /// `info.json` and renames the directory into place. On any error nothing is left behind.
    pub fn make<F>(&self, key: &Key, build: F) -> Result<Made, CacheError>
    where
        F: FnOnce(&Path) -> Result<(), String>,
    {
        fs::create_dir_all(&self.root).map_err(io_error(&self.root))?;
        let id = key.id();
        let lock_path = self.lock_path(&id);
        let _lock = EntryLock::wait(&lock_path).map_err(io_error(&lock_path))?;
        if self.open(key).is_some() {
            return Ok(Made::Found);
        }
        self.remove_leftovers(&id);
        let building = self
            .root
            .join(format!("{BUILD_PREFIX}{id}-{}", std::process::id()));
        let result = (|| {
            fs::create_dir(&building).map_err(io_error(&building))?;
            build(&building).map_err(CacheError::Build)?;
            let info = Info {
                key: key.clone(),
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                disk_bytes: disk_usage(&building),
            };
            let info_path = building.join(INFO_FILE);
            let json = serde_json::to_vec_pretty(&info).map_err(|e| CacheError::Io {
                path: info_path.clone(),
                source: io::Error::other(e),
            })?;
            fs::write(&info_path, json).map_err(io_error(&info_path))?;
            let entry = self.root.join(&id);
            // A broken entry (no readable info.json) may sit there: out of the way first.
            self.discard(&entry);
            fs::rename(&building, &entry).map_err(io_error(&entry))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&building);
        }
        result.map(|()| Made::Built)
    }

    /// Removes the entry `opened` came from if it is still the one in place (a newer entry
    /// made meanwhile is kept): for an entry that failed to restore.
    pub fn remove_opened(&self, opened: &OpenEntry) -> Result<(), CacheError> {
        let lock_path = self.lock_path(&opened.id);
        let _lock = EntryLock::wait(&lock_path).map_err(io_error(&lock_path))?;
        let entry = self.root.join(&opened.id);
        let ours = opened.handle.metadata().map_err(io_error(&entry))?;
        match fs::metadata(&entry) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                self.discard(&entry);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Every entry directory, sorted by id.
    pub fn list(&self) -> Result<Vec<Entry>, CacheError> {
        let mut entries = Vec::new();
        let dir = match fs::read_dir(&self.root) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries),
            Err(e) => return Err(io_error(&self.root)(e)),
        };
        for item in dir.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if !is_id(&name) {
                continue;
            }
            let path = item.path();
            entries.push(Entry {
                info: read_info(&path.join(INFO_FILE)),
                id: name,
                dir: path,
            });
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(entries)
    }

    /// Removes every entry for which `remove` says so (each under its lock; an entry being
    /// built or removed by someone else is skipped), and what interrupted builds left.
    /// Returns the ids removed.
    pub fn remove_where(&self, remove: impl Fn(&Entry) -> bool) -> Result<Vec<String>, CacheError> {
        let mut removed = Vec::new();
        for entry in self.list()? {
            if !remove(&entry) {
                continue;
            }
            let lock_path = self.lock_path(&entry.id);
            let Some(lock) = EntryLock::try_take(&lock_path).map_err(io_error(&lock_path))? else {
                continue;
            };
            self.discard(&entry.dir);
            lock.remove_file();
            removed.push(entry.id);
        }
        self.remove_unlocked_leftovers();
        Ok(removed)
    }

    /// Renames `entry` aside, then deletes it (users keep the files they have open).
    fn discard(&self, entry: &Path) {
        let Some(name) = entry.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let trash = self
            .root
            .join(format!("{TRASH_PREFIX}{name}-{}", std::process::id()));
        if fs::rename(entry, &trash).is_ok() {
            let _ = fs::remove_dir_all(&trash);
        }
    }

    /// Build and trash directories of `id` (its lock is held by the caller).
    fn remove_leftovers(&self, id: &str) {
        for item in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let of_id = [BUILD_PREFIX, TRASH_PREFIX].iter().any(|prefix| {
                name.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(id))
            });
            if of_id {
                let _ = fs::remove_dir_all(item.path());
            }
        }
    }

    /// Leftovers of every id whose lock nobody holds.
    fn remove_unlocked_leftovers(&self) {
        for item in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(BUILD_PREFIX)
                .or_else(|| name.strip_prefix(TRASH_PREFIX))
            else {
                continue;
            };
            let Some(id) = rest.get(..32).filter(|id| is_id(id)) else {
                continue;
            };
            if let Ok(Some(_lock)) = EntryLock::try_take(&self.lock_path(id)) {
                let _ = fs::remove_dir_all(item.path());
            }
        }
    }
}

fn read_info(path: &Path) -> Option<Info> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Bytes of disk the files directly in `dir` take (512-byte blocks: sparse holes are free).
fn disk_usage(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|item| item.metadata().ok())
        .map(|meta| meta.blocks() * 512)
        .sum()
}

#[cfg(test)]
mod tests;
