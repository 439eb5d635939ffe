//! Safe extraction of untrusted tar archives (ACIs, Docker/OCI layers).
//!
//! The archive is hostile until proven otherwise, so extraction never follows
//! a symlink, never writes outside the target, and stops at the first entry it
//! refuses, naming it:
//! - paths with `..`, absolute paths, over-long paths or components;
//! - an entry that appears twice;
//! - an entry whose parent directory is a symlink (planted by an earlier
//!   entry or layer): writing through it could land anywhere on the host;
//! - relative symlinks that climb above the archive root, and hard links to
//!   anything but a regular file this same archive created earlier (never a
//!   symlink, a directory, an earlier layer's file or a path outside the
//!   tree). Absolute symlinks are kept: they resolve inside the container's
//!   root, and nothing here follows them;
//! - device nodes, unless the caller trusts the image and runs as root
//!   (ACIs), or skips them (Docker/OCI layers: `DevicePolicy::Skip`, counted
//!   in the summary for one warning, as containerd does for unprivileged
//!   pulls; the guest's `/dev` is its own devtmpfs, so a layer's copies of
//!   `/dev/null` and friends are never what an app opens anyway). FIFOs are
//!   created either way, as Docker does: `mkfifo` needs no privilege and
//!   grants none. A tar cannot hold a socket (GNU tar skips them when
//!   archiving), so there is none to skip;
//! - sparse and unknown entry types;
//! - more decompressed bytes than the configured limit (decompression bombs).
//!
//! setuid/setgid bits are dropped unless the caller trusts the image, and so
//! are file capabilities (`security.capability`, which grant privilege the
//! same way). Other extended attributes from PAX `SCHILY.xattr.*` records are
//! restored when in the `user.` namespace; `trusted.`, `security.` and
//! `system.` ones are host policy, not image content, and are skipped.
//!
//! Hard links stay hard links, so a small archive of one big file and
//! thousands of links to it takes the space of one file, not thousands.
//!
//! The bookkeeping is hash sets keyed by path (and an ordered set where a
//! whole subtree must be forgotten at once), so applying a layer costs time
//! linear in its entries however many earlier files it replaces.
//!
//! `extract_new` adds atomicity: it unpacks into a temporary sibling directory
//! and renames it into place only on success, so a failure leaves nothing.

pub mod decompress;

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use thiserror::Error;

use decompress::{size_limit_of, LimitedReader};

/// Longest path Linux accepts (PATH_MAX less the terminating NUL).
const MAX_PATH_BYTES: usize = 4095;
/// Longest single file name Linux filesystems accept.
const MAX_NAME_BYTES: usize = 255;
/// Default decompressed-size limit: generous for real images, fatal for bombs.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Docker/OCI whiteout markers (layer diffs only).
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Extract only entries under this archive directory, with the prefix
    /// removed (an ACI's `rootfs`). Entries elsewhere are skipped but still
    /// checked for duplicates.
    pub subtree: Option<PathBuf>,
    /// Most decompressed bytes to read before giving up.
    pub max_bytes: u64,
    /// What to do with character and block device entries.
    pub devices: DevicePolicy,
    /// Keep setuid/setgid bits (trusted image).
    pub keep_setid_bits: bool,
    /// Apply the archive's uid/gid to what it creates (only works as root).
    pub set_owners: bool,
    /// The target may already hold earlier layers: entries replace what is
    /// there instead of being refused as conflicts.
    pub overlay: bool,
    /// Interpret `.wh.` whiteout files (Docker/OCI layers).
    pub whiteouts: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            subtree: None,
            max_bytes: DEFAULT_MAX_BYTES,
            devices: DevicePolicy::Refuse,
            keep_setid_bits: false,
            set_owners: false,
            overlay: false,
            whiteouts: false,
        }
    }
}

/// What extraction does with a device node entry (`c` or `b` in tar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePolicy {
    /// Refuse the archive, naming the entry: an untrusted ACI.
    Refuse,
    /// Leave it out and count it (`ExtractSummary::skipped_devices`): a
    /// Docker/OCI layer, applied as an unprivileged pull applies it.
    Skip,
    /// `mknod` it: a signature-verified ACI extracted as root.
    Create,
}

/// Device nodes an extraction left out, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SkippedDevices {
    pub character: u64,
    pub block: u64,
}

impl SkippedDevices {
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    pub fn total(&self) -> u64 {
        self.character + self.block
    }

