//! `rkt fetch IMAGE...`: put images in the store and print their IDs.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::format::parse_size;
use crate::error::RktError;
use crate::extract::DEFAULT_MAX_BYTES;
use crate::fetch::auth::{DockerAuth, HostAuth};
use crate::fetch::docker::DockerFetch;
use crate::fetch::file::FileFetch;
use crate::fetch::http::Http;
use crate::fetch::oci::LocalOciFetch;
use crate::fetch::remote_aci::{DiscoveryFetch, RemoteAciFetch};
use crate::fetch::{FetchError, Fetched, ImageSource};
use crate::globals::GlobalOptions;
use appc::ImageId;

use crate::store::{LockMode, Matched, Store, StoreError};
use crate::trust::Keystore;

#[derive(Args)]
pub struct FetchArgs {
    /// Images: an ACI as PATH, file://PATH or http(s)://URL;
    /// docker://[REGISTRY/]REPO[:TAG|@DIGEST]; docker-archive:PATH[:REPO:TAG];
    /// oci:PATH[:TAG] or oci-archive:PATH[:TAG]; or an image NAME[:VERSION]
    /// (from the store, or found by appc meta discovery).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
    /// Local signature file for the image (default: IMAGE.asc next to it).
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    /// When to fetch an image already in the store.
    #[arg(long, value_enum, default_value = "update")]
    pull_policy: PullPolicy,
    /// Print the full image ID.
    #[arg(long)]
    full: bool,
    /// Refuse images that decompress to more than this (e.g. 512M, 8G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_MAX_BYTES)]
    max_image_size: u64,
    /// Trust, without asking, the keys an image's owner publishes
    /// (ac-discovery-pubkeys) when discovery runs over verified HTTPS and no
    /// key is trusted for the image's name yet.
    #[arg(long)]
    trust_keys_from_https: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Fetch only images not in the store.
    New,
    /// Fetch from the source even if in the store (files are always read).
    Update,
    /// Never fetch; use the store only.
    Never,
}

/// rkt prints IDs abbreviated to 32 hex digits unless `--full`.
const SHORT_ID_HEX: usize = 32;

pub fn run(globals: &GlobalOptions, args: FetchArgs) -> Result<(), RktError> {
    if args.signature.is_some() && args.images.len() > 1 {
        return Err(RktError::Message(
            "--signature applies to one image; fetch images with their own signatures one at a time"
                .to_string(),
        ));
    }
    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let fetcher = ImageFetcher::new(globals, &store, args.max_image_size)
        .trust_keys_from_https(args.trust_keys_from_https);
    for image in &args.images {
        let id = fetcher.fetch(image, args.signature.as_deref(), args.pull_policy)?;
        if args.full {
            println!("{id}");
        } else {
            println!("sha512-{}", &id.hex()[..SHORT_ID_HEX]);
        }
    }
    Ok(())
}

/// Gets images into the store from any source `ImageSource` knows, as
/// `rkt fetch` does; `prepare` and `run` use it for their images and stage1.
pub struct ImageFetcher<'a> {
    globals: &'a GlobalOptions,
    store: &'a Store,
    keystore: Keystore,
    http: std::cell::OnceCell<Http>,
    max_bytes: u64,
    trust_keys_from_https: bool,
}

impl<'a> ImageFetcher<'a> {
    pub fn new(globals: &'a GlobalOptions, store: &'a Store, max_bytes: u64) -> Self {
        ImageFetcher {
            globals,
            store,
            keystore: Keystore::new(&globals.local_config, &globals.system_config),
            http: std::cell::OnceCell::new(),
            max_bytes,
            trust_keys_from_https: false,
        }
    }

    /// Whether the user chose to skip image signature checks (`--insecure-options=image`).
    pub fn skips_image_verification(&self) -> bool {
        self.globals.insecure.image
    }

    pub fn trust_keys_from_https(mut self, trust: bool) -> Self {
        self.trust_keys_from_https = trust;
        self
    }

