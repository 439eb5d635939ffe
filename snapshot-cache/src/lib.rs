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
//! Modes: the cache directory (and `$dir/stage1-kvm` above it) are 0700, every entry
//! directory 0700 and every file in one 0600, root's alone: a snapshot's memory holds a
//! booted guest (its kernel's randomness included), and another host user must neither read
//! nor change it. Looser directories made by older versions are tightened on use.
//!
//! Integrity: `info.json` records, for every other file of the entry, its size, inode, mtime
//! and ctime. [`Cache::open_checked`] refuses an entry whose files do not match (one added,
//! missing, replaced, written, chmod-ed, or readable by others); the stage1 then boots cold
//! and removes it, as for a snapshot the VMM refuses. Metadata is enough: any write through
//! the file system, `utimes` included, sets a file's ctime to the current time, which no call
//! can set back, and only root can reach the files (Modes). The contents are not hashed: up to
//! 2026-12-07 the files up to 16 MiB (the VMM's `state`, the kernel, the initramfs) were, on
//! every warm start, which cost about 90 ms of each one in the emulated test host (most of
//! looking the entry up) and caught nothing the times did not; the memory file never was
//! (docs/stage1-kvm.md). The VMM trusts the same stamps for the kernel and initramfs it
//! identifies (vmm/src/snapshot/identity.rs).
//!
//! Users of an entry take no lock: they open the entry directory once and read everything
//! through that descriptor (`/proc/self/fd/N/...`), so they never mix files of two entries; a
//! removal while they open files is a clean failure (which the stage1 answers with a cold
//! boot), and files they have open stay readable.

mod key;
mod lock;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
/// Modes of the cache's directories and files: root's alone.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// More than one tick of the kernel's coarse clock for file times (1/HZ, HZ >= 100).
const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(20);
/// `info.json` larger than this is not ours.
const INFO_CAP: u64 = 1 << 20;

const BUILD_PREFIX: &str = ".build-";
const TRASH_PREFIX: &str = ".trash-";

/// A cache operation that failed; each message names the path.
#[derive(Debug, Error)]
pub enum CacheError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("making the snapshot failed: {0}")]
    Build(String),
    /// The entry's files are not what was recorded when it was made.
    #[error("snapshot {id} refused: {why}")]
    Refused { id: String, why: String },
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
    /// What each of the entry's other files was when the entry was made (sorted by name).
    /// Absent in entries of cache format 1, which are never used (their keys differ).
    #[serde(default)]
    pub files: Vec<FileRecord>,
}