    pub fn add(&mut self, other: SkippedDevices) {
        self.character += other.character;
        self.block += other.block;
    }

    /// The one warning for an image whose layers held device nodes: how
    /// many, which kinds, and why that is fine (callers print it as
    /// `rkt: warning: ...`).
    pub fn warning(&self, image: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut kinds = Vec::new();
        if self.character > 0 {
            kinds.push(format!("{} character", self.character));
        }
        if self.block > 0 {
            kinds.push(format!("{} block", self.block));
        }
        let total = self.total();
        Some(format!(
            "{image}: skipped {total} device node{} in its layers ({}); image layers \
             may not create devices, as in an unprivileged pull, and the pod's /dev has its own",
            if total == 1 { "" } else { "s" },
            kinds.join(", ")
        ))
    }
}

#[derive(Debug, Error)]
pub enum ExtractError {
    #[error("archive entry {entry:?}: {problem}")]
    Entry { entry: String, problem: String },
    #[error(
        "the archive expands past the {} MiB limit; if the image really is that big, \
         raise it with --max-image-size", .limit / (1024 * 1024)
    )]
    TooLarge { limit: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// What an extraction did, for callers that report or test it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractSummary {
    pub entries: u64,
    pub file_bytes: u64,
    /// Files whose setuid/setgid bits (or file capabilities) were dropped.
    pub setid_bits_stripped: u64,
    /// Extended attributes restored.
    pub xattrs_restored: u64,
    /// Device nodes left out (`DevicePolicy::Skip`).
    pub skipped_devices: SkippedDevices,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ExtractError {
    let context = context.into();
    move |source| match size_limit_of(&source) {
        Some(limit) => ExtractError::TooLarge { limit },
        None => ExtractError::Io { context, source },
    }
}

/// Extracts `archive` (an uncompressed tar stream; see `decompress`) into a
/// new directory `target`, atomically: on failure nothing is left behind.
pub fn extract_new(
    archive: impl Read,
    target: &Path,
    options: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(parent)
        .map_err(io_error(format!(
            "creating a temporary directory in {}",
            parent.display()
        )))?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
        .map_err(io_error("setting the staging directory's mode"))?;
    let summary = extract_into(archive, staging.path(), options)?;
    let staged = staging.keep();
    fs::rename(&staged, target).map_err(|source| {
        let _ = fs::remove_dir_all(&staged);
        ExtractError::Io {
            context: format!("moving the extracted tree to {}", target.display()),
            source,
        }
    })?;
    Ok(summary)
}

/// Extracts `archive` into the existing directory `dest`.
pub fn extract_into(
    archive: impl Read,
    dest: &Path,
    options: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    let mut extractor = Extractor {
        dest,
        options,
        seen: HashSet::new(),
        written: HashSet::new(),
        holds_written: HashSet::new(),
        verified_dirs: BTreeSet::new(),
        dir_fixups: Vec::new(),
        summary: ExtractSummary::default(),
        declared_bytes: 0,
    };
    let mut tar = tar::Archive::new(LimitedReader::new(archive, options.max_bytes));
    let entries = tar.entries().map_err(io_error("reading the archive"))?;
    for entry in entries {
        let entry = entry.map_err(io_error("reading the archive"))?;
        extractor.entry(entry)?;
    }
    extractor.finish_directories()?;
    Ok(extractor.summary)
}

/// A directory whose final mode, owner and mtime are applied after all
/// entries, so a read-only directory does not block writing its children.
struct DirFixup {
    rel: PathBuf,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: u64,
}

struct Extractor<'a> {
    dest: &'a Path,
    options: &'a ExtractOptions,
    /// Every normalized archive path so far, for duplicate detection.
    seen: HashSet<PathBuf>,
    /// Paths (relative to `dest`) this archive created; opaque whiteouts keep these.
    written: HashSet<PathBuf>,
    /// Every strict ancestor of a path in `written`, so "did this archive
    /// write anything at or below P" is two lookups instead of a scan.
    holds_written: HashSet<PathBuf>,
    /// Directories under `dest` known to be real directories (not symlinks).
    /// Ordered, so the directories below a replaced one are a contiguous
    /// range to forget (see `forget_verified_below`).
    verified_dirs: BTreeSet<PathBuf>,
    dir_fixups: Vec<DirFixup>,
    summary: ExtractSummary,
    declared_bytes: u64,
}