    /// Fetches `image` (or finds it in the store, as `policy` allows) and
    /// returns its ID.
    pub fn fetch(
        &self,
        image: &str,
        signature: Option<&Path>,
        policy: PullPolicy,
    ) -> Result<ImageId, RktError> {
        self.fetch_named(image, signature, policy)
            .map(|fetched| fetched.id)
    }

    /// [`fetch`](Self::fetch), also saying which Docker-style name the image
    /// was fetched or found under.
    pub fn fetch_named(
        &self,
        image: &str,
        signature: Option<&Path>,
        policy: PullPolicy,
    ) -> Result<Fetched, RktError> {
        self.fetch_any(image, signature, policy, self.globals.insecure.image)
    }

    /// As [`fetch`](Self::fetch), but a local ACI file is taken without a
    /// signature check when `trusted_file` (rkt's rule for the default
    /// stage1 installed beside the binary).
    pub fn fetch_checked(
        &self,
        image: &str,
        signature: Option<&Path>,
        policy: PullPolicy,
        skip_file_verification: bool,
    ) -> Result<ImageId, RktError> {
        self.fetch_any(image, signature, policy, skip_file_verification)
            .map(|fetched| fetched.id)
    }

    fn fetch_any(
        &self,
        image: &str,
        signature: Option<&Path>,
        policy: PullPolicy,
        skip_file_verification: bool,
    ) -> Result<Fetched, RktError> {
        let globals = self.globals;
        let store = self.store;
        let keystore = &self.keystore;
        let http = &self.http;
        Ok(match ImageSource::parse(image) {
            ImageSource::File(path) => {
                let fetched = FileFetch {
                    path: &path,
                    signature,
                    skip_verification: skip_file_verification,
                    max_bytes: self.max_bytes,
                    source: None,
                    expected: None,
                }
                .run(store, keystore)?;
                match &fetched.signer {
                    Some(fingerprint) => {
                        eprintln!("image: signature verified: key {fingerprint}")
                    }
                    None if globals.insecure.image => eprintln!(
                        "image: signature verification skipped (--insecure-options=image)"
                    ),
                    None => {}
                }
                Fetched::id(fetched.id)
            }
            ImageSource::Name(name) => match (store.lookup(&name), policy) {
                // A Docker/OCI image's name, or an ID: the store's own
                // names, with nothing to discover.
                (Ok((record, Matched::Name(found))), _) => Fetched {
                    id: record.id,
                    name: Some(found),
                },
                (Ok((record, Matched::Id)), _) => Fetched::id(record.id),
                (Ok((record, Matched::AppcName)), PullPolicy::New | PullPolicy::Never) => {
                    Fetched::id(record.id)
                }
                (Err(StoreError::NotFound { suggestions, .. }), PullPolicy::Never) => {
                    return Err(FetchError::NotInStoreNever {
                        image: name,
                        suggestions,
                    }
                    .into())
                }
                // `debian-nginx`: no domain to run appc discovery on, so a
                // Docker user's short name that is not in the store.
                (Err(error @ StoreError::NotFound { .. }), _) if !discoverable(&name) => {
                    return Err(FetchError::NotInStore {
                        error,
                        hint: format!(
                            "to pull it from a registry: rkt fetch --insecure-options=image \
                             docker://{name}"
                        ),
                    }
                    .into())
                }
                (Err(StoreError::NotFound { .. }), _) | (Ok(_), _) => {
                    let discovered = DiscoveryFetch {
                        name: &name,
                        signature,
                        skip_verification: globals.insecure.image,
                        insecure_http: globals.insecure.http,
                        // Keys are only as good as the channel that brought them.
                        trust_keys_from_https: self.trust_keys_from_https
                            && !globals.insecure.http
                            && !globals.insecure.tls,
                        max_bytes: self.max_bytes,
                    }
                    .run(http_client(http, globals)?, store, keystore);
                    match discovered {
                        Ok(id) => Fetched::id(id),
                        // Discovery found nothing, but the store holds
                        // something close: say both.
                        Err(failed) => match store.close_matches(&name)? {
                            suggestions if suggestions.is_empty() => return Err(failed),
                            suggestions => {
                                return Err(FetchError::NotInStore {
                                    error: StoreError::NotFound {
                                        reference: name.clone(),
                                        suggestions,
                                    },
                                    hint: format!("appc discovery: {failed}"),
                                }
                                .into())
                            }
                        },
                    }
                }
                (Err(error), _) => return Err(error.into()),
            },
            ImageSource::LocalOci(kind, spec) => LocalOciFetch {
                kind,
                spec: &spec,
                insecure_image: globals.insecure.image,
                max_bytes: self.max_bytes,
            }
            .run(store)?,
            ImageSource::Docker(spec) => match reuse(store, image, policy)? {
                Some(found) => found,
                None => DockerFetch {
                    spec: &spec,
                    auth: &DockerAuth::load_from(&globals.config_dirs())?,
                    insecure_image: globals.insecure.image,
                    insecure_http: globals.insecure.http,
                    max_bytes: self.max_bytes,
                }
                .run(http_client(http, globals)?, store)?,
            },
            ImageSource::Url(url) => match reuse(store, image, policy)? {
                Some(found) => found,
                None => Fetched::id(
                    RemoteAciFetch {
                        url: &url,
                        signature_url: None,
                        expected: None,
                        signature,
                        skip_verification: globals.insecure.image,
                        max_bytes: self.max_bytes,
                    }
                    .run(http_client(http, globals)?, store, keystore)?,
                ),
            },
        })
    }
}

