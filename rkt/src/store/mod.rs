//! The image store under `--dir` (default `/var/lib/rkt`).
//!
//! Layout (ours, not byte-compatible with rkt's ql/diskv store):
//!
//! ```text
//! <dir>/cas/lock                          store lock (see `lock`)
//! <dir>/cas/db/index.sqlite               index: images, manifests, trees, what pods
//!                                         use (see `index`, `holds`)
//! <dir>/cas/blob/sha512/<hh>/<hex>        an ACI's uncompressed tar, named by the hex
//!                                         of its image ID; <hh> = first 2 hex
//! <dir>/cas/blob/sha256/<hh>/<hex>        OCI/Docker manifests, configs and layers as
//!                                         published, by their sha256 digest (shared)
//! <dir>/cas/tree/deps-sha512-<hex>/       rendered trees, one per image + dependency chain:
//!     manifest                            the top image's manifest
//!     rootfs/                             dependencies applied in order, then the image,
//!                                         each image's pathWhitelist applied over what is below it
//! <dir>/cas/tmp/                          staging for fetches and renders
//! ```
//!
//! Ordering makes every crash point safe: a blob is fsynced and renamed into
//! place before the index row that names it is committed; a tree is built in
//! `tmp/`, synced and renamed in whole before its row is added; deletion drops
//! the row first and the files after. So the index never names a missing
//! file, and whatever a crash strands (a temp file, an unindexed blob or
//! tree) is found and removed by `image gc`, which runs under the exclusive
//! lock, when nobody can be writing.
//!
//! Pods hold what they were prepared from. `prepare` records, in the index's
//! `pod_refs`, each tree the pod uses and every image that tree was rendered
//! from, while it still holds the shared lock it rendered the trees under and
//! after the pod directory exists (`Store::hold_for_pod`). `image rm` and
//! `image gc` take the exclusive lock first and only then read those records
//! (`Store::holds`), dropping the records of pods whose directory is gone
//! (removed by `rkt rm`/`rkt gc`). So a tree a pod uses was either rendered
//! after the last removal, or recorded before the next one could start: no
//! removal can slip in between a pod getting its tree and recording it. The
//! records are the host's own (the index is never shared with a guest);
//! nothing a pod's guest writes is read to decide what is in use.

mod atomic;
mod check;
mod holds;
mod index;
mod lock;
mod tree;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use appc::{ImageId, ImageManifest, Labels};
use sha2::{Digest, Sha256, Sha512};
use thiserror::Error;

use crate::extract::ExtractError;
use crate::image::aci::StagedAci;
use crate::image::oci::{sha256_hex, LocalImage};
use crate::private_dir;
pub use holds::{pods_phrase, Holds};
pub use index::FileStamp;
pub use index::IndexError;
use index::{BlobRef, ImageRow, Index};
pub use lock::LockMode;
use lock::StoreLock;
pub use tree::{copy_tree, RenderedTree};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(
        "{reference:?} is not in the store; {}",
        suggest(.suggestions)
    )]
    NotFound {
        reference: String,
        /// Close matches among the store's names (`image::names::close_matches`).
        suggestions: Vec<String>,
    },
    #[error(
        "{reference:?} matches {count} images; give more of the ID (see `rkt image list --full`)"
    )]
    Ambiguous { reference: String, count: usize },
    #[error("the store's record of {id} is damaged ({problem}); remove it with `rkt image rm {id}` and fetch it again")]
    Damaged { id: String, problem: String },
    #[error("dependency {dependency} of {image}: {problem}")]
    Dependency {
        image: String,
        dependency: String,
        problem: String,
    },
    #[error("{image}: {problem}")]
    BadImage { image: String, problem: String },
    #[error(
        "{image}: {what} would take it past the {} MiB limit; if the image really is that \
         big, raise it with --max-image-size", .limit >> 20
    )]
    OverBudget {
        image: String,
        what: String,
        limit: u64,
    },
    #[error("blob {digest} is larger than the {declared} bytes its descriptor declares")]
    LongerThanDeclared { digest: String, declared: u64 },
    #[error("rendering {image}: {error}")]
    Render {
        image: String,
        #[source]
        error: ExtractError,
    },
    #[error(
        "image {image} is used by {}; remove {} with `rkt rm` first",
        holds::pods_phrase(pods),
        if pods.len() == 1 { "it" } else { "them" }
    )]
    InUse { image: String, pods: Vec<String> },
}

