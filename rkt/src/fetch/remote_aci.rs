//! Fetching an ACI by http(s) URL, with its signature at `URL.asc` (or
//! `--signature`): both are downloaded into the store's temp dir, then handled
//! exactly like a local file.

use std::path::Path;

use appc::ImageId;

use super::file::{FileFetch, MAX_SIGNATURE_BYTES};
use super::http::Http;
use super::FetchError;
use crate::error::RktError;
use crate::store::Store;
use crate::trust::Keystore;

pub struct RemoteAciFetch<'a> {
    pub url: &'a str,
    /// Where the signature is, if not `URL.asc` (discovery says).
    pub signature_url: Option<&'a str>,
    /// Name and version the image must have (found by discovery).
    pub expected: Option<(&'a str, Option<&'a str>)>,
    pub signature: Option<&'a Path>,
    pub skip_verification: bool,
    pub max_bytes: u64,
}

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
        let signature_url = self
            .signature_url
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}.asc", self.url));
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
            expected: self.expected,
        }
        .run(store, keystore)?;
        if let Some(fingerprint) = &fetched.signer {
            eprintln!("image: signature verified: key {fingerprint}");
        }
        Ok(fetched.id)
    }
}

/// Fetches `NAME[:VERSION]` found by appc meta discovery (linux/amd64).
pub struct DiscoveryFetch<'a> {
    pub name: &'a str,
    pub signature: Option<&'a Path>,
    pub skip_verification: bool,
    /// `--insecure-options=http`: discover over plain HTTP.
    pub insecure_http: bool,
    /// `--trust-keys-from-https` (only set when discovery is over HTTPS
    /// with certificates checked): trust the published keys if none are.
    pub trust_keys_from_https: bool,
    pub max_bytes: u64,
}

/// Discovery pages are small.
const MAX_DISCOVERY_PAGE: u64 = 1024 * 1024;

impl DiscoveryFetch<'_> {
    pub fn run(
        &self,
        http: &Http,
        store: &Store,
        keystore: &Keystore,
    ) -> Result<ImageId, RktError> {
        let (name, version) = match self.name.split_once(':') {
            Some((name, version)) => (name, Some(version)),
            None => (self.name, None),
        };
        let identifier = appc::AcIdentifier::try_from(name).map_err(|problem| {
            RktError::Message(format!("{:?} is not an image name: {problem}", self.name))
        })?;
        let labels = std::collections::BTreeMap::from([
            ("version", version.unwrap_or("latest").to_string()),
            ("os", "linux".to_string()),
            ("arch", "amd64".to_string()),
        ]);
        let scheme = if self.insecure_http { "http" } else { "https" };
        let mut last_problem = None;
        let endpoints = super::discovery::discover(name, &labels, scheme, |url| {
            match http.get(url, &[]) {
                Ok(response) if response.status().as_u16() == 200 => {
                    Http::read_small(response, url, MAX_DISCOVERY_PAGE)
                        .ok()
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                }
                Ok(response) => {
                    last_problem = Some(format!("{url}: HTTP {}", response.status().as_u16()));
                    None
                }
                Err(err) => {
                    last_problem = Some(err.to_string());
                    None
                }
            }
        })
        .ok_or_else(|| {
            RktError::Message(format!(
                "{}: appc discovery found no ac-discovery meta tag for it{}; fetch it by URL or path instead",
                self.name,
                last_problem.map(|p| format!(" (last: {p})")).unwrap_or_default()
            ))
        })?;
        if self.trust_keys_from_https && !self.skip_verification {
            self.trust_published_keys(&identifier, http, keystore)?;
        }
        RemoteAciFetch {
            url: &endpoints.aci,
            signature_url: Some(&endpoints.signature),
            expected: Some((name, version)),
            signature: self.signature,
            skip_verification: self.skip_verification,
            max_bytes: self.max_bytes,
        }
        .run(http, store, keystore)
    }
}

impl DiscoveryFetch<'_> {
    /// Adds the keys `name`'s owner publishes over HTTPS to the keys trusted
    /// for `name`, unless some key already is: a key the user chose is
    /// never overridden by what a server says.
    fn trust_published_keys(
        &self,
        identifier: &appc::AcIdentifier,
        http: &Http,
        keystore: &Keystore,
    ) -> Result<(), RktError> {
        if !keystore.keys_for(identifier)?.is_empty() {
            return Ok(());
        }
        let name = identifier.as_str();
        let keys =
            super::discovery::discover_pubkeys(name, "https", |url| match http.get(url, &[]) {
                Ok(response) if response.status().as_u16() == 200 => {
                    Http::read_small(response, url, MAX_DISCOVERY_PAGE)
                        .ok()
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            });
        for url in keys.iter().filter(|url| url.starts_with("https://")) {
            let response = http.get(url, &[])?;
            if response.status().as_u16() != 200 {
                return Err(RktError::Message(format!(
                    "fetching key {url}: the server answered HTTP {}",
                    response.status().as_u16()
                )));
            }
            let bytes = Http::read_small(response, url, MAX_DISCOVERY_PAGE)?;
            let (info, path) = keystore.add(Some(name), &bytes, url)?;
            eprintln!(
                "Trusting {url} (fingerprint {}) for prefix {name:?} (--trust-keys-from-https); \
                 added at {}",
                info.fingerprint,
                path.display()
            );
        }
        Ok(())
    }
}
