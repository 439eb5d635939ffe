//! Fetching an ACI from a local file, with its detached signature.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use appc::ImageId;

use super::FetchError;
use crate::error::RktError;
use crate::image::aci;
use crate::store::Store;
use crate::trust::{verify_detached, Keystore};

/// Most bytes read from (or downloaded for) a detached signature.
pub const MAX_SIGNATURE_BYTES: u64 = 1024 * 1024;

pub struct FileFetch<'a> {
    pub path: &'a Path,
    /// `--signature`; defaults to `<path>.asc`.
    pub signature: Option<&'a Path>,
    /// `--insecure-options=image`: skip the signature check.
    pub skip_verification: bool,
    pub max_bytes: u64,
    /// Where the image came from, when `path` is a downloaded copy.
    pub source: Option<String>,
    /// The name (and version label) the image must carry: set when it was
    /// found by discovery, which the spec requires to be checked.
    pub expected: Option<(&'a str, Option<&'a str>)>,
}

/// What a fetch stored.
pub struct Fetched {
    pub id: ImageId,
    /// The fingerprint of the key that signed it, if checked.
    pub signer: Option<String>,
}

impl FileFetch<'_> {
    pub fn run(&self, store: &Store, keystore: &Keystore) -> Result<Fetched, RktError> {
        let shown = self
            .source
            .clone()
            .unwrap_or_else(|| self.path.display().to_string());
        let open = |path: &Path| {
            File::open(path).map_err(|source| FetchError::Open {
                path: path.display().to_string(),
                source,
            })
        };
        let image = open(self.path)?;
        let staged = aci::stage(
            BufReader::with_capacity(256 * 1024, image),
            &shown,
            &store.tmp_dir(),
            self.max_bytes,
        )?;

        if let Some((name, version)) = self.expected {
            let found_version = staged.manifest.labels.get("version");
            if staged.manifest.name.as_str() != name
                || version.is_some_and(|v| found_version != Some(v))
            {
                return Err(RktError::Message(format!(
                    "{shown} is {}{}, not the {name}{} that was asked for; its discovery \
                     points at the wrong image",
                    staged.manifest.name,
                    found_version.map(|v| format!(":{v}")).unwrap_or_default(),
                    version.map(|v| format!(":{v}")).unwrap_or_default(),
                )));
            }
        }
        let signer = if self.skip_verification {
            None
        } else {
            let signature_path = self
                .signature
                .map(Path::to_path_buf)
                .unwrap_or_else(|| append_extension(self.path, "asc"));
            let no_signature = || FetchError::NoSignature {
                image: shown.clone(),
                looked_for: signature_path.display().to_string(),
            };
            if !signature_path.exists() {
                return Err(no_signature().into());
            }
            // A signature is a few hundred bytes; the cap keeps a planted
            // huge (or endless) file from being read whole.
            let mut signature = Vec::new();
            super::open_regular(&signature_path)?
                .take(MAX_SIGNATURE_BYTES + 1)
                .read_to_end(&mut signature)
                .map_err(|_| no_signature())?;
            if signature.len() as u64 > MAX_SIGNATURE_BYTES {
                return Err(RktError::Message(format!(
                    "{}: larger than {} KiB, so not a detached signature",
                    signature_path.display(),
                    MAX_SIGNATURE_BYTES >> 10
                )));
            }
            let name = &staged.manifest.name;
            let keys = keystore.keys_for(name)?;
            // The signature covers the file as published (compressed or not).
            let mut data = BufReader::with_capacity(256 * 1024, open(self.path)?);
            Some(verify_detached(
                &keys,
                &signature,
                &signature_path.display().to_string(),
                &mut data,
                name.as_str(),
            )?)
        };
        let source = self
            .source
            .clone()
            .unwrap_or_else(|| format!("file://{}", absolute(self.path).display()));
        let id = store.insert_aci(staged, &source, signer.is_some())?;
        Ok(Fetched { id, signer })
    }
}

fn append_extension(path: &Path, extension: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