/// The end of a "not in the store" line: the close matches, or where to look.
fn suggest(suggestions: &[String]) -> String {
    match suggestions {
        [] => "see `rkt image list`, or fetch it first".to_string(),
        [one] => format!("did you mean {one}?"),
        many => format!("did you mean one of {}?", many.join(", ")),
    }
}

pub(crate) fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// How an image is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// One uncompressed ACI tar (sha512 blob).
    Aci,
    /// An OCI (or Docker) manifest, config and layers (sha256 blobs); its
    /// appc manifest is derived from the config.
    Oci,
}

/// An image as the store knows it.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub id: ImageId,
    pub format: ImageFormat,
    pub manifest: ImageManifest,
    /// The manifest exactly as found in the image (what `cat-manifest` shows).
    pub manifest_bytes: Vec<u8>,
    pub size: u64,
    pub import_time: i64,
    pub last_used: i64,
    pub source: String,
    pub signature_verified: bool,
}

impl ImageRecord {
    fn from_row(row: ImageRow) -> Result<ImageRecord, StoreError> {
        let damaged = |problem: String| StoreError::Damaged {
            id: row.id.clone(),
            problem,
        };
        let id = ImageId::try_from(row.id.as_str()).map_err(&damaged)?;
        let manifest =
            ImageManifest::from_json(&row.manifest).map_err(|err| damaged(err.to_string()))?;
        let format = match row.format.as_str() {
            "aci" => ImageFormat::Aci,
            "oci" => ImageFormat::Oci,
            other => return Err(damaged(format!("unknown image format {other:?}"))),
        };
        Ok(ImageRecord {
            id,
            format,
            manifest,
            manifest_bytes: row.manifest,
            size: row.size,
            import_time: row.import_time,
            last_used: row.last_used,
            source: row.source,
            signature_verified: row.signature_verified,
        })
    }

    pub fn labels(&self) -> &Labels {
        &self.manifest.labels
    }
}

/// How [`Store::lookup`] found an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// One of its names (a Docker/OCI image's), as the store keeps it.
    Name(String),
    /// Its ID, or its manifest or config digest, whole or a unique prefix.
    Id,
    /// An ACI's appc name, and version if given.
    AppcName,
}

/// Shortest bare hex string taken as an ID prefix (`rkt image rm 3f8a`, as
/// Docker users type config digests): shorter ones match too much.
const MIN_HEX_PREFIX: usize = 4;

/// A sha256 blob checked against its digest: either already in the store,
/// or staged in `cas/tmp` until [`Store::persist_blob`] moves it in. A
/// fetch stages everything, renders from the staged blobs, and only then
/// stores them, so an image whose layers are refused leaves nothing behind.
#[derive(Debug)]
pub struct StagedBlob {
    pub digest: String,
    pub size: u64,
    dest: PathBuf,
    temp: Option<tempfile::NamedTempFile>,
}

impl StagedBlob {
    /// The blob's bytes, from the start.
    pub fn open(&self) -> io::Result<File> {
        match &self.temp {
            Some(temp) => temp.reopen(),
            None => File::open(&self.dest),
        }
    }
}

/// A Docker/OCI image read, checked and staged, not in the store yet.
#[derive(Debug)]
pub struct StagedOci {
    pub manifest_bytes: Vec<u8>,
    pub manifest: crate::image::oci::Manifest,
    pub config_bytes: Vec<u8>,
    pub config: crate::image::oci::ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<StagedBlob>,
}

/// What [`Store::insert_oci`] stored.
#[derive(Debug)]
pub struct InsertedOci {
    pub id: ImageId,
    /// Device nodes its layers held, left out of its tree (empty when the
    /// tree was already there).
    pub skipped_devices: crate::extract::SkippedDevices,
}

/// What `image gc` removed (and kept because pods use it).
#[derive(Debug, Default)]
pub struct GcReport {
    pub images: Vec<ImageId>,
    /// Images past the grace period kept because these pods use them.
    pub kept_in_use: Vec<(ImageId, Vec<String>)>,
    pub stray_trees: usize,
    pub stray_blobs: usize,
    pub stray_temp_files: usize,
}