/// Why an entry is refused; turned into `ExtractError::Entry` with its name.
type Refusal = String;

impl Extractor<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |problem: Refusal| ExtractError::Entry {
            entry: name.clone(),
            problem,
        };
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        let raw_path = entry.path().map_err(|err| refuse(err.to_string()))?;
        let Some(normalized) = normalize(&raw_path).map_err(&refuse)? else {
            // "./" or "": the archive root itself.
            if kind.is_dir() && self.options.subtree.is_none() {
                self.record_dir_fixup(PathBuf::new(), entry.header())
                    .map_err(&refuse)?;
            }
            return Ok(());
        };
        if !self.seen.insert(normalized.clone()) {
            return Err(refuse(
                "appears twice in the archive; an image may hold each path once".to_string(),
            ));
        }
        let rel = match &self.options.subtree {
            None => normalized,
            Some(subtree) => match normalized.strip_prefix(subtree) {
                Ok(rel) => rel.to_path_buf(),
                Err(_) => return Ok(()),
            },
        };
        self.summary.entries += 1;
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                self.record_dir_fixup(rel, entry.header())
                    .map_err(&refuse)?;
                return Ok(());
            }
            return Err(refuse(
                "the extracted tree's root must be a directory".to_string(),
            ));
        }

        self.ensure_parents(&rel, true).map_err(&refuse)?;

        if self.options.whiteouts {
            if let Some(file_name) = rel.file_name().and_then(|n| n.to_str()) {
                if file_name.starts_with(WHITEOUT_PREFIX) {
                    return self.whiteout(&rel, file_name).map_err(&refuse);
                }
            }
        }

        let target = self.dest.join(&rel);
        self.make_room(&rel, &target, kind.is_dir())
            .map_err(&refuse)?;
        let header = entry.header().clone();
        let xattrs = self.xattrs_to_restore(&mut entry).map_err(&refuse)?;
        let mode = self.entry_mode(&header).map_err(&refuse)?;
        let owner = self.owner(&header).map_err(&refuse)?;

        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                self.declared_bytes = self.declared_bytes.saturating_add(size);
                if self.declared_bytes > self.options.max_bytes {
                    return Err(ExtractError::TooLarge {
                        limit: self.options.max_bytes,
                    });
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|err| refuse(format!("cannot create it: {err}")))?;
                let copied = io::copy(&mut entry, &mut file)
                    .map_err(io_error(format!("writing {}", target.display())))?;
                self.summary.file_bytes += copied;
                // chown before chmod: chown clears setuid/setgid bits.
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                        .map_err(|err| refuse(format!("cannot set its owner: {err}")))?;
                }
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|err| refuse(format!("cannot set its mode: {err}")))?;
                file.set_modified(mtime_of(&header))
                    .map_err(|err| refuse(format!("cannot set its mtime: {err}")))?;
                self.restore_xattrs(&target, &xattrs).map_err(&refuse)?;
            }
            tar::EntryType::Directory => {
                if !target.is_dir() {
                    DirBuilder::new()
                        .mode(0o700)
                        .create(&target)
                        .map_err(|err| refuse(format!("cannot create it: {err}")))?;
                }
                self.verified_dirs.insert(rel.clone());
                self.record_dir_fixup(rel.clone(), &header)
                    .map_err(&refuse)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|err| refuse(err.to_string()))?
                    .ok_or_else(|| refuse("is a symlink without a target".to_string()))?;
                check_symlink_stays_inside(&rel, &link).map_err(&refuse)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|err| refuse(format!("cannot create the symlink: {err}")))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                        .map_err(|err| refuse(format!("cannot set its owner: {err}")))?;
                }
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|err| refuse(err.to_string()))?
                    .ok_or_else(|| refuse("is a hard link without a target".to_string()))?;
                let source = self.hard_link_source(&link).map_err(&refuse)?;
                fs::hard_link(&source, &target)
                    .map_err(|err| refuse(format!("cannot create the hard link: {err}")))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                match self.options.devices {
                    DevicePolicy::Refuse => {
                        return Err(refuse(
                            "is a device node; device nodes are kept only for a trusted image \
                             extracted as root"
                                .to_string(),
                        ))
                    }
                    DevicePolicy::Skip => {
                        let skipped = &mut self.summary.skipped_devices;
                        if kind == tar::EntryType::Char {
                            skipped.character += 1;
                        } else {
                            skipped.block += 1;
                        }
                        // Whatever a lower layer had there is gone (as
                        // Docker removes it before creating the entry), and
                        // nothing is recorded as written: a hard link to it
                        // is refused like one to any missing file.
                        return Ok(());
                    }
                    DevicePolicy::Create => {}
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let file_type = if kind == tar::EntryType::Char {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    &target,
                    file_type,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                )
                .map_err(|err| refuse(format!("cannot create the device node: {err}")))?;
                self.set_owner_nofollow(&target, owner).map_err(&refuse)?;
            }
            tar::EntryType::Fifo => {
                nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(|err| refuse(format!("cannot create the fifo: {err}")))?;
                self.set_owner_nofollow(&target, owner).map_err(&refuse)?;
            }
            tar::EntryType::GNUSparse => {
                return Err(refuse(
                    "is a sparse file, which is not supported".to_string(),
                ))
            }
            other => {
                return Err(refuse(format!(
                    "has entry type {other:?}, which is not supported"
                )))
            }
        }
        self.mark_written(rel);
        Ok(())
    }

    /// Records that this archive created `rel`, and that each of its
    /// ancestors now holds something this archive wrote. Stops at the first
    /// ancestor already recorded (its own ancestors are too), so the cost is
    /// linear in the number of entries overall.
    fn mark_written(&mut self, rel: PathBuf) {
        for ancestor in rel.ancestors().skip(1) {
            // Looked up before inserting: most entries' parents are already
            // recorded, and then nothing is allocated.
            if ancestor.as_os_str().is_empty() || self.holds_written.contains(ancestor) {
                break;
            }
            self.holds_written.insert(ancestor.to_path_buf());
        }
        self.written.insert(rel);
    }

    /// Whether this archive created `rel` or anything below it.
    fn wrote_at_or_below(&self, rel: &Path) -> bool {
        self.written.contains(rel) || self.holds_written.contains(rel)
    }

    /// Forgets that `rel` and the directories below it were verified (they
    /// were just removed or replaced). Paths order component by component,
    /// so everything below `rel` sorts right after it: this visits only the
    /// entries it removes.
    fn forget_verified_below(&mut self, rel: &Path) {
        let below: Vec<PathBuf> = self
            .verified_dirs
            .range::<Path, _>((std::ops::Bound::Included(rel), std::ops::Bound::Unbounded))
            .take_while(|dir| dir.starts_with(rel))
            .cloned()
            .collect();
        for dir in below {
            self.verified_dirs.remove(&dir);
        }
    }

    /// Walks the parent directories of `rel`: each must be a real directory,
    /// never a symlink. Missing ones are created (0755) when `create` is set.
    fn ensure_parents(&mut self, rel: &Path, create: bool) -> Result<(), Refusal> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            if self.verified_dirs.contains(&prefix) {
                continue;
            }
            let full = self.dest.join(&prefix);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(format!(
                        "its parent {:?} is a symlink; writing through it could escape the target",
                        prefix.display().to_string()
                    ))
                }
                Ok(meta) if !meta.is_dir() => {
                    return Err(format!(
                        "its parent {:?} is not a directory",
                        prefix.display().to_string()
                    ))
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound && create => {
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&full)
                        .map_err(|err| format!("cannot create its parent directory: {err}"))?;
                    self.mark_written(prefix.clone());
                }
                Err(err) => {
                    return Err(format!(
                        "cannot inspect its parent {:?}: {err}",
                        prefix.display().to_string()
                    ))
                }
            }
            self.verified_dirs.insert(prefix.clone());
        }
        Ok(())
    }

    /// Clears the way for a new entry at `target`. A directory may be entered
    /// again (its children merge); anything else already there is either a
    /// conflict (single archive) or an earlier layer's file to replace.
    fn make_room(&mut self, rel: &Path, target: &Path, is_dir: bool) -> Result<(), Refusal> {
        let existing = match fs::symlink_metadata(target) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(format!("cannot inspect what is already there: {err}")),
        };
        if is_dir && existing.is_dir() {
            return Ok(());
        }
        if !self.options.overlay || self.wrote_at_or_below(rel) {
            return Err("conflicts with an earlier entry at the same path".to_string());
        }
        remove_path(target)
            .map_err(|err| format!("cannot replace the earlier layer's copy: {err}"))?;
        if existing.is_dir() {
            self.forget_verified_below(rel);
        }
        Ok(())
    }

    /// Applies a whiteout entry: `.wh..wh..opq` empties its directory of
    /// earlier layers' content, `.wh.NAME` deletes NAME.
    fn whiteout(&mut self, rel: &Path, file_name: &str) -> Result<(), Refusal> {
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = self.dest.join(&parent_rel);
        if file_name == OPAQUE_WHITEOUT {
            let children = match fs::read_dir(&parent) {
                Ok(children) => children,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(err) => return Err(format!("cannot read its directory: {err}")),
            };
            for child in children {
                let child = child.map_err(|err| format!("cannot read its directory: {err}"))?;
                let child_rel = parent_rel.join(child.file_name());
                if !self.written.contains(&child_rel) {
                    remove_path(&child.path())
                        .map_err(|err| format!("cannot clear {}: {err}", child_rel.display()))?;
                    self.forget_verified_below(&child_rel);
                }
            }
            return Ok(());
        }
        let victim_name = &file_name[WHITEOUT_PREFIX.len()..];
        if victim_name.is_empty() || victim_name == "." || victim_name == ".." {
            return Err("is a whiteout with no file name".to_string());
        }
        let victim_rel = parent_rel.join(victim_name);
        remove_path(&self.dest.join(&victim_rel))
            .map_err(|err| format!("cannot delete {}: {err}", victim_rel.display()))?;
        self.forget_verified_below(&victim_rel);
        Ok(())
    }

    /// Resolves a hard link's target: a normalized archive path to a regular
    /// file this archive created earlier, reached without crossing a symlink.
    /// Only files this code made itself: an earlier layer's file might be
    /// anything the store's tree holds, and linking to it would let a layer
    /// reach past what it ships.
    fn hard_link_source(&mut self, link: &Path) -> Result<PathBuf, Refusal> {
        let normalized = normalize(link)
            .map_err(|problem| {
                format!(
                    "hard link target {:?}: {problem}",
                    link.display().to_string()
                )
            })?
            .ok_or_else(|| "hard link to the archive root".to_string())?;
        let rel = match &self.options.subtree {
            None => normalized,
            Some(subtree) => normalized
                .strip_prefix(subtree)
                .map(Path::to_path_buf)
                .map_err(|_| {
                    format!(
                        "hard link target {:?} is outside the extracted tree",
                        link.display().to_string()
                    )
                })?,
        };
        self.ensure_parents(&rel, false)?;
        if !self.written.contains(&rel) {
            return Err(format!(
                "hard link target {:?} does not exist earlier in the archive (a hard link \
                 may only point to a file the same archive holds)",
                link.display().to_string()
            ));
        }
        let source = self.dest.join(&rel);
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.file_type().is_file() => Ok(source),
            Ok(_) => Err(format!(
                "hard link target {:?} is not a regular file",
                link.display().to_string()
            )),
            Err(_) => Err(format!(
                "hard link target {:?} does not exist earlier in the archive",
                link.display().to_string()
            )),
        }
    }

    /// The PAX xattr records of an entry worth restoring (see the module
    /// comment for which).
    fn xattrs_to_restore<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Vec<(std::ffi::CString, Vec<u8>)>, Refusal> {
        let Some(extensions) = entry
            .pax_extensions()
            .map_err(|err| format!("has unreadable PAX records: {err}"))?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for extension in extensions {
            let extension = extension.map_err(|err| format!("has a bad PAX record: {err}"))?;
            let Ok(key) = extension.key() else { continue };
            let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            let keep = if name == "security.capability" {
                if !self.options.keep_setid_bits {
                    self.summary.setid_bits_stripped += 1;
                }
                self.options.keep_setid_bits
            } else {
                name.starts_with("user.")
            };
            if keep {
                let name = std::ffi::CString::new(name)
                    .map_err(|_| format!("has an xattr name with a NUL byte: {name:?}"))?;
                out.push((name, extension.value_bytes().to_vec()));
            }
        }
        Ok(out)
    }

    /// Sets extended attributes on a file or directory this archive just
    /// created (so `target` is not a symlink; `lsetxattr` would not follow
    /// one anyway). A filesystem without xattr support is not an error.
    fn restore_xattrs(
        &mut self,
        target: &Path,
        xattrs: &[(std::ffi::CString, Vec<u8>)],
    ) -> Result<(), Refusal> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let path = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| "has a NUL byte in its path".to_string())?;
        for (name, value) in xattrs {
            // SAFETY: `path` and `name` are NUL-terminated C strings and
            // `value` is a live buffer of `value.len()` bytes, all borrowed
            // for the duration of the call.
            let rc = unsafe {
                libc::lsetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::ENOTSUP) {
                    return Ok(());
                }
                return Err(format!("cannot set xattr {name:?}: {err}"));
            }
            self.summary.xattrs_restored += 1;
        }
        Ok(())
    }

    fn entry_mode(&mut self, header: &tar::Header) -> Result<u32, Refusal> {
        let mode = header.mode().map_err(|err| format!("bad mode: {err}"))? & 0o7777;
        if mode & 0o6000 != 0 && !self.options.keep_setid_bits {
            self.summary.setid_bits_stripped += 1;
            return Ok(mode & !0o6000);
        }
        Ok(mode)
    }

    fn owner(&self, header: &tar::Header) -> Result<Option<(u32, u32)>, Refusal> {
        if !self.options.set_owners {
            return Ok(None);
        }
        // A blank owner field means root, as GNU tar reads it.
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(uid), Ok(gid)) => Ok(Some((uid, gid))),
            _ => Err(format!("uid {uid} / gid {gid} do not fit in 32 bits")),
        }
    }

    fn set_owner_nofollow(&self, target: &Path, owner: Option<(u32, u32)>) -> Result<(), Refusal> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(target, Some(uid), Some(gid))
                .map_err(|err| format!("cannot set its owner: {err}"))?;
        }
        Ok(())
    }

    fn record_dir_fixup(&mut self, rel: PathBuf, header: &tar::Header) -> Result<(), Refusal> {
        let mode = self.entry_mode(header)?;
        let owner = self.owner(header)?;
        self.dir_fixups.push(DirFixup {
            rel,
            mode,
            owner,
            mtime: header.mtime().unwrap_or(0),
        });
        Ok(())
    }

    /// Applies directory modes, owners and mtimes, deepest first.
    fn finish_directories(&mut self) -> Result<(), ExtractError> {
        self.dir_fixups
            .sort_by_key(|fixup| std::cmp::Reverse(fixup.rel.components().count()));
        for fixup in &self.dir_fixups {
            let path = self.dest.join(&fixup.rel);
            let context = format!("finishing directory {}", path.display());
            // O_NOFOLLOW: a later layer may have replaced the directory.
            let dir = match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
                .open(&path)
            {
                Ok(dir) => dir,
                Err(err) if err.raw_os_error() == Some(libc::ELOOP) => continue,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) if err.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(err) => return Err(io_error(context)(err)),
            };
            if let Some((uid, gid)) = fixup.owner {
                std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
                    .map_err(io_error(context.clone()))?;
            }
            dir.set_permissions(fs::Permissions::from_mode(fixup.mode))
                .map_err(io_error(context.clone()))?;
            set_dir_mtime(&dir, fixup.mtime).map_err(io_error(context))?;
        }
        Ok(())
    }
}

