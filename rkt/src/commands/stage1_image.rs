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
use crate::store::{FileStamp, Store};

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

/// A trusted stage1 file's source in the store (`file:///abs/path`).
fn file_source(path: &std::path::Path) -> Option<String> {
    Some(format!(
        "file://{}",
        std::path::absolute(path).ok()?.display()
    ))
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
            // The image the file was imported as, if it is still the same file: every `rkt
            // run` would otherwise read and hash the whole stage1 image (tens of MiB, the
            // guest kernel included) again. rkt found its default stage1 in the store by name
            // and version for the same reason; the file's stamp (device, inode, size, mtime
            // and ctime to the nanosecond) is stricter, as a rebuilt stage1 keeps its version.
            // The mtime alone is not enough: an upgrade that installs a new stage1 with its
            // build's older mtime (`install -p`, `cp -p`, dpkg, tar) would leave every pod on
            // the old stage1. The stamp is taken before the file is read: a change during the
            // read changes the ctime, so the next run reads it again rather than trust this
            // import.
            let known =
                file_source(&path).zip(std::fs::metadata(&path).ok().map(|m| FileStamp::of(&m)));
            if let Some((source, stamp)) = &known {
                if let Ok(Some(id)) = store.unchanged_file(source, stamp) {
                    return Ok(id);
                }
            }
            let text = path.display().to_string();
            let id = fetcher.fetch_checked(&text, None, PullPolicy::New, true)?;
            if let Some((source, stamp)) = &known {
                // Without the record the next run only reads the file again.
                let _ = store.record_file(source, &id, stamp);
            }
            Ok(id)
        };
        let id = if let Some(path) = &self.stage1_path {
            let in_default_dir = path
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .zip(default_dir.canonicalize().ok())
                .is_some_and(|(parent, default)| parent == default);
            // Outside the stage1 directory a stage1 is checked as any image: its signature is
            // verified on every run (against the trust store of that moment), unless the user
            // skips the check, in which case it is found by its file stamp like the installed
            // one instead of being read and hashed again.
            if in_default_dir || fetcher.skips_image_verification() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn stamp(path: &std::path::Path) -> FileStamp {
        FileStamp::of(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn a_file_keeps_its_stamp_until_it_changes_whatever_its_mtime_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage1-kvm.aci");
        std::fs::write(&path, b"old stage1").unwrap();
        let imported = stamp(&path);
        assert_eq!(stamp(&path), imported, "nothing changed");

        // As `install -p` leaves an upgraded stage1: other bytes (here of the same size) with
        // the old file's modification time.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let new = dir.path().join("new.aci");
        std::fs::write(&new, b"new stage1").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&new)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        std::fs::rename(&new, &path).unwrap();
        let upgraded = stamp(&path);
        assert_eq!(upgraded.mtime_ns, imported.mtime_ns, "the same mtime");
        assert_eq!(upgraded.size, imported.size, "the same size");
        assert_ne!(upgraded, imported, "another inode, another ctime");

        // Rewritten in place and its mtime set back: the ctime still moved.
        std::thread::sleep(Duration::from_millis(20));
        let before = stamp(&path);
        std::fs::write(&path, b"NEW stage1").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_nanos(before.mtime_ns as u64))
            .unwrap();
        let rewritten = stamp(&path);
        assert_eq!(rewritten.mtime_ns, before.mtime_ns);
        assert_ne!(rewritten, before);
    }
}