pub struct Store {
    cas: PathBuf,
    index: Index,
    /// `--max-image-size`: the most bytes one image may take, fetched or
    /// rendered (an OCI image's layers are stored compressed, so rendering
    /// checks their expansion against it again).
    max_image_size: u64,
    mode: LockMode,
    _lock: StoreLock,
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`, holding the
    /// store lock in `mode` until dropped.
    pub fn open(data_dir: &Path, mode: LockMode) -> Result<Store, StoreError> {
        let cas = data_dir.join("cas");
        // Owner only: a cached tree keeps its image's modes (0777
        // directories, set-id files), which no other local user may reach.
        for sub in ["db", "blob/sha512", "blob/sha256", "tree", "tmp"] {
            let path = cas.join(sub);
            private_dir::create(&path).map_err(io_context(format!(
                "creating {} (is --dir writable? rkt usually needs root)",
                path.display()
            )))?;
        }
        // Stores made by older versions were 0755: tightened on every open.
        for dir in [cas.clone(), cas.join("blob")] {
            private_dir::tighten(&dir)
                .map_err(io_context(format!("making {} private", dir.display())))?;
        }
        let lock_path = cas.join("lock");
        let lock = StoreLock::acquire(&lock_path, mode)
            .map_err(io_context(format!("locking {}", lock_path.display())))?;
        let index = Index::open(&cas.join("db/index.sqlite"))?;
        Ok(Store {
            cas,
            index,
            max_image_size: crate::extract::DEFAULT_MAX_BYTES,
            mode,
            _lock: lock,
        })
    }

    /// Sets the `--max-image-size` renders are held to.
    pub fn set_max_image_size(&mut self, limit: u64) {
        self.max_image_size = limit;
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.cas.join("tmp")
    }

    fn blob_path(&self, id: &ImageId) -> PathBuf {
        let hex = id.hex();
        self.cas.join("blob/sha512").join(&hex[..2]).join(hex)
    }

    fn sha256_blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let hex = sha256_hex(digest).map_err(|problem| StoreError::Damaged {
            id: digest.to_string(),
            problem,
        })?;
        Ok(self.cas.join("blob/sha256").join(&hex[..2]).join(hex))
    }

    fn tree_dir(&self) -> PathBuf {
        self.cas.join("tree")
    }

    /// Moves a staged ACI into the store; returns its ID. Fetching an image
    /// that is already there only refreshes its last-used time.
    pub fn insert_aci(
        &self,
        staged: StagedAci,
        source: &str,
        signature_verified: bool,
    ) -> Result<ImageId, StoreError> {
        let dest = self.blob_path(&staged.id);
        atomic::persist(staged.tar, &dest)
            .map_err(io_context(format!("storing {}", dest.display())))?;
        let labels_json = serde_json::to_string(&staged.manifest.labels).unwrap_or_default();
        let now = unix_now();
        self.index.upsert_image(
            &ImageRow {
                id: staged.id.to_string(),
                name: staged.manifest.name.to_string(),
                labels_json,
                manifest: staged.manifest_bytes,
                size: staged.size,
                import_time: now,
                last_used: now,
                source: source.to_string(),
                signature_verified,
                format: "aci".to_string(),
            },
            &[],
        )?;
        Ok(staged.id)
    }

    /// Stages a local image's layers (files an archive or layout reader
    /// opened) in the store's temp dir, checked against their digests,
    /// taking at most `max_bytes` (`--max-image-size`) in all: each layer's
    /// declared size is checked against what is left before its copy starts,
    /// and the copy stops at that size.
    pub fn stage_local(
        &self,
        image: LocalImage,
        source: &str,
        max_bytes: u64,
    ) -> Result<StagedOci, StoreError> {
        let json_len = (image.manifest_bytes.len() + image.config_bytes.len()) as u64;
        let mut remaining = max_bytes
            .checked_sub(json_len)
            .ok_or(StoreError::OverBudget {
                image: source.to_string(),
                what: "its manifest and config".to_string(),
                limit: max_bytes,
            })?;
        let mut layers = Vec::new();
        for (descriptor, mut file) in image.layers {
            if descriptor.size > remaining {
                return Err(StoreError::OverBudget {
                    image: source.to_string(),
                    what: format!("layer {} ({} bytes)", descriptor.digest, descriptor.size),
                    limit: max_bytes,
                });
            }
            let staged = self.stage_sha256_blob(&descriptor.digest, &mut file, descriptor.size)?;
            remaining -= staged.size.min(remaining);
            layers.push(staged);
        }
        Ok(StagedOci {
            manifest_bytes: image.manifest_bytes,
            manifest: image.manifest,
            config_bytes: image.config_bytes,
            config: image.config,
            layers,
        })
    }

    /// Stores a staged OCI/Docker image natively: manifest, config and
    /// layers as sha256 blobs (layers already in the store are shared), plus
    /// `appc_manifest` derived from its config, under `names` (see
    /// `image::names`). The image ID is the SHA-512 of the OCI manifest,
    /// which pins everything else.
    ///
    /// The layers are applied first, into the image's tree (what `prepare`
    /// would render), the way Docker unpacks at pull: so whatever a render
    /// refuses (traversal, links out, a layer that does not unpack to its
    /// diff_id, more than `max_bytes` unpacked) is refused here, by the
    /// fetch, before any blob or row is stored; and device nodes are left
    /// out here, counted in the result for the one warning.
    pub fn insert_oci(
        &self,
        image: StagedOci,
        appc_manifest: &ImageManifest,
        source: &str,
        names: &[String],
        max_bytes: u64,
    ) -> Result<InsertedOci, StoreError> {
        let digest: [u8; 64] = Sha512::digest(&image.manifest_bytes).into();
        let id = ImageId::from_sha512(&digest);
        let bad = |problem: String| StoreError::BadImage {
            image: source.to_string(),
            problem,
        };
        let manifest_digest = crate::image::oci::sha256_digest(&image.manifest_bytes);
        if crate::image::oci::sha256_digest(&image.config_bytes) != image.manifest.config.digest {
            return Err(bad(
                "its config does not match the digest in its manifest".to_string()
            ));
        }
        if image.layers.len() != image.manifest.layers.len() {
            return Err(bad(format!(
                "{} layers were staged for the {} its manifest lists",
                image.layers.len(),
                image.manifest.layers.len()
            )));
        }
        let manifest_len = image.manifest_bytes.len() as u64;
        let manifest_blob = self.stage_sha256_blob(
            &manifest_digest,
            &mut &image.manifest_bytes[..],
            manifest_len,
        )?;
        let config_len = image.config_bytes.len() as u64;
        let config_blob = self.stage_sha256_blob(
            &image.manifest.config.digest,
            &mut &image.config_bytes[..],
            config_len,
        )?;
        let mut blobs = vec![
            BlobRef {
                role: "manifest",
                position: 0,
                digest: manifest_digest.clone(),
            },
            BlobRef {
                role: "config",
                position: 0,
                digest: image.manifest.config.digest.clone(),
            },
        ];
        let mut size = manifest_len + config_len;
        for (position, layer) in image.layers.iter().enumerate() {
            size += layer.size;
            blobs.push(BlobRef {
                role: "layer",
                position: position as i64,
                digest: layer.digest.clone(),
            });
        }

        // Fetched again: the stored manifest (the first import's) is what
        // its tree holds.
        let manifest_json = match self.index.image(id.as_str())? {
            Some(row) => row.manifest,
            None => serde_json::to_vec(appc_manifest).unwrap_or_default(),
        };
        let diff_ids = image
            .config
            .rootfs
            .as_ref()
            .map(|rootfs| rootfs.diff_ids.clone())
            .unwrap_or_default();
        let built =
            self.build_oci_tree(&id, &manifest_json, &image.layers, &diff_ids, max_bytes)?;

        for blob in [manifest_blob, config_blob].into_iter().chain(image.layers) {
            self.persist_blob(blob)?;
        }
        let now = unix_now();
        let named: Vec<(String, String)> = names
            .iter()
            .map(|name| (name.clone(), source.to_string()))
            .collect();
        self.index.store_image(
            &ImageRow {
                id: id.to_string(),
                name: appc_manifest.name.to_string(),
                labels_json: serde_json::to_string(&appc_manifest.labels).unwrap_or_default(),
                manifest: manifest_json,
                size,
                import_time: now,
                last_used: now,
                source: source.to_string(),
                signature_verified: false,
                format: "oci".to_string(),
            },
            &blobs,
            &named,
            Some((&built.tree_id, built.size)),
        )?;
        Ok(InsertedOci {
            id,
            skipped_devices: built.skipped_devices,
        })
    }

    /// Checks `content` against `digest` while copying it into a temporary
    /// file in the store (or finds the blob already stored). More than
    /// `declared` bytes are refused as they arrive, so a lying or endless
    /// source costs at most `declared` bytes of disk.
    pub fn stage_sha256_blob(
        &self,
        digest: &str,
        content: &mut dyn io::Read,
        declared: u64,
    ) -> Result<StagedBlob, StoreError> {
        let dest = self.sha256_blob_path(digest)?;
        if let Ok(meta) = fs::symlink_metadata(&dest) {
            if meta.is_file() {
                return Ok(StagedBlob {
                    digest: digest.to_string(),
                    size: meta.len(),
                    dest,
                    temp: None,
                });
            }
        }
        let (temp, written) = self.copy_checked(digest, content, declared)?;
        Ok(StagedBlob {
            digest: digest.to_string(),
            size: written,
            dest,
            temp: Some(temp),
        })
    }

    /// Moves a staged blob into the blob store (durably; a blob some other
    /// fetch stored meanwhile is replaced by the same bytes).
    pub fn persist_blob(&self, blob: StagedBlob) -> Result<(), StoreError> {
        match blob.temp {
            Some(temp) => atomic::persist(temp, &blob.dest)
                .map_err(io_context(format!("storing {}", blob.dest.display()))),
            None => Ok(()),
        }
    }

    /// Copies `content` into a new temporary file in the store, refusing
    /// more than `declared` bytes and content that does not hash to `digest`.
    fn copy_checked(
        &self,
        digest: &str,
        content: &mut dyn io::Read,
        declared: u64,
    ) -> Result<(tempfile::NamedTempFile, u64), StoreError> {
        let mut content = content.take(declared.saturating_add(1));
        let mut written = 0u64;
        let mut temp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.tmp_dir())
            .map_err(io_context("creating a temporary file in the store"))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = content.read(&mut buffer).map_err(|source| {
                match crate::extract::decompress::size_limit_of(&source) {
                    Some(limit) => StoreError::BadImage {
                        image: digest.to_string(),
                        problem: format!(
                            "larger than the {} MiB limit; raise it with --max-image-size",
                            limit >> 20
                        ),
                    },
                    None => StoreError::Io {
                        context: format!("reading blob {digest}"),
                        source,
                    },
                }
            })?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > declared {
                return Err(StoreError::LongerThanDeclared {
                    digest: digest.to_string(),
                    declared,
                });
            }
            hasher.update(&buffer[..n]);
            io::Write::write_all(&mut temp, &buffer[..n])
                .map_err(io_context(format!("writing blob {digest}")))?;
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(StoreError::BadImage {
                image: digest.to_string(),
                problem: format!(
                    "the blob's content hashes to {actual}; it is corrupt or truncated"
                ),
            });
        }
        Ok((temp, written))
    }

    /// Opens a stored sha256 blob (an OCI layer, manifest or config).
    pub fn open_sha256_blob(&self, digest: &str) -> Result<File, StoreError> {
        let path = self.sha256_blob_path(digest)?;
        File::open(&path).map_err(|err| StoreError::Damaged {
            id: digest.to_string(),
            problem: format!("blob {} cannot be opened: {err}", path.display()),
        })
    }

    /// Re-hashes what the store holds for `image` against the digests that
    /// name it: the ACI blob against its image ID, or each OCI blob against
    /// its sha256. Returns the problems found (empty: intact).
    pub fn verify(&self, image: &ImageRecord) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        match image.format {
            ImageFormat::Aci => {
                let mut blob = self.open_blob(&image.id)?;
                let hasher: Sha512 = hash_stream(&mut blob)
                    .map_err(io_context(format!("reading the blob of {}", image.id)))?;
                let digest: [u8; 64] = hasher.finalize().into();
                if ImageId::from_sha512(&digest) != image.id {
                    problems.push(format!(
                        "the stored ACI of {} does not hash to its ID",
                        image.id
                    ));
                }
            }
            ImageFormat::Oci => {
                for blob in self.index.blobs_of(image.id.as_str())? {
                    let mut file = match self.open_sha256_blob(&blob.digest) {
                        Ok(file) => file,
                        Err(err) => {
                            problems.push(err.to_string());
                            continue;
                        }
                    };
                    let hasher: Sha256 = hash_stream(&mut file)
                        .map_err(io_context(format!("reading blob {}", blob.digest)))?;
                    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
                    if actual != blob.digest {
                        problems.push(format!(
                            "{} blob {} hashes to {actual}",
                            blob.role, blob.digest
                        ));
                    }
                }
            }
        }
        Ok(problems)
    }

    /// The layer digests of an OCI image, bottom first.
    pub fn layers_of(&self, id: &ImageId) -> Result<Vec<String>, StoreError> {
        Ok(self
            .index
            .blobs_of(id.as_str())?
            .into_iter()
            .filter(|blob| blob.role == "layer")
            .map(|blob| blob.digest)
            .collect())
    }

    /// Every image row, each read on its own: a row that cannot be read (a damaged manifest,
    /// an unknown format) is its own error, not the end of the listing, for the checks that
    /// must go on past it (`image verify --all`, the consistency check).
    pub fn image_records(&self) -> Result<Vec<Result<ImageRecord, StoreError>>, StoreError> {
        Ok(self
            .index
            .images()?
            .into_iter()
            .map(ImageRecord::from_row)
            .collect())
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.index
            .images()?
            .into_iter()
            .map(ImageRecord::from_row)
            .collect()
    }

    pub fn image(&self, id: &ImageId) -> Result<ImageRecord, StoreError> {
        match self.index.image(id.as_str())? {
            Some(row) => ImageRecord::from_row(row),
            None => Err(StoreError::NotFound {
                reference: id.to_string(),
                suggestions: Vec::new(),
            }),
        }
    }

    /// Finds an image the way `lookup` does.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord, StoreError> {
        self.lookup(reference).map(|(record, _)| record)
    }

    /// Finds an image, and says how:
    /// - by ID (`sha512-91e98d7f1679`, whole or a unique prefix) or by a
    ///   Docker/OCI image's manifest or config digest (`sha256:3f8a...`);
    /// - by one of its names (`image::names`): as typed
    ///   (`oci:/srv/l:1.0`), or as Docker reads a reference
    ///   (`debian-nginx:bookworm` is `docker.io/library/debian-nginx:bookworm`,
    ///   `docker://...` the reference after it);
    /// - an ACI by appc's rule, `NAME[:VERSION]` (the newest import wins);
    /// - by a bare hex prefix of at least `MIN_HEX_PREFIX` digits of any of
    ///   those IDs (`rkt image rm 3f8a4339aadd`, as Docker users type them).
    ///
    /// Not found: the error lists the store's close matches.
    pub fn lookup(&self, reference: &str) -> Result<(ImageRecord, Matched), StoreError> {
        if let Some(hex) = reference
            .strip_prefix("sha256:")
            .or_else(|| reference.strip_prefix("sha256-"))
        {
            let rows = self
                .index
                .images_with_digest_prefix(&format!("sha256:{hex}"))?;
            return self.one_of(reference, rows).map(|r| (r, Matched::Id));
        }
        if reference.starts_with("sha512-") {
            let rows = self.index.images_with_id_prefix(reference)?;
            return self.one_of(reference, rows).map(|r| (r, Matched::Id));
        }
        for name in name_candidates(reference) {
            if let Some(row) = self.index.image_named(&name)? {
                return Ok((ImageRecord::from_row(row)?, Matched::Name(name)));
            }
        }
        let (name, version) = match reference.split_once(':') {
            Some((name, version)) => (name, Some(version)),
            None => (reference, None),
        };
        for row in self.index.images_named(name)? {
            // Docker/OCI images go by their Docker names: `busybox` is
            // `busybox:latest`, not whichever tag of it came last.
            if row.format != "aci" {
                continue;
            }
            let record = ImageRecord::from_row(row)?;
            if version.is_none() || record.labels().get("version") == version {
                return Ok((record, Matched::AppcName));
            }
        }
        let is_hex = reference
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex && reference.len() >= MIN_HEX_PREFIX {
            let mut rows = self
                .index
                .images_with_id_prefix(&format!("sha512-{reference}"))?;
            for row in self
                .index
                .images_with_digest_prefix(&format!("sha256:{reference}"))?
            {
                if !rows.iter().any(|known| known.id == row.id) {
                    rows.push(row);
                }
            }
            if !rows.is_empty() {
                return self.one_of(reference, rows).map(|r| (r, Matched::Id));
            }
        }
        Err(StoreError::NotFound {
            reference: reference.to_string(),
            suggestions: self.close_matches(reference)?,
        })
    }

