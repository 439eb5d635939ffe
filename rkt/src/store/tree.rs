//! Rendered trees: an image with its dependencies applied, as an app sees it.
//! Built once per (image + resolved dependency chain) under `cas/tree/` and
//! shared read-only afterwards; a second render of the same image is a lookup.
//!
//! The dependency graph an image's manifest declares is hostile input too: it
//! is walked once, each distinct image placed once (a diamond renders the
//! shared image at its first position in appc's depth-first order), and the
//! walk stops at `MAX_DEPENDENCY_IMAGES` distinct images or
//! `MAX_DEPENDENCY_DEPTH` levels, or at a cycle, naming the chain. What the
//! chain unpacks is counted against one byte budget (the store's
//! `--max-image-size`, `Store::set_max_image_size`) across
//! all its images, and hard links stay hard links, in the store's tree and in
//! every copy of it.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, File};
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use appc::{ImageId, Labels};
use sha2::{Digest, Sha256, Sha512};

use super::{io_context, remove_all, ImageFormat, ImageRecord, Store, StoreError};
use crate::extract::decompress::decompress;
use crate::extract::{extract_into, DevicePolicy, ExtractOptions, SkippedDevices};
use crate::image::oci::ImageConfig;

/// Most levels of dependencies below an image (its own dependencies are level
/// 1). Real images nest a handful deep; more is a mistake or an attack.
pub const MAX_DEPENDENCY_DEPTH: usize = 16;

/// Most distinct images one render combines, the image itself included.
pub const MAX_DEPENDENCY_IMAGES: usize = 64;

