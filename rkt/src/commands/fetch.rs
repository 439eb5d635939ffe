//! `rkt fetch IMAGE...`: put images in the store and print their IDs.

use std::path::PathBuf;

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
use crate::fetch::{FetchError, ImageSource};
use crate::globals::GlobalOptions;
use appc::ImageId;

use crate::store::{LockMode, Store};
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PullPolicy {
    /// Fetch only images not in the store.
    New,
    /// Fetch from the source even if in the store (files are always read).
    Update,
    /// Never fetch; use the store only.
    Never,
}

/// The HTTP client, made on first use with the `auth` configs' credentials.
fn http_client<'a>(
    cell: &'a std::cell::OnceCell<Http>,
    globals: &GlobalOptions,
) -> Result<&'a Http, RktError> {
    if let Some(http) = cell.get() {
        return Ok(http);
    }
    let host_auth = HostAuth::load(&globals.local_config, &globals.system_config)?;
    let http = Http::new(globals.insecure.tls)?.with_host_auth(host_auth);
    Ok(cell.get_or_init(|| http))
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
    let keystore = Keystore::new(&globals.local_config, &globals.system_config);
    let http = std::cell::OnceCell::new();
    for image in &args.images {
        let id = match ImageSource::parse(image) {
            ImageSource::File(path) => {
                let fetched = FileFetch {
                    path: &path,
                    signature: args.signature.as_deref(),
                    skip_verification: globals.insecure.image,
                    max_bytes: args.max_image_size,
                    source: None,
                    expected: None,
                }
                .run(&store, &keystore)?;
                match &fetched.signer {
                    Some(fingerprint) => {
                        eprintln!("image: signature verified: key {fingerprint}")
                    }
                    None => eprintln!(
                        "image: signature verification skipped (--insecure-options=image)"
                    ),
                }
                fetched.id
            }
            ImageSource::Name(name) => match (store.resolve(&name), args.pull_policy) {
                (Ok(record), PullPolicy::New | PullPolicy::Never) => record.id,
                (Err(_), PullPolicy::Never) => {
                    return Err(FetchError::NotInStoreNever { image: name }.into())
                }
                _ => DiscoveryFetch {
                    name: &name,
                    signature: args.signature.as_deref(),
                    skip_verification: globals.insecure.image,
                    insecure_http: globals.insecure.http,
                    // Keys are only as good as the channel that brought them.
                    trust_keys_from_https: args.trust_keys_from_https
                        && !globals.insecure.http
                        && !globals.insecure.tls,
                    max_bytes: args.max_image_size,
                }
                .run(http_client(&http, globals)?, &store, &keystore)?,
            },
            ImageSource::LocalOci(kind, spec) => LocalOciFetch {
                kind,
                spec: &spec,
                insecure_image: globals.insecure.image,
                max_bytes: args.max_image_size,
            }
            .run(&store)?,
            ImageSource::Docker(spec) => match reuse(&store, image, args.pull_policy)? {
                Some(id) => id,
                None => DockerFetch {
                    spec: &spec,
                    auth: &DockerAuth::load(&globals.local_config, &globals.system_config)?,
                    insecure_image: globals.insecure.image,
                    insecure_http: globals.insecure.http,
                    max_bytes: args.max_image_size,
                }
                .run(http_client(&http, globals)?, &store)?,
            },
            ImageSource::Url(url) => match reuse(&store, image, args.pull_policy)? {
                Some(id) => id,
                None => RemoteAciFetch {
                    url: &url,
                    signature_url: None,
                    expected: None,
                    signature: args.signature.as_deref(),
                    skip_verification: globals.insecure.image,
                    max_bytes: args.max_image_size,
                }
                .run(http_client(&http, globals)?, &store, &keystore)?,
            },
        };
        if args.full {
            println!("{id}");
        } else {
            println!("sha512-{}", &id.hex()[..SHORT_ID_HEX]);
        }
    }
    Ok(())
}

/// For remote sources: the stored image fetched from `source` before, if the
/// pull policy says to use it instead of fetching again.
fn reuse(store: &Store, source: &str, policy: PullPolicy) -> Result<Option<ImageId>, RktError> {
    if policy == PullPolicy::Update {
        return Ok(None);
    }
    match store.find_by_source(source)? {
        Some(image) => Ok(Some(image.id)),
        None if policy == PullPolicy::Never => Err(FetchError::NotInStoreNever {
            image: source.to_string(),
        }
        .into()),
        None => Ok(None),
    }
}