    /// The one image of `rows`, or why not.
    fn one_of(&self, reference: &str, mut rows: Vec<ImageRow>) -> Result<ImageRecord, StoreError> {
        match rows.len() {
            0 => Err(StoreError::NotFound {
                reference: reference.to_string(),
                suggestions: Vec::new(),
            }),
            1 => ImageRecord::from_row(rows.remove(0)),
            count => Err(StoreError::Ambiguous {
                reference: reference.to_string(),
                count,
            }),
        }
    }

    /// The store's names close to `reference`: Docker/OCI images' names and
    /// ACIs' `name:version`.
    pub fn close_matches(&self, reference: &str) -> Result<Vec<String>, StoreError> {
        let mut candidates: Vec<String> = self
            .index
            .names()?
            .into_iter()
            .map(|row| row.name)
            .collect();
        for row in self.index.images()? {
            if row.format == "aci" {
                let record = ImageRecord::from_row(row)?;
                candidates.push(match record.labels().get("version") {
                    Some(version) => format!("{}:{version}", record.manifest.name),
                    None => record.manifest.name.to_string(),
                });
            }
        }
        Ok(crate::image::names::close_matches(
            reference,
            candidates.iter().map(String::as_str),
        ))
    }

    /// The names of a Docker/OCI image, oldest first (none for an ACI).
    pub fn names_of(&self, id: &ImageId) -> Result<Vec<String>, StoreError> {
        Ok(self
            .index
            .names_of(id.as_str())?
            .into_iter()
            .map(|row| row.name)
            .collect())
    }