/// What identifies one file of an entry (see the crate's "Integrity").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub size: u64,
    pub inode: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
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

    /// Opens the complete entry for `key`, if there is one whose files are as recorded
    /// (a refused entry reads as none: see [`Cache::open_checked`] for why).
    pub fn open(&self, key: &Key) -> Option<OpenEntry> {
        self.open_checked(key).ok().flatten()
    }

    /// Opens the entry for `key`: `Ok(None)` if there is none (or it is another key's or
    /// unreadable, as before), `Err(Refused)` if its files changed since it was made (see
    /// the crate's "Integrity"); the caller boots cold and removes it
    /// ([`Cache::remove_refused`]).
    pub fn open_checked(&self, key: &Key) -> Result<Option<OpenEntry>, CacheError> {
        self.tighten_dirs();
        let id = key.id();
        let dir = self.root.join(&id);
        let Ok(handle) = open_dir_nofollow(&dir) else {
            return Ok(None);
        };
        let Ok(meta) = handle.metadata() else {
            return Ok(None);
        };
        if !meta.is_dir() {
            return Ok(None);
        }
        let proc_dir = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        let Some(info) = read_info(&proc_dir.join(INFO_FILE)) else {
            return Ok(None);
        };
        if info.key != *key {
            return Ok(None);
        }
        let refused = |why: String| CacheError::Refused {
            id: id.clone(),
            why,
        };
        if meta.mode() & 0o077 != 0 {
            return Err(refused(format!(
                "its directory is open to other users (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
        verify_files(&proc_dir, &info.files).map_err(refused)?;
        Ok(Some(OpenEntry {
            handle,
            dir: proc_dir,
            id,
        }))
    }

    /// Removes the entry for `key` if it is (still) refused by [`Cache::open_checked`], under
    /// its lock; an entry made meanwhile that checks out is kept.
    pub fn remove_refused(&self, key: &Key) -> Result<(), CacheError> {
        let id = key.id();
        let lock_path = self.lock_path(&id);
        let _lock = EntryLock::wait(&lock_path).map_err(io_error(&lock_path))?;
        if let Err(CacheError::Refused { .. }) = self.open_checked(key) {
            self.discard(&self.root.join(&id));
        }
        Ok(())
    }

    /// `$dir/stage1-kvm` and the cache directory: 0700 (see the crate's "Modes"), tightened
    /// if an older version made them looser. Best effort: a directory we cannot fix is
    /// another user's, and then nothing of ours works there anyway.
    fn tighten_dirs(&self) {
        for dir in [self.root.parent(), Some(self.root.as_path())]
            .into_iter()
            .flatten()
        {
            if let Ok(handle) = open_dir_nofollow(dir) {
                let _ = set_mode(&handle, DIR_MODE, true);
            }
        }
    }

    /// Makes the entry for `key` unless it exists: waits for the entry's lock, clears what an
    /// interrupted build left, lets `build` fill a fresh temporary directory, writes
    /// `info.json` and renames the directory into place. On any error nothing is left behind.
    pub fn make<F>(&self, key: &Key, build: F) -> Result<Made, CacheError>
    where
        F: FnOnce(&Path) -> Result<(), String>,
    {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.root)
            .map_err(io_error(&self.root))?;
        self.tighten_dirs();
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
            DirBuilder::new()
                .mode(DIR_MODE)
                .create(&building)
                .map_err(io_error(&building))?;
            build(&building).map_err(CacheError::Build)?;
            // Modes first (a chmod changes the ctime recorded next).
            let files = seal_files(&building)?;
            // File times come from a clock that ticks every few milliseconds (1/HZ): a write
            // in the same tick as the sealing would leave mtime and ctime as recorded. Wait
            // out that tick before the entry can be used, so any later change shows.
            std::thread::sleep(CLOCK_TICK);
            let info = Info {
                key: key.clone(),
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                disk_bytes: disk_usage(&building),
                files,
            };
            let info_path = building.join(INFO_FILE);
            let json = serde_json::to_vec_pretty(&info).map_err(|e| CacheError::Io {
                path: info_path.clone(),
                source: io::Error::other(e),
            })?;
            write_private(&info_path, &json).map_err(io_error(&info_path))?;
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
        match fs::symlink_metadata(&entry) {
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
    let file = open_file_nofollow(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > INFO_CAP {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(INFO_CAP).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Opens directory `path` without following a link at its last component.
fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `path` for reading without following a link at its last component and without
/// blocking on a FIFO (whatever it is, the caller checks it is a regular file).
fn open_file_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
}

/// Writes a new file readable and writable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Sets `file`'s permission bits to `mode` (with `only_tighten`, only takes bits away);
/// through the descriptor (fchmod), and only when they differ.
fn set_mode(file: &File, mode: u32, only_tighten: bool) -> io::Result<()> {
    let meta = file.metadata()?;
    let current = meta.mode() & 0o7777;
    let wanted = if only_tighten { current & mode } else { mode };
    if current != wanted && meta.uid() == current_uid() {
        file.set_permissions(fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn nanos(seconds: i64, nanoseconds: i64) -> i64 {
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(nanoseconds)
}

/// What identifies `file` now (`name` is its name in the entry).
fn record_of(name: &str, file: &File) -> io::Result<FileRecord> {
    let meta = file.metadata()?;
    Ok(FileRecord {
        name: name.to_string(),
        size: meta.len(),
        inode: meta.ino(),
        mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
    })
}

/// The regular files directly in `dir` other than `info.json`, by name; anything else there
/// (a directory, a link, a FIFO) is an error: an entry holds plain files only.
fn entry_files(dir: &Path) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let listing = fs::read_dir(dir).map_err(|e| format!("listing it: {e}"))?;
    for item in listing {
        let item = item.map_err(|e| format!("listing it: {e}"))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name == INFO_FILE {
            continue;
        }
        match item.file_type() {
            Ok(kind) if kind.is_file() => names.push(name),
            _ => return Err(format!("{name} is not a regular file")),
        }
    }
    names.sort();
    Ok(names)
}

/// After the build: every file 0600 and the directory 0700, then the record of each file.
/// A file already 0600 is left alone (its ctime unchanged): the stage1 sets the kernel's and
/// initramfs's modes before the VMM stamps them, so restores can trust those stamps.
fn seal_files(dir: &Path) -> Result<Vec<FileRecord>, CacheError> {
    let handle = open_dir_nofollow(dir).map_err(io_error(dir))?;
    set_mode(&handle, DIR_MODE, false).map_err(io_error(dir))?;
    let names = entry_files(dir).map_err(CacheError::Build)?;
    let mut records = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let file = open_file_nofollow(&path).map_err(io_error(&path))?;
        set_mode(&file, FILE_MODE, false).map_err(io_error(&path))?;
        records.push(record_of(&name, &file).map_err(io_error(&path))?);
    }
    Ok(records)
}

/// Whether the files in `dir` (an opened entry) are exactly those `recorded`, unchanged;
/// `Err` says what differs.
fn verify_files(dir: &Path, recorded: &[FileRecord]) -> Result<(), String> {
    let present = entry_files(dir)?;
    let expected: Vec<&str> = recorded.iter().map(|r| r.name.as_str()).collect();
    if present != expected {
        return Err(format!(
            "it holds {present:?} where {expected:?} were recorded"
        ));
    }
    for record in recorded {
        let file = open_file_nofollow(&dir.join(&record.name))
            .map_err(|e| format!("{}: {e}", record.name))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", record.name))?;
        if !meta.is_file() {
            return Err(format!("{} is no longer a regular file", record.name));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{} is open to other users (mode {:o})",
                record.name,
                meta.mode() & 0o7777
            ));
        }
        let now = FileRecord {
            name: record.name.clone(),
            size: meta.len(),
            inode: meta.ino(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
        };
        let same_metadata = now.size == record.size
            && now.inode == record.inode
            && now.mtime_ns == record.mtime_ns
            && now.ctime_ns == record.ctime_ns;
        if !same_metadata {
            return Err(format!(
                "{} changed since the snapshot was made (size, inode or times differ)",
                record.name
            ));
        }
    }
    Ok(())
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
