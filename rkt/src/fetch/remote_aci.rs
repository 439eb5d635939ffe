//! Fetching an ACI by http(s) URL, with its signature at `URL.asc` (or
//! `--signature`): both are downloaded into the store's temp dir, then handled
//! exactly like a local file.

use std::path::Path;

use appc::ImageId;

use super::file::FileFetch;
use super::http::Http;
use super::FetchError;
use crate::error::RktError;
use crate::store::Store;
use crate::trust::Keystore;

pub struct RemoteAciFetch<'a> {
    pub url: &'a str,
    pub signature: Option<&'a Path>,
    pub skip_verification: bool,
    pub max_bytes: u64,
}

/// Signatures are small; anything bigger is not one.
const MAX_SIGNATURE_BYTES: u64 = 1024 * 1024;

impl RemoteAciFetch<'_> {
    pub fn run(
        &self,
        http: &Http,
        store: &Store,
        keystore: &Keystore,
    ) -> Result<ImageId, RktError> {
        let image = http
            .download(self.url, &store.tmp_dir(), self.max_bytes)?
            .ok_or_else(|| RktError::Message(format!("{}: not found (HTTP 404)", self.url)))?;
        let signature_url = format!("{}.asc", self.url);
        let downloaded_signature = match (self.skip_verification, self.signature) {
            (false, None) => Some(
                http.download(&signature_url, &store.tmp_dir(), MAX_SIGNATURE_BYTES)?
                    .ok_or_else(|| FetchError::NoSignature {
                        image: self.url.to_string(),
                        looked_for: signature_url.clone(),
                    })?,
            ),
            _ => None,
        };
        let signature = self
            .signature
            .or(downloaded_signature.as_ref().map(|temp| temp.path()));
        let fetched = FileFetch {
            path: image.path(),
            signature,
            skip_verification: self.skip_verification,
            max_bytes: self.max_bytes,
            source: Some(self.url.to_string()),
        }
        .run(store, keystore)?;
        if let Some(fingerprint) = &fetched.signer {
            eprintln!("image: signature verified: key {fingerprint}");
        }
        Ok(fetched.id)
    }
}