fn set_dir_mtime(dir: &File, mtime: u64) -> io::Result<()> {
    dir.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
}

fn mtime_of(header: &tar::Header) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(header.mtime().unwrap_or(0))
}

/// Removes a file, symlink or whole directory without following symlinks.
fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Turns an archive path into a clean relative path: `.` components dropped,
/// `..` and absolute paths refused, lengths bounded. `None` is the root.
pub fn normalize(raw: &Path) -> Result<Option<PathBuf>, Refusal> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(name) => {
                if name.len() > MAX_NAME_BYTES {
                    return Err(format!(
                        "has a path component longer than {MAX_NAME_BYTES} bytes"
                    ));
                }
                clean.push(name);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("has a `..` component; archive paths may not climb out".to_string())
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path; archive paths must be relative".to_string())
            }
        }
    }
    if clean.as_os_str().len() > MAX_PATH_BYTES {
        return Err(format!("has a path longer than {MAX_PATH_BYTES} bytes"));
    }
    Ok((!clean.as_os_str().is_empty()).then_some(clean))
}

/// Refuses a relative symlink at `rel` whose target climbs above the root.
fn check_symlink_stays_inside(rel: &Path, link: &Path) -> Result<(), Refusal> {
    if link.as_os_str().is_empty() {
        return Err("is a symlink with an empty target".to_string());
    }
    if link.is_absolute() {
        return Ok(());
    }
    let mut depth = rel.components().count() as i64 - 1;
    for component in link.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!(
                "is a symlink to {:?}, which points outside the archive root",
                link.display().to_string()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