    /// Every image's names: image ID -> names, oldest first.
    pub fn all_names(&self) -> Result<std::collections::HashMap<String, Vec<String>>, StoreError> {
        let mut names: std::collections::HashMap<String, Vec<String>> = Default::default();
        for row in self.index.names()? {
            names.entry(row.image_id).or_default().push(row.name);
        }
        Ok(names)
    }

    /// Drops one name (as [`lookup`](Self::lookup) matched it); returns how
    /// many names its image has left.
    pub fn remove_name(&self, name: &str) -> Result<usize, StoreError> {
        self.index
            .remove_name(name)?
            .ok_or_else(|| StoreError::NotFound {
                reference: name.to_string(),
                suggestions: Vec::new(),
            })
    }

    /// The image the local file `source` was imported as, if it is still the file it was then
    /// (the same stamp) and the image is still here.
    pub fn unchanged_file(
        &self,
        source: &str,
        now: &FileStamp,
    ) -> Result<Option<ImageId>, StoreError> {
        let Some((id, then)) = self.index.file_stamp(source)? else {
            return Ok(None);
        };
        if then != *now {
            return Ok(None);
        }
        let Ok(id) = ImageId::try_from(id.as_str()) else {
            return Ok(None);
        };
        Ok(self.image(&id).is_ok().then_some(id))
    }