/// Image configs are small JSON documents.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Passes a stream through while hashing it with SHA-256.
struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Sha256Reader<R> {
    fn new(inner: R) -> Self {
        Sha256Reader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of everything read so far.
    fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

/// A rendered tree and what it was rendered from.
#[derive(Debug, Clone)]
pub struct RenderedTree {
    /// `cas/tree/<tree_id>`, holding `manifest` and `rootfs/`.
    pub path: PathBuf,
    pub tree_id: String,
    /// The images applied, bottom first (dependencies, then the image).
    pub images: Vec<ImageId>,
    /// Device nodes Docker/OCI layers held and this render left out (empty
    /// when the tree was already cached: it was reported when rendered).
    pub skipped_devices: SkippedDevices,
}

/// A tree just built (or found) under `cas/tree`, its row not written yet.
pub(super) struct BuiltTree {
    pub path: PathBuf,
    pub tree_id: String,
    /// Bytes the render unpacked (`None`: found, not built, and its size
    /// never recorded).
    pub size: Option<u64>,
    pub skipped_devices: SkippedDevices,
    /// Built by this call (else found in the cache).
    pub fresh: bool,
}

impl Store {
    /// Returns the rendered tree of `id` (a directory holding `manifest` and
    /// `rootfs/`), rendering it first if the cache does not have it yet.
    /// (Commands use [`Store::rendered`], which also reports what it did.)
    #[cfg(test)]
    pub fn tree(&self, id: &ImageId) -> Result<PathBuf, StoreError> {
        self.rendered(id).map(|tree| tree.path)
    }

    /// [`Store::tree`], also saying which tree and images it is (what a pod
    /// records to hold them; see `Store::hold_for_pod`). A cached tree that
    /// unpacked more than `--max-image-size` is refused as a render of it
    /// would be, so the limit means the same whether or not it is cached.
    pub fn rendered(&self, id: &ImageId) -> Result<RenderedTree, StoreError> {
        let top = self.image(id)?;
        let chain = self.dependency_chain(top.clone())?;
        let tree_id = tree_id(chain.iter().map(|record| &record.id), is_root());
        let images = chain.iter().map(|record| record.id.clone()).collect();
        let (path, skipped_devices) = self.render_chain(&top, &chain, &tree_id)?;
        Ok(RenderedTree {
            path,
            tree_id,
            images,
            skipped_devices,
        })
    }

    fn render_chain(
        &self,
        top: &ImageRecord,
        chain: &[ImageRecord],
        tree_id: &str,
    ) -> Result<(PathBuf, SkippedDevices), StoreError> {
        let id = &top.id;
        self.touch(id)?;
        let built = self.build_tree(id, tree_id, &top.manifest_bytes, |rootfs, budget| {
            let mut skipped = SkippedDevices::default();
            for layer in chain {
                skipped.add(self.unpack_counted(layer, rootfs, budget)?);
            }
            Ok(skipped)
        })?;
        if let (true, Some(size)) = (built.fresh, built.size) {
            self.index.add_tree(tree_id, id.as_str(), size)?;
        }
        Ok((built.path, built.skipped_devices))
    }

    /// The tree of a Docker/OCI image being fetched, built from its staged
    /// layers (see `Store::insert_oci`), or the one already cached.
    pub(super) fn build_oci_tree(
        &self,
        id: &ImageId,
        manifest_json: &[u8],
        layers: &[super::StagedBlob],
        diff_ids: &[String],
        max_bytes: u64,
    ) -> Result<BuiltTree, StoreError> {
        let tree_id = tree_id(std::iter::once(id), is_root());
        self.build_tree_within(id, &tree_id, manifest_json, max_bytes, |rootfs, budget| {
            if diff_ids.len() != layers.len() {
                return Err(diff_ids_mismatch(id, diff_ids.len(), layers.len()));
            }
            let opened = layers.iter().map(|layer| {
                let file = layer
                    .open()
                    .map_err(io_context(format!("opening layer {}", layer.digest)))?;
                Ok((layer.digest.clone(), file))
            });
            self.apply_oci_layers(id, opened, diff_ids, rootfs, budget, max_bytes)
        })
    }

    /// [`build_tree_within`](Self::build_tree_within) held to the store's
    /// `--max-image-size`.
    fn build_tree(
        &self,
        image: &ImageId,
        tree_id: &str,
        manifest_json: &[u8],
        fill: impl FnOnce(&Path, &mut u64) -> Result<SkippedDevices, StoreError>,
    ) -> Result<BuiltTree, StoreError> {
        self.build_tree_within(image, tree_id, manifest_json, self.max_image_size, fill)
    }

    /// Returns the tree `tree_id` of `image`, building it first if it is not
    /// cached: `fill` writes the rootfs (taking what it unpacks from the
    /// budget of `limit` bytes) in a directory under `cas/tmp`, which is
    /// synced and renamed into place whole. A cached tree recorded as bigger
    /// than `limit` is refused. The caller writes the tree's row.
    fn build_tree_within(
        &self,
        image: &ImageId,
        tree_id: &str,
        manifest_json: &[u8],
        limit: u64,
        fill: impl FnOnce(&Path, &mut u64) -> Result<SkippedDevices, StoreError>,
    ) -> Result<BuiltTree, StoreError> {
        let tree = self.tree_dir().join(tree_id);
        if tree.is_dir() {
            let size = self.index.tree_size(tree_id)?;
            if size.is_some_and(|size| size > limit) {
                return Err(StoreError::Render {
                    image: image.to_string(),
                    error: crate::extract::ExtractError::TooLarge { limit },
                });
            }
            return Ok(BuiltTree {
                path: tree,
                tree_id: tree_id.to_string(),
                size,
                skipped_devices: SkippedDevices::default(),
                fresh: false,
            });
        }

        let staging = tempfile::Builder::new()
            .prefix("tree-")
            .tempdir_in(self.tmp_dir())
            .map_err(io_context("creating a render directory in the store"))?;
        fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_context("setting the render directory's mode"))?;
        let rootfs = staging.path().join("rootfs");
        DirBuilder::new()
            .mode(0o755)
            .create(&rootfs)
            .map_err(io_context("creating the render directory's rootfs"))?;
        let mut budget = limit;
        let skipped_devices = fill(&rootfs, &mut budget)?;
        fs::write(staging.path().join("manifest"), manifest_json)
            .map_err(io_context("writing the rendered tree's manifest"))?;
        sync_filesystem(staging.path()).map_err(io_context("syncing the rendered tree to disk"))?;

        let staged = staging.keep();
        match fs::rename(&staged, &tree) {
            Ok(()) => super::atomic::sync_parent(&tree)
                .map_err(io_context(format!("syncing {}", tree.display())))?,
            // Another rkt rendered the same tree meanwhile; theirs is as good.
            Err(_) if tree.is_dir() => remove_all(&staged)?,
            Err(err) => {
                let _ = remove_all(&staged);
                return Err(io_context(format!(
                    "moving the rendered tree to {}",
                    tree.display()
                ))(err));
            }
        }
        Ok(BuiltTree {
            path: tree,
            tree_id: tree_id.to_string(),
            size: Some(limit - budget),
            skipped_devices,
            fresh: true,
        })
    }

    /// Applies one image's own files (no dependencies) over `rootfs`: an ACI's
    /// `rootfs/` with its pathWhitelist, or an OCI image's layers in order
    /// with their whiteouts. Returns the device nodes left out.
    pub fn unpack_into(
        &self,
        image: &ImageRecord,
        rootfs: &Path,
    ) -> Result<SkippedDevices, StoreError> {
        let mut budget = self.max_image_size;
        self.unpack_counted(image, rootfs, &mut budget)
    }

    /// `unpack_into`, taking the file bytes it writes from `budget` (shared by
    /// every image of a render) and failing once they would exceed it.
    fn unpack_counted(
        &self,
        image: &ImageRecord,
        rootfs: &Path,
        budget: &mut u64,
    ) -> Result<SkippedDevices, StoreError> {
        match image.format {
            ImageFormat::Aci => {
                let is_root = is_root();
                // A verified image extracted by root keeps what rkt kept for it.
                let trusted = is_root && image.signature_verified;
                let options = ExtractOptions {
                    subtree: Some(PathBuf::from("rootfs")),
                    // The blob was size-checked when it was fetched, but a
                    // chain of them is bounded only here.
                    max_bytes: *budget,
                    devices: if trusted {
                        DevicePolicy::Create
                    } else {
                        DevicePolicy::Refuse
                    },
                    keep_setid_bits: trusted,
                    set_owners: is_root,
                    overlay: true,
                    whiteouts: false,
                };
                let blob = BufReader::with_capacity(256 * 1024, self.open_blob(&image.id)?);
                let summary =
                    extract_into(blob, rootfs, &options).map_err(|error| StoreError::Render {
                        image: image.id.to_string(),
                        error: whole_render_limit(error, self.max_image_size),
                    })?;
                *budget = budget.saturating_sub(summary.file_bytes);
                if !image.manifest.path_whitelist.is_empty() {
                    apply_path_whitelist(rootfs, &image.manifest.path_whitelist).map_err(
                        io_context(format!("applying the pathWhitelist of {}", image.id)),
                    )?;
                }
                Ok(summary.skipped_devices)
            }
            ImageFormat::Oci => {
                let layers = self.layers_of(&image.id)?;
                let diff_ids = self.diff_ids_of(image, layers.len())?;
                let opened = layers.into_iter().map(|digest| {
                    let file = self.open_sha256_blob(&digest)?;
                    Ok((digest, file))
                });
                self.apply_oci_layers(
                    &image.id,
                    opened,
                    &diff_ids,
                    rootfs,
                    budget,
                    self.max_image_size,
                )
            }
        }
    }

    /// Applies a Docker/OCI image's layers (digest and blob, bottom first)
    /// over `rootfs`, as Docker applies them: whiteouts honoured, device
    /// nodes left out and counted (an unprivileged pull cannot create them,
    /// and the guest's /dev is its own), everything else the extraction
    /// refuses refused. Layers are stored compressed, so their expansion is
    /// bounded here, against `budget` (shared with the chain's other
    /// images; `limit` is the whole render's, for messages), and each
    /// layer's uncompressed stream must hash to its `diff_ids` entry.
    fn apply_oci_layers(
        &self,
        image: &ImageId,
        layers: impl Iterator<Item = Result<(String, File), StoreError>>,
        diff_ids: &[String],
        rootfs: &Path,
        budget: &mut u64,
        limit: u64,
    ) -> Result<SkippedDevices, StoreError> {
        let mut options = ExtractOptions {
            subtree: None,
            max_bytes: *budget,
            devices: DevicePolicy::Skip,
            // Docker/OCI images carry no signature rkt can verify, so they
            // are never trusted with set-id bits (see `extract`).
            keep_setid_bits: false,
            set_owners: is_root(),
            overlay: true,
            whiteouts: true,
        };
        let mut skipped = SkippedDevices::default();
        for (position, (layer, diff_id)) in layers.zip(diff_ids).enumerate() {
            let (digest, file) = layer?;
            let blob = BufReader::with_capacity(256 * 1024, file);
            let layer = decompress(blob).map_err(io_context(format!("opening layer {digest}")))?;
            // The diff_id covers the whole uncompressed stream, so it
            // is hashed while extracting and the tail the tar reader
            // left (end-of-archive padding) is hashed after.
            let mut layer = Sha256Reader::new(layer);
            let summary =
                extract_into(&mut layer, rootfs, &options).map_err(|error| StoreError::Render {
                    image: format!("{image} (layer {digest})"),
                    error: whole_render_limit(error, limit),
                })?;
            skipped.add(summary.skipped_devices);
            *budget = budget.saturating_sub(summary.file_bytes);
            // The tail counts against the budget too; one byte past it
            // means the layer is bigger than allowed, not damaged.
            let tail = io::copy(
                &mut (&mut layer).take(budget.saturating_add(1)),
                &mut io::sink(),
            )
            .map_err(io_context(format!("reading the end of layer {digest}")))?;
            if tail > *budget {
                return Err(StoreError::Render {
                    image: format!("{image} (layer {digest})"),
                    error: crate::extract::ExtractError::TooLarge { limit },
                });
            }
            *budget -= tail;
            let unpacked = layer.digest();
            if &unpacked != diff_id {
                return Err(StoreError::BadImage {
                    image: image.to_string(),
                    problem: format!(
                        "layer {position} ({digest}) unpacks to {unpacked}, but the \
                         config's rootfs.diff_ids[{position}] is {diff_id}; the image \
                         is damaged or was tampered with: fetch it again from a source \
                         you trust"
                    ),
                });
            }
            options.max_bytes = *budget;
        }
        Ok(skipped)
    }

    /// The config's `rootfs.diff_ids` of an OCI image, which must name
    /// exactly one uncompressed digest per layer.
    fn diff_ids_of(&self, image: &ImageRecord, layers: usize) -> Result<Vec<String>, StoreError> {
        let bad = |problem: String| StoreError::BadImage {
            image: image.id.to_string(),
            problem,
        };
        let config_digest = self
            .index
            .blobs_of(image.id.as_str())?
            .into_iter()
            .find(|blob| blob.role == "config")
            .map(|blob| blob.digest)
            .ok_or_else(|| StoreError::Damaged {
                id: image.id.to_string(),
                problem: "no config blob is recorded for it".to_string(),
            })?;
        let mut bytes = Vec::new();
        self.open_sha256_blob(&config_digest)?
            .take(MAX_CONFIG_BYTES)
            .read_to_end(&mut bytes)
            .map_err(io_context(format!("reading config {config_digest}")))?;
        let config: ImageConfig = serde_json::from_slice(&bytes)
            .map_err(|err| bad(format!("its config {config_digest} is not valid: {err}")))?;
        let diff_ids = config
            .rootfs
            .map(|rootfs| rootfs.diff_ids)
            .unwrap_or_default();
        if diff_ids.len() != layers {
            return Err(diff_ids_mismatch(&image.id, diff_ids.len(), layers));
        }
        Ok(diff_ids)
    }

    /// The images `top` renders from, bottom first: appc's depth-first order
    /// (each image's dependencies in manifest order, then the image), each
    /// distinct image once, at its first position.
    fn dependency_chain(&self, top: ImageRecord) -> Result<Vec<ImageRecord>, StoreError> {
        let mut walk = ChainWalk {
            store: self,
            chain: Vec::new(),
            placed: HashSet::new(),
            resolved: HashMap::new(),
            stack: Vec::new(),
        };
        walk.visit(top)?;
        Ok(walk.chain)
    }

    /// The store's image that `image`'s manifest dependency names: by ID if
    /// it pins one, else the newest with that name and labels.
    fn resolve_dependency(
        &self,
        image: &ImageId,
        dependency: &appc::Dependency,
    ) -> Result<ImageRecord, StoreError> {
        let name = dependency.image_name.as_str();
        let missing = |problem: String| StoreError::Dependency {
            image: image.to_string(),
            dependency: name.to_string(),
            problem,
        };
        match &dependency.image_id {
            Some(id) => self
                .image(id)
                .map_err(|_| missing(format!("image {id} is not in the store; fetch it first"))),
            None => self
                .newest_matching(name, &dependency.labels)?
                .ok_or_else(|| {
                    missing(
                        "no image with that name and labels is in the store; fetch it first"
                            .to_string(),
                    )
                }),
        }
    }

    fn newest_matching(
        &self,
        name: &str,
        labels: &Labels,
    ) -> Result<Option<ImageRecord>, StoreError> {
        for row in self.index.images_named(name)? {
            let record = ImageRecord::from_row(row)?;
            if labels.0.iter().all(|wanted| {
                record.labels().get(wanted.name.as_str()) == Some(wanted.value.as_str())
            }) {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }
}

/// One walk of a dependency graph (see `Store::dependency_chain`).
struct ChainWalk<'s> {
    store: &'s Store,
    /// Images placed so far, bottom first.
    chain: Vec<ImageRecord>,
    /// IDs in `chain`: an image met again is already placed.
    placed: HashSet<ImageId>,
    /// Each distinct dependency entry (its Debug form) and the image it
    /// resolved to: a manifest repeating one dependency thousands of times
    /// costs one index query, not thousands.
    resolved: HashMap<String, ImageId>,
    /// The path from the top image to the one being visited (ID, name).
    stack: Vec<(ImageId, String)>,
}

impl ChainWalk<'_> {
    /// Places `record`'s dependencies, then `record`, unless already placed.
    fn visit(&mut self, record: ImageRecord) -> Result<(), StoreError> {
        if self.placed.contains(&record.id) {
            return Ok(());
        }
        let name = record.manifest.name.as_str().to_string();
        if let Some(start) = self.stack.iter().position(|(id, _)| *id == record.id) {
            let cycle = self.path_from(start, &name);
            return Err(self.refuse(&name, format!("dependency cycle: {cycle}")));
        }
        if self.stack.len() > MAX_DEPENDENCY_DEPTH {
            let path = self.path_from(0, &name);
            return Err(self.refuse(
                &name,
                format!("dependencies nest deeper than {MAX_DEPENDENCY_DEPTH} levels: {path}"),
            ));
        }
        self.stack.push((record.id.clone(), name.clone()));
        for dependency in &record.manifest.dependencies {
            let key = format!("{dependency:?}");
            if self
                .resolved
                .get(&key)
                .is_some_and(|id| self.placed.contains(id))
            {
                continue;
            }
            let found = self.store.resolve_dependency(&record.id, dependency)?;
            self.resolved.insert(key, found.id.clone());
            self.visit(found)?;
        }
        self.stack.pop();
        if self.placed.len() >= MAX_DEPENDENCY_IMAGES {
            let path = self.path_from(0, &name);
            return Err(self.refuse(
                &name,
                format!(
                    "the dependency graph holds more than {MAX_DEPENDENCY_IMAGES} distinct \
                     images (reached at {path})"
                ),
            ));
        }
        self.placed.insert(record.id.clone());
        self.chain.push(record);
        Ok(())
    }

    /// `a -> b -> ... -> last`: the names on the stack from `start`, then `last`.
    fn path_from(&self, start: usize, last: &str) -> String {
        self.stack[start..]
            .iter()
            .map(|(_, name)| name.as_str())
            .chain(std::iter::once(last))
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    /// The error for a graph refused at `name`, attributed to the top image.
    fn refuse(&self, name: &str, problem: String) -> StoreError {
        StoreError::Dependency {
            image: self
                .stack
                .first()
                .map_or_else(|| name.to_string(), |(_, top)| top.clone()),
            dependency: name.to_string(),
            problem,
        }
    }
}

/// A render's size error names the whole render's limit, not the part of it
/// left when the image that crossed it began.
fn whole_render_limit(
    error: crate::extract::ExtractError,
    limit: u64,
) -> crate::extract::ExtractError {
    match error {
        crate::extract::ExtractError::TooLarge { .. } => {
            crate::extract::ExtractError::TooLarge { limit }
        }
        other => other,
    }
}

/// A config whose `rootfs.diff_ids` do not pair with the layers.
fn diff_ids_mismatch(image: &ImageId, diff_ids: usize, layers: usize) -> StoreError {
    StoreError::BadImage {
        image: image.to_string(),
        problem: format!(
            "its config lists {diff_ids} rootfs.diff_ids for {layers} layers; the image is malformed"
        ),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `deps-sha512-<hex>` over the IDs of the chain, bottom first. A tree
/// rendered without root cannot give files their owners, so it is another
/// tree (a `nobody-owned` line ends what is hashed): one rendered by an
/// unprivileged `rkt fetch` is never what root's `prepare` runs.
fn tree_id<'a>(chain: impl Iterator<Item = &'a ImageId>, as_root: bool) -> String {
    let mut hasher = Sha512::new();
    for id in chain {
        hasher.update(id.as_str().as_bytes());
        hasher.update(b"\n");
    }
    if !as_root {
        hasher.update(b"nobody-owned\n");
    }
    let digest: [u8; 64] = hasher.finalize().into();
    format!("deps-{}", ImageId::from_sha512(&digest))
}

/// Keeps only the listed absolute paths (and the directories leading to
/// them); everything else under `rootfs` goes.
pub fn apply_path_whitelist(rootfs: &Path, whitelist: &[String]) -> io::Result<()> {
    let keep: HashSet<PathBuf> = whitelist
        .iter()
        .map(|path| PathBuf::from(path.trim_start_matches('/')))
        .collect();
    let ancestors: HashSet<PathBuf> = keep
        .iter()
        .flat_map(|path| path.ancestors().skip(1).map(Path::to_path_buf))
        .collect();
    filter_dir(rootfs, Path::new(""), &keep, &ancestors)
}

fn filter_dir(
    root: &Path,
    rel: &Path,
    keep: &HashSet<PathBuf>,
    ancestors: &HashSet<PathBuf>,
) -> io::Result<()> {
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        if is_dir && (keep.contains(&child) || ancestors.contains(&child)) {
            filter_dir(root, &child, keep, ancestors)?;
        } else if !keep.contains(&child) {
            if is_dir {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// Flushes the filesystem holding `path`: one call instead of an fsync per
/// file of a tree that may hold tens of thousands.
fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: syncfs takes a file descriptor we own and keep open for the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies a rendered tree to `dst` (which must exist), keeping modes, symlinks,
/// special files and, as root, owners. Files hard-linked together inside
/// `src` are hard-linked together in the copy: one copy of the data, then
/// links to that copy, so the copy takes no more space than the tree.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let mut copier = TreeCopier {
        as_root: nix::unistd::geteuid().is_root(),
        copies: HashMap::new(),
    };
    copier.copy_dir_contents(src, dst)?;
    let meta = fs::metadata(src)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

/// A file's identity on its filesystem.
type FileKey = (u64, u64);

fn file_key(meta: &fs::Metadata) -> FileKey {
    (meta.dev(), meta.ino())
}

struct TreeCopier {
    as_root: bool,
    /// For each multiply-linked source file (by its identity inside `src`),
    /// the copy this walk made of it first and that copy's identity. Links
    /// are made only to such a copy, and only while the path still holds the
    /// very file this walk created.
    copies: HashMap<FileKey, (PathBuf, FileKey)>,
}

impl TreeCopier {
    fn copy_dir_contents(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            let from = entry.path();
            let to = dst.join(entry.file_name());
            let meta = fs::symlink_metadata(&from)?;
            let file_type = meta.file_type();
            let mode = meta.mode() & 0o7777;
            if file_type.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            } else if file_type.is_dir() {
                DirBuilder::new().mode(0o700).create(&to)?;
                self.copy_dir_contents(&from, &to)?;
            } else if file_type.is_file() {
                if self.link_to_earlier_copy(&meta, &to)? {
                    // Same inode: mode, owner and mtime are already set.
                    continue;
                }
                fs::copy(&from, &to)?;
                let copy = File::options().write(true).open(&to)?;
                copy.set_modified(meta.modified()?)?;
                if meta.nlink() > 1 {
                    let made = file_key(&copy.metadata()?);
                    self.copies.insert(file_key(&meta), (to.clone(), made));
                }
            } else {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
                nix::sys::stat::mknod(
                    &to,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    meta.rdev(),
                )
                .map_err(io::Error::from)?;
            }
            if self.as_root {
                std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
            }
            if !file_type.is_symlink() {
                // After chown, which clears setuid/setgid.
                fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(())
    }

    /// Hard-links `to` to the copy already made of the source file `meta`
    /// describes, if there is one; false when the data must be copied.
    fn link_to_earlier_copy(&self, meta: &fs::Metadata, to: &Path) -> io::Result<bool> {
        if meta.nlink() < 2 {
            return Ok(false);
        }
        let Some((first, made)) = self.copies.get(&file_key(meta)) else {
            return Ok(false);
        };
        // The first copy's path must still be the regular file made there
        // (not followed: `symlink_metadata`, and `link` never follows either).
        let current = fs::symlink_metadata(first)?;
        if !current.file_type().is_file() || file_key(&current) != *made {
            return Err(io::Error::other(format!(
                "{} changed while the tree was being copied",
                first.display()
            )));
        }
        fs::hard_link(first, to)?;
        Ok(true)
    }
}

/// Gives the owner write and search permission on every directory below
/// `path`, so a tree with read-only directories can be deleted.
pub fn make_dirs_writable(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(
        path,
        fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o700),
    )?;
    for entry in fs::read_dir(path)? {
        make_dirs_writable(&entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;
    use crate::testutil::{import, manifest};

    /// `deps` as a manifest's `dependencies` member, each by name.
    fn depends_on(deps: &[&str]) -> String {
        let list: Vec<String> = deps
            .iter()
            .map(|name| format!(r#"{{"imageName":"{name}"}}"#))
            .collect();
        format!(r#","dependencies":[{}]"#, list.join(","))
    }

    fn names(chain: &[ImageRecord]) -> Vec<String> {
        chain
            .iter()
            .map(|record| record.manifest.name.as_str().to_string())
            .collect()
    }

    #[test]
    fn a_diamond_places_the_shared_image_once_at_its_first_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        import(&store, &manifest("example.com/base", "1", ""), &[]);
        for middle in ["example.com/left", "example.com/right"] {
            let extra = depends_on(&["example.com/base"]);
            import(&store, &manifest(middle, "1", &extra), &[]);
        }
        let extra = depends_on(&["example.com/left", "example.com/right", "example.com/base"]);
        let top = import(&store, &manifest("example.com/top", "1", &extra), &[]);
        let chain = store.dependency_chain(store.image(&top).unwrap()).unwrap();
        assert_eq!(
            names(&chain),
            [
                "example.com/base",
                "example.com/left",
                "example.com/right",
                "example.com/top"
            ]
        );
    }

    #[test]
    fn fan_out_is_walked_once_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        // Each level depends twice on the one below: 2^16 paths, 17 images.
        import(&store, &manifest("example.com/l0", "1", ""), &[]);
        let mut top = None;
        for level in 1..=MAX_DEPENDENCY_DEPTH {
            let below = format!("example.com/l{}", level - 1);
            let extra = depends_on(&[&below, &below]);
            let name = format!("example.com/l{level}");
            top = Some(import(&store, &manifest(&name, "1", &extra), &[]));
        }
        let top = store.image(&top.unwrap()).unwrap();
        let chain = store.dependency_chain(top).unwrap();
        let expected: Vec<String> = (0..=MAX_DEPENDENCY_DEPTH)
            .map(|level| format!("example.com/l{level}"))
            .collect();
        assert_eq!(names(&chain), expected);
    }

    #[test]
    fn too_deep_too_wide_and_cyclic_graphs_are_refused_naming_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();

        import(&store, &manifest("example.com/d0", "1", ""), &[]);
        let mut deep = None;
        for level in 1..=MAX_DEPENDENCY_DEPTH + 1 {
            let extra = depends_on(&[&format!("example.com/d{}", level - 1)]);
            let name = format!("example.com/d{level}");
            deep = Some(import(&store, &manifest(&name, "1", &extra), &[]));
        }
        let err = store.tree(&deep.unwrap()).unwrap_err().to_string();
        assert!(
            err.contains("deeper than 16 levels")
                && err.contains("example.com/d17 -> example.com/d16")
                && err.ends_with("example.com/d1 -> example.com/d0"),
            "{err}"
        );

        let mut leaves = Vec::new();
        // 70 images: the 65th placed is refused.
        for leaf in 0..69 {
            let name = format!("example.com/w{leaf}");
            import(&store, &manifest(&name, "1", ""), &[]);
            leaves.push(name);
        }
        let leaves: Vec<&str> = leaves.iter().map(String::as_str).collect();
        let wide = import(
            &store,
            &manifest("example.com/wide", "1", &depends_on(&leaves)),
            &[],
        );
        let err = store.tree(&wide).unwrap_err().to_string();
        assert!(
            err.contains("more than 64 distinct images")
                && err.ends_with("(reached at example.com/wide -> example.com/w64)"),
            "{err}"
        );

        // a -> b -> a: b must exist for a to be imported, so b names a by
        // name and a is imported afterwards.
        import(
            &store,
            &manifest("example.com/b", "1", &depends_on(&["example.com/a"])),
            &[],
        );
        let a = import(
            &store,
            &manifest("example.com/a", "1", &depends_on(&["example.com/b"])),
            &[],
        );
        let err = store.tree(&a).unwrap_err().to_string();
        assert!(
            err.contains("dependency cycle: example.com/a -> example.com/b -> example.com/a"),
            "{err}"
        );
    }

    #[test]
    fn copy_tree_keeps_hard_links_and_never_links_outside_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("a")).unwrap();
        fs::write(src.join("a/big"), vec![7u8; 64 * 1024]).unwrap();
        for link in 0..50 {
            fs::hard_link(src.join("a/big"), src.join(format!("link{link}"))).unwrap();
        }
        fs::write(src.join("single"), b"one").unwrap();
        let dst = dir.path().join("dst");
        fs::create_dir(&dst).unwrap();
        copy_tree(&src, &dst).unwrap();

        let big = fs::metadata(dst.join("a/big")).unwrap();
        assert_eq!(big.nlink(), 51, "one inode for the file and its 50 links");
        assert_ne!(big.ino(), fs::metadata(src.join("a/big")).unwrap().ino());
        for link in 0..50 {
            let meta = fs::metadata(dst.join(format!("link{link}"))).unwrap();
            assert_eq!((meta.dev(), meta.ino()), (big.dev(), big.ino()));
        }
        assert_eq!(fs::read(dst.join("link7")).unwrap(), vec![7u8; 64 * 1024]);
        assert_eq!(fs::metadata(dst.join("single")).unwrap().nlink(), 1);
        // The source is untouched: no link count added by the copy.
        assert_eq!(fs::metadata(src.join("a/big")).unwrap().nlink(), 51);
    }
}
