//! Rendered trees: an image with its dependencies applied, as an app sees it.
//! Built once per (image + resolved dependency chain) under `cas/tree/` and
//! shared read-only afterwards; a second render of the same image is a lookup.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File};
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use appc::{ImageId, Labels};
use sha2::{Digest, Sha256, Sha512};

use super::{io_context, remove_all, ImageFormat, ImageRecord, Store, StoreError};
use crate::extract::decompress::decompress;
use crate::extract::{extract_into, ExtractOptions};
use crate::image::oci::ImageConfig;

/// Deeper dependency chains than this are treated as a mistake.
const MAX_DEPENDENCY_DEPTH: usize = 32;

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
}

impl Store {
    /// Returns the rendered tree of `id` (a directory holding `manifest` and
    /// `rootfs/`), rendering it first if the cache does not have it yet.
    pub fn tree(&self, id: &ImageId) -> Result<PathBuf, StoreError> {
        self.rendered(id).map(|tree| tree.path)
    }

    /// [`Store::tree`], also saying which tree and images it is (what a pod
    /// records to hold them; see `Store::hold_for_pod`).
    pub fn rendered(&self, id: &ImageId) -> Result<RenderedTree, StoreError> {
        let top = self.image(id)?;
        let mut chain = Vec::new();
        self.push_chain(top.clone(), &mut chain, &mut Vec::new())?;
        let tree_id = tree_id(&chain);
        let images = chain.iter().map(|record| record.id.clone()).collect();
        let path = self.render_chain(&top, &chain, &tree_id)?;
        Ok(RenderedTree {
            path,
            tree_id,
            images,
        })
    }

    fn render_chain(
        &self,
        top: &ImageRecord,
        chain: &[ImageRecord],
        tree_id: &str,
    ) -> Result<PathBuf, StoreError> {
        let id = &top.id;
        let tree = self.tree_dir().join(tree_id);
        self.touch(id)?;
        if tree.is_dir() {
            return Ok(tree);
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
        for layer in chain {
            self.unpack_into(layer, &rootfs)?;
        }
        fs::write(staging.path().join("manifest"), &top.manifest_bytes)
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
        self.index.add_tree(tree_id, id.as_str())?;
        Ok(tree)
    }

    /// Applies one image's own files (no dependencies) over `rootfs`: an ACI's
    /// `rootfs/` with its pathWhitelist, or an OCI image's layers in order
    /// with their whiteouts.
    pub fn unpack_into(&self, image: &ImageRecord, rootfs: &Path) -> Result<(), StoreError> {
        let is_root = nix::unistd::geteuid().is_root();
        // A verified image extracted by root keeps what rkt kept for it.
        let trusted = is_root && image.signature_verified;
        let render_error = |error| StoreError::Render {
            image: image.id.to_string(),
            error,
        };
        match image.format {
            ImageFormat::Aci => {
                let options = ExtractOptions {
                    subtree: Some(PathBuf::from("rootfs")),
                    // The blob was size-checked when it was fetched.
                    max_bytes: u64::MAX,
                    allow_devices: trusted,
                    keep_setid_bits: trusted,
                    set_owners: is_root,
                    overlay: true,
                    whiteouts: false,
                };
                let blob = BufReader::with_capacity(256 * 1024, self.open_blob(&image.id)?);
                extract_into(blob, rootfs, &options).map_err(render_error)?;
                if !image.manifest.path_whitelist.is_empty() {
                    apply_path_whitelist(rootfs, &image.manifest.path_whitelist).map_err(
                        io_context(format!("applying the pathWhitelist of {}", image.id)),
                    )?;
                }
            }
            ImageFormat::Oci => {
                // Layers are stored compressed, so their expansion is bounded
                // here, across all of them together.
                let mut budget = self.max_image_size;
                let mut options = ExtractOptions {
                    subtree: None,
                    max_bytes: budget,
                    allow_devices: trusted,
                    keep_setid_bits: trusted,
                    set_owners: is_root,
                    overlay: true,
                    whiteouts: true,
                };
                let layers = self.layers_of(&image.id)?;
                let diff_ids = self.diff_ids_of(image, layers.len())?;
                for (position, (digest, diff_id)) in layers.iter().zip(&diff_ids).enumerate() {
                    let blob = BufReader::with_capacity(256 * 1024, self.open_sha256_blob(digest)?);
                    let layer =
                        decompress(blob).map_err(io_context(format!("opening layer {digest}")))?;
                    // The diff_id covers the whole uncompressed stream, so it
                    // is hashed while extracting and the tail the tar reader
                    // left (end-of-archive padding) is hashed after.
                    let mut layer = Sha256Reader::new(layer);
                    let summary = extract_into(&mut layer, rootfs, &options).map_err(|error| {
                        StoreError::Render {
                            image: format!("{} (layer {digest})", image.id),
                            error,
                        }
                    })?;
                    budget = budget.saturating_sub(summary.file_bytes);
                    // The tail counts against the budget too; one byte past it
                    // means the layer is bigger than allowed, not damaged.
                    let tail = io::copy(
                        &mut (&mut layer).take(budget.saturating_add(1)),
                        &mut io::sink(),
                    )
                    .map_err(io_context(format!("reading the end of layer {digest}")))?;
                    if tail > budget {
                        return Err(StoreError::Render {
                            image: format!("{} (layer {digest})", image.id),
                            error: crate::extract::ExtractError::TooLarge {
                                limit: self.max_image_size,
                            },
                        });
                    }
                    budget -= tail;
                    let unpacked = layer.digest();
                    if &unpacked != diff_id {
                        return Err(StoreError::BadImage {
                            image: image.id.to_string(),
                            problem: format!(
                                "layer {position} ({digest}) unpacks to {unpacked}, but the \
                                 config's rootfs.diff_ids[{position}] is {diff_id}; the image \
                                 is damaged or was tampered with: remove it and fetch it again \
                                 from a source you trust"
                            ),
                        });
                    }
                    options.max_bytes = budget;
                }
            }
        }
        Ok(())
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
            return Err(bad(format!(
                "its config lists {} rootfs.diff_ids for {layers} layers; the image is malformed",
                diff_ids.len()
            )));
        }
        Ok(diff_ids)
    }

