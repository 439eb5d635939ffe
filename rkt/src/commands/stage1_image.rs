//! Which stage1 image a pod uses: `--stage1=kvm` (the default: the kvm
//! stage1 ACI installed beside the `rkt` binary) or one of rkt's
//! `--stage1-{url,path,name,hash,from-dir}`, which exclude each other.
//!
//! Signatures follow rkt: the images in the default stage1 directory (beside
//! the binary) are trusted as installed; an image already in the store
//! (`--stage1-name`, `--stage1-hash`) was checked when it was fetched; any
//! other file or URL must be signed unless `--insecure-options=image`.

use std::path::PathBuf;

use appc::ImageId;
use clap::Args;

use super::fetch::{ImageFetcher, PullPolicy};
use crate::error::RktError;
use crate::pod::stage1::is_stage1;
use crate::store::Store;

/// File name of the kvm stage1 image in the default stage1 directory.
pub const KVM_STAGE1_FILE: &str = "stage1-kvm.aci";

#[derive(Args, Debug, Clone)]
pub struct Stage1Args {
    /// The stage1 flavor; only `kvm` exists in this engine.
    #[arg(long, default_value = "kvm", value_name = "FLAVOR")]
    pub stage1: String,
    /// A stage1 image at this URL.
    #[arg(long, value_name = "URL", group = "stage1_image")]
    pub stage1_url: Option<String>,
    /// A stage1 image file.
    #[arg(long, value_name = "PATH", group = "stage1_image")]
    pub stage1_path: Option<PathBuf>,
    /// A stage1 image by name (from the store, else by discovery).
    #[arg(long, value_name = "NAME", group = "stage1_image")]
    pub stage1_name: Option<String>,
    /// A stage1 image in the store, by (abbreviated) ID.
    #[arg(long, value_name = "HASH", group = "stage1_image")]
    pub stage1_hash: Option<String>,
    /// A stage1 image file in the default stage1 directory.
    #[arg(long, value_name = "FILE", group = "stage1_image")]
    pub stage1_from_dir: Option<String>,
}

/// The default stage1 directory: the directory of the running `rkt`.
pub fn default_stage1_dir() -> Result<PathBuf, RktError> {
    let exe =
        std::env::current_exe().map_err(RktError::io("finding the rkt binary's directory"))?;
    Ok(exe
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/")))
}

/// Name of the kvm stage1 image (its manifest's `name`).
pub const KVM_STAGE1_NAME: &str = "coreos.com/rkt/stage1-kvm";

/// The stage1 used without a `--stage1-*` flag, and the directory `--stage1-from-dir` looks
/// in: the configuration's `paths.d` `stage1-images` and `stage1.d` entries (see `config`),
/// else the kvm stage1 installed beside the `rkt` binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage1Defaults {
    pub images_dir: PathBuf,
    /// Name and version of a stage1 to take from the store first, if configured.
    pub name: Option<(String, String)>,
    /// Where the default stage1 is: an absolute path or a URL.
    pub location: String,
}

impl Stage1Defaults {
    pub fn load(globals: &crate::globals::GlobalOptions) -> Result<Stage1Defaults, RktError> {
        let config = crate::config::Stage0Config::load(&globals.config_dirs())?;
        let images_dir = match config.paths.stage1_images {
            Some(dir) => dir,
            None => default_stage1_dir()?,
        };
        let location = config
            .stage1
            .location
            .unwrap_or_else(|| images_dir.join(KVM_STAGE1_FILE).display().to_string());
        Ok(Stage1Defaults {
            images_dir,
            name: config.stage1.name,
            location,
        })
    }
}

/// The image a trusted stage1 file was imported as, if the file has not changed since: every
/// `rkt run` would otherwise read and hash the whole stage1 image (tens of MiB, the guest
/// kernel included) again. rkt found its default stage1 in the store by name and version
/// for the same reason; the file's modification time is stricter, as a rebuilt stage1 keeps
/// its version. An import in the same second as the last change does not count.
fn unchanged_in_store(store: &Store, path: &std::path::Path) -> Option<ImageId> {
    let source = format!("file://{}", std::path::absolute(path).ok()?.display());
    let record = store.find_by_source(&source).ok()??;
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let modified = modified
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let modified = i64::try_from(modified).ok()?;
    (record.import_time > modified).then_some(record.id)
}

impl Stage1Args {
    /// Puts the chosen stage1 in the store (if needed) and returns its ID.
    pub fn resolve(
        &self,
        store: &Store,
        fetcher: &ImageFetcher,
        defaults: &Stage1Defaults,
    ) -> Result<ImageId, RktError> {
        if self.stage1 != "kvm" {
            return Err(RktError::Usage(format!(
                "stage1 flavor {:?} is not available: this engine runs every pod in a KVM \
                 micro-VM; use --stage1=kvm",
                self.stage1
            )));
        }
        let default_dir = defaults.images_dir.clone();
        let trusted_file = |path: PathBuf| -> Result<ImageId, RktError> {
            if !path.is_file() {
                return Err(RktError::Message(format!(
                    "no stage1 image at {}: install the kvm stage1 there (the build puts \
                     {KVM_STAGE1_FILE} beside the rkt binary) or choose one with --stage1-path",
                    path.display()
                )));
            }
            if let Some(id) = unchanged_in_store(store, &path) {
                return Ok(id);
            }
            let text = path.display().to_string();
            fetcher.fetch_checked(&text, None, PullPolicy::New, true)
        };
        let id = if let Some(path) = &self.stage1_path {
            let in_default_dir = path
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .zip(default_dir.canonicalize().ok())
                .is_some_and(|(parent, default)| parent == default);
            if in_default_dir {
                trusted_file(path.clone())?
            } else {
                fetcher.fetch(&path.display().to_string(), None, PullPolicy::New)?
            }
        } else if let Some(url) = &self.stage1_url {
            fetcher.fetch(url, None, PullPolicy::New)?
        } else if let Some(name) = &self.stage1_name {
            match store.resolve(name) {
                Ok(record) => record.id,
                Err(_) => fetcher.fetch(name, None, PullPolicy::New)?,
            }
        } else if let Some(hash) = &self.stage1_hash {
            store.resolve(hash)?.id
        } else if let Some(file) = &self.stage1_from_dir {
            if file.contains('/') {
                return Err(RktError::Usage(format!(
                    "--stage1-from-dir takes a file name in {}, not a path; use --stage1-path",
                    default_dir.display()
                )));
            }
            trusted_file(default_dir.join(file))?
        } else if let Some(id) = defaults
            .name
            .as_ref()
            .and_then(|(name, _)| store.resolve(name).ok())
        {
            // A configured default stage1 already in the store (stage1.d name).
            id.id
        } else if defaults.location.starts_with('/') {
            trusted_file(PathBuf::from(&defaults.location))?
        } else {
            // A configured URL: the administrator chose it, as rkt trusted it.
            fetcher.fetch_checked(&defaults.location, None, PullPolicy::New, true)?
        };
        let record = store.image(&id)?;
        if !is_stage1(&record.manifest) {
            return Err(RktError::Message(format!(
                "image {} is not a stage1: its manifest names no coreos.com/rkt/stage1/run \
                 entrypoint",
                record.manifest.name
            )));
        }
        Ok(id)
    }
}