    /// Records that the local file `source`, stamped `stamp` before it was read, was imported
    /// as `id`.
    pub fn record_file(
        &self,
        source: &str,
        id: &ImageId,
        stamp: &FileStamp,
    ) -> Result<(), StoreError> {
        Ok(self.index.set_file_stamp(source, id.as_str(), stamp)?)
    }

    /// The newest image fetched from `source` (a URL or `docker://` reference).
    pub fn find_by_source(&self, source: &str) -> Result<Option<ImageRecord>, StoreError> {
        match self.index.newest_from_source(source)? {
            Some(row) => Ok(Some(ImageRecord::from_row(row)?)),
            None => Ok(None),
        }
    }

    /// Opens the stored (uncompressed) ACI tar.
    pub fn open_blob(&self, id: &ImageId) -> Result<File, StoreError> {
        let path = self.blob_path(id);
        File::open(&path).map_err(|err| StoreError::Damaged {
            id: id.to_string(),
            problem: format!("its blob {} cannot be opened: {err}", path.display()),
        })
    }

    pub fn touch(&self, id: &ImageId) -> Result<(), StoreError> {
        Ok(self.index.touch(id.as_str(), unix_now())?)
    }

    /// Removes an image, its blob and its rendered trees, unless a pod in
    /// `holds` uses it (then nothing is removed: `StoreError::InUse`).
    pub fn remove(&mut self, id: &ImageId, holds: &Holds) -> Result<(), StoreError> {
        debug_assert_eq!(
            self.mode,
            LockMode::Exclusive,
            "removal needs the exclusive lock"
        );
        if let Some(pods) = holds.pods_using(id) {
            return Err(StoreError::InUse {
                image: id.to_string(),
                pods: pods.to_vec(),
            });
        }
        let (trees, orphaned_blobs) = self.index.remove_image(id.as_str())?;
        for tree in trees {
            remove_all(&self.tree_dir().join(tree))?;
        }
        for digest in orphaned_blobs {
            remove_all(&self.sha256_blob_path(&digest)?)?;
        }
        remove_all(&self.blob_path(id))
    }