/// Whether appc discovery can look `name` (`NAME[:VERSION]`) up: its first
/// path component must be a host, with a dot (`example.com/app`,
/// `127.0.0.1/app`) or `localhost`. A Docker short name (`nginx`,
/// `someone/tool`) is not.
fn discoverable(name: &str) -> bool {
    let name = name.split_once(':').map_or(name, |(name, _)| name);
    let host = name.split('/').next().unwrap_or(name);
    host.contains('.') || host == "localhost"
}

/// The HTTP client, made on first use with the `auth` configs' credentials.
fn http_client<'a>(
    cell: &'a std::cell::OnceCell<Http>,
    globals: &GlobalOptions,
) -> Result<&'a Http, RktError> {
    if let Some(http) = cell.get() {
        return Ok(http);
    }
    let host_auth = HostAuth::load_from(&globals.config_dirs())?;
    let http = Http::new(globals.insecure.tls)?.with_host_auth(host_auth);
    Ok(cell.get_or_init(|| http))
}

/// For remote sources: the stored image fetched from `source` before, if the
/// pull policy says to use it instead of fetching again: by the name a
/// `docker://` reference gives it (whatever it was fetched from first), else
/// by the source recorded for it.
fn reuse(store: &Store, source: &str, policy: PullPolicy) -> Result<Option<Fetched>, RktError> {
    if policy == PullPolicy::Update {
        return Ok(None);
    }
    if source.starts_with("docker://") {
        if let Ok((record, Matched::Name(name))) = store.lookup(source) {
            return Ok(Some(Fetched {
                id: record.id,
                name: Some(name),
            }));
        }
    }
    match store.find_by_source(source)? {
        Some(image) => Ok(Some(Fetched::id(image.id))),
        None if policy == PullPolicy::Never => Err(FetchError::NotInStoreNever {
            image: source.to_string(),
            suggestions: store.close_matches(source)?,
        }
        .into()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_with_a_host_are_discoverable() {
        for name in [
            "example.com/app",
            "127.0.0.1/busybox-test:1.0",
            "localhost/x",
            "a.b",
        ] {
            assert!(discoverable(name), "{name}");
        }
        for name in [
            "debian-nginx",
            "debian-nginx:bookworm",
            "someone/tool:1",
            "localhostx/y",
        ] {
            assert!(!discoverable(name), "{name}");
        }
    }
}