    /// Appends `record`'s dependencies (depth-first, in manifest order) and
    /// then `record` itself to `chain`.
    fn push_chain(
        &self,
        record: ImageRecord,
        chain: &mut Vec<ImageRecord>,
        stack: &mut Vec<ImageId>,
    ) -> Result<(), StoreError> {
        let problem = |dependency: &str, problem: String| StoreError::Dependency {
            image: record.id.to_string(),
            dependency: dependency.to_string(),
            problem,
        };
        if stack.contains(&record.id) {
            return Err(problem(
                record.manifest.name.as_str(),
                "dependency cycle".to_string(),
            ));
        }
        if stack.len() >= MAX_DEPENDENCY_DEPTH {
            return Err(problem(
                record.manifest.name.as_str(),
                format!("dependencies nest deeper than {MAX_DEPENDENCY_DEPTH} levels"),
            ));
        }
        stack.push(record.id.clone());
        for dependency in &record.manifest.dependencies {
            let name = dependency.image_name.as_str();
            let found = match &dependency.image_id {
                Some(id) => self.image(id).map_err(|_| {
                    problem(
                        name,
                        format!("image {id} is not in the store; fetch it first"),
                    )
                })?,
                None => self
                    .newest_matching(name, &dependency.labels)?
                    .ok_or_else(|| {
                        problem(
                            name,
                            "no image with that name and labels is in the store; fetch it first"
                                .to_string(),
                        )
                    })?,
            };
            self.push_chain(found, chain, stack)?;
        }
        stack.pop();
        chain.push(record);
        Ok(())
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

/// `deps-sha512-<hex>` over the IDs of the chain, bottom first.
fn tree_id(chain: &[ImageRecord]) -> String {
    let mut hasher = Sha512::new();
    for record in chain {
        hasher.update(record.id.as_str().as_bytes());
        hasher.update(b"\n");
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
/// special files and, as root, owners. Hard links become separate copies.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let as_root = nix::unistd::geteuid().is_root();
    copy_dir_contents(src, dst, as_root)?;
    let meta = fs::metadata(src)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

fn copy_dir_contents(src: &Path, dst: &Path, as_root: bool) -> io::Result<()> {
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
            copy_dir_contents(&from, &to, as_root)?;
        } else if file_type.is_file() {
            fs::copy(&from, &to)?;
            File::options()
                .write(true)
                .open(&to)?
                .set_modified(meta.modified()?)?;
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
        if as_root {
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        }
        if !file_type.is_symlink() {
            // After chown, which clears setuid/setgid.
            fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
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