    /// Removes images unused for longer than `grace` that no pod in `holds`
    /// uses, then whatever the index does not name: stray blobs, trees and
    /// temporary files.
    pub fn gc(&mut self, grace: Duration, holds: &Holds) -> Result<GcReport, StoreError> {
        debug_assert_eq!(
            self.mode,
            LockMode::Exclusive,
            "gc needs the exclusive lock"
        );
        let mut report = GcReport::default();
        let cutoff = unix_now() - grace.as_secs() as i64;
        for image in self.images()? {
            if image.last_used > cutoff {
                continue;
            }
            if let Some(pods) = holds.pods_using(&image.id) {
                report.kept_in_use.push((image.id, pods.to_vec()));
                continue;
            }
            self.remove(&image.id, holds)?;
            report.images.push(image.id);
        }

        let known_trees: std::collections::HashSet<String> =
            self.index.tree_ids()?.into_iter().collect();
        for entry in read_dir(&self.tree_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A held tree stays even without its row (a crash between its
            // rename into place and the row leaves that; the pod uses it).
            if !known_trees.contains(&name) && !holds.holds_tree(&name) {
                remove_all(&entry.path())?;
                report.stray_trees += 1;
            }
        }

        let known_blobs: std::collections::HashSet<String> = self
            .index
            .images()?
            .into_iter()
            .map(|row| row.id.trim_start_matches("sha512-").to_string())
            .collect();
        for shard in read_dir(&self.cas.join("blob/sha512"))? {
            for blob in read_dir(&shard.path())? {
                let name = blob.file_name().to_string_lossy().into_owned();
                if !known_blobs.contains(&name) {
                    remove_all(&blob.path())?;
                    report.stray_blobs += 1;
                }
            }
        }

        let referenced = self.index.referenced_digests()?;
        for shard in read_dir(&self.cas.join("blob/sha256"))? {
            for blob in read_dir(&shard.path())? {
                let digest = format!("sha256:{}", blob.file_name().to_string_lossy());
                if !referenced.contains(&digest) {
                    remove_all(&blob.path())?;
                    report.stray_blobs += 1;
                }
            }
        }

        // Under the exclusive lock nobody is fetching or rendering, so every
        // temporary file is left over from a killed process.
        for entry in read_dir(&self.tmp_dir())? {
            remove_all(&entry.path())?;
            report.stray_temp_files += 1;
        }
        Ok(report)
    }
}

/// The names `reference` may be stored under: itself, and the store's form
/// of it (a Docker reference in full; a transport name with its path made
/// absolute, as fetches record it). Only compared, never opened.
fn name_candidates(reference: &str) -> Vec<String> {
    let mut candidates = vec![reference.to_string()];
    let mut add = |name: String| {
        if !candidates.contains(&name) {
            candidates.push(name);
        }
    };
    if let Some(spec) = reference.strip_prefix("docker://") {
        if let Ok(name) = crate::image::reference::canonical_name(spec) {
            add(name);
        }
        return candidates;
    }
    for prefix in ["oci:", "oci-archive:", "docker-archive:"] {
        if let Some(path) = reference.strip_prefix(prefix) {
            if let Ok(absolute) = std::path::absolute(path) {
                add(format!("{prefix}{}", absolute.display()));
            }
            return candidates;
        }
    }
    if let Ok(name) = crate::image::reference::canonical_name(reference) {
        add(name);
    }
    candidates
}

/// Feeds a whole stream to a fresh hasher.
fn hash_stream<D: Digest>(reader: &mut impl io::Read) -> io::Result<D> {
    let mut hasher = D::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher);
        }
        hasher.update(&buffer[..n]);
    }
}

fn read_dir(path: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    let context = || format!("reading {}", path.display());
    fs::read_dir(path)
        .map_err(io_context(context()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_context(context()))
}

/// Deletes a file or directory tree; a missing one is fine.
fn remove_all(path: &Path) -> Result<(), StoreError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => make_writable_and_remove(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    };
    result.map_err(io_context(format!("removing {}", path.display())))
}

/// `remove_dir_all`, first giving the owner write permission on directories
/// an image made read-only (only needed when not running as root).
fn make_writable_and_remove(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            tree::make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests;
