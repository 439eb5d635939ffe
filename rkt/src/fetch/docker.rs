//! `docker://[REGISTRY/]REPO[:TAG|@DIGEST]`: pulling from a registry over the
//! Docker Registry HTTP API v2 (the OCI distribution API), with bearer-token
//! or Basic auth (credentials from `auth.d`, see `auth`), manifest lists / OCI indexes narrowed to linux/amd64, and Docker
//! schema 2 or OCI manifests. Layers stream straight into the store's sha256
//! blob area, checked against their digests; the image is then stored
//! natively, like a local OCI image.

use std::collections::BTreeMap;

use super::auth::{Credentials, DockerAuth};
use super::http::{Http, HttpResponse};
use super::Fetched;
use crate::error::RktError;
use crate::image::docker::{appc_manifest, Provenance};
use crate::image::oci::{
    self, sha256_digest, ImageConfig, Index, Manifest, MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::image::reference;
use crate::store::{StagedOci, Store};

const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_TYPE_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";
/// What we can read, most specific first.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
use crate::image::members::MAX_JSON_BYTES;

/// A parsed `docker://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRef {
    pub registry: String,
    pub repository: String,
    /// A tag, or a digest (`sha256:...`).
    pub reference: String,
    pub is_digest: bool,
}

impl DockerRef {
    /// Parses `[REGISTRY/]REPO[:TAG|@DIGEST]` by the Docker reference
    /// grammar (`image::reference`): the first path component is a registry
    /// if it has a `.` or `:` or is `localhost`; Docker Hub names without a
    /// `/` live under `library/`. Only sha256 digests can be checked.
    pub fn parse(spec: &str) -> Result<DockerRef, String> {
        let bad = |why: &str| format!("docker://{spec}: {why}");
        let parsed = reference::parse(spec).map_err(|err| bad(&err.to_string()))?;
        let (reference, is_digest) = match (parsed.digest, parsed.tag) {
            (Some(digest), _) => {
                oci::sha256_hex(&digest).map_err(|e| bad(&e))?;
                (digest, true)
            }
            (None, Some(tag)) => (tag, false),
            (None, None) => ("latest".to_string(), false),
        };
        Ok(DockerRef {
            registry: parsed.registry,
            repository: parsed.repository,
            reference,
            is_digest,
        })
    }
}

/// The parts of a `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="...",service="...",scope="..."`.
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let rest = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut params = BTreeMap::new();
    let mut remaining = rest.trim();
    while !remaining.is_empty() {
        let (key, after_key) = remaining.split_once('=')?;
        let after_key = after_key.trim_start();
        let (value, after_value) = if let Some(quoted) = after_key.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after_key.find(',').unwrap_or(after_key.len());
            (&after_key[..end], &after_key[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        remaining = after_value
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    let realm = params.remove("realm")?;
    Some(BearerChallenge { realm, params })
}

struct Registry<'a> {
    http: &'a Http,
    base: String,
    repository: String,
    /// From `auth.d` (dockerAuth), if configured for this registry.
    credentials: Option<&'a Credentials>,
    /// The `Authorization` value once a challenge was answered.
    authorization: Option<String>,
}

impl Registry<'_> {
    /// GET with auth: on a 401 challenge, answer it once (a bearer token
    /// from the token service, with Basic credentials if configured; or
    /// Basic credentials directly) and retry.
    fn get(&mut self, path: &str, accept: &str) -> Result<HttpResponse, RktError> {
        let url = format!("{}/v2/{}/{}", self.base, self.repository, path);
        let response = self.send(&url, accept)?;
        if response.status().as_u16() != 401 || self.authorization.is_some() {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let needs_credentials = || {
            RktError::Message(format!(
                "{url}: the registry wants credentials; add a dockerAuth config for it in \
                 <local-config>/auth.d/ (see docs/images.md)"
            ))
        };
        if challenge
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("basic")
        {
            let credentials = self.credentials.ok_or_else(needs_credentials)?;
            self.authorization = Some(credentials.basic_header());
            let retried = self.send(&url, accept)?;
            if retried.status().as_u16() == 401 {
                return Err(RktError::Message(format!(
                    "{url}: the registry refused the configured credentials"
                )));
            }
            return Ok(retried);
        }
        let challenge = parse_bearer_challenge(&challenge).ok_or_else(needs_credentials)?;
        let mut token_url = challenge.realm.clone();
        let query: Vec<String> = challenge
            .params
            .iter()
            .filter(|(k, _)| k.as_str() == "service" || k.as_str() == "scope")
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        if !query.is_empty() {
            token_url.push(if token_url.contains('?') { '&' } else { '?' });
            token_url.push_str(&query.join("&"));
        }
        let basic = self.credentials.map(Credentials::basic_header);
        let headers: Vec<(&str, &str)> = basic
            .as_deref()
            .map(|value| vec![("Authorization", value)])
            .unwrap_or_default();
        let token_response = self.http.get(&token_url, &headers)?;
        match token_response.status().as_u16() {
            200 => {}
            401 | 403 if self.credentials.is_none() => return Err(needs_credentials()),
            status => {
                return Err(RktError::Message(format!(
                    "{token_url}: the token service answered HTTP {status}"
                )))
            }
        }
        let body = Http::read_small(token_response, &token_url, MAX_JSON_BYTES)?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|err| RktError::Message(format!("{token_url}: bad token answer: {err}")))?;
        let token = json
            .get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| RktError::Message(format!("{token_url}: the answer has no token")))?;
        self.authorization = Some(format!("Bearer {token}"));
        self.send(&url, accept)
    }

    fn send(&self, url: &str, accept: &str) -> Result<HttpResponse, RktError> {
        let mut headers = vec![("Accept", accept)];
        if let Some(value) = &self.authorization {
            headers.push(("Authorization", value.as_str()));
        }
        self.http.get(url, &headers)
    }

    fn expect_ok(&self, response: &HttpResponse, what: &str) -> Result<(), RktError> {
        match response.status().as_u16() {
            200 => Ok(()),
            404 => Err(RktError::Message(format!(
                "{}/{}: {what} not found in the registry (HTTP 404)",
                self.base, self.repository
            ))),
            status => Err(RktError::Message(format!(
                "{}/{}: fetching {what}, the registry answered HTTP {status}",
                self.base, self.repository
            ))),
        }
    }

    /// Fetches a manifest (or index) by tag or digest; returns its bytes and media type.
    fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String), RktError> {
        let response = self.get(&format!("manifests/{reference}"), ACCEPT_MANIFESTS)?;
        self.expect_ok(&response, &format!("manifest {reference}"))?;
        let header_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let bytes = Http::read_small(response, reference, MAX_JSON_BYTES)?;
        let body_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            });
        let media_type = body_type.or(header_type).unwrap_or_default();
        Ok((bytes, media_type))
    }

    fn blob_small(&mut self, digest: &str) -> Result<Vec<u8>, RktError> {
        let response = self.get(&format!("blobs/{digest}"), "*/*")?;
        self.expect_ok(&response, &format!("blob {digest}"))?;
        let bytes = Http::read_small(response, digest, MAX_JSON_BYTES)?;
        if sha256_digest(&bytes) != digest {
            return Err(RktError::Message(format!(
                "blob {digest} from {} does not match its digest",
                self.base
            )));
        }
        Ok(bytes)
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub struct DockerFetch<'a> {
    /// The argument after `docker://`.
    pub spec: &'a str,
    /// Registry credentials from `auth.d`.
    pub auth: &'a DockerAuth,
    pub insecure_image: bool,
    /// `--insecure-options=http`: talk plain HTTP to the registry.
    pub insecure_http: bool,
    pub max_bytes: u64,
}

impl DockerFetch<'_> {
    pub fn run(&self, http: &Http, store: &Store) -> Result<Fetched, RktError> {
        let shown = format!("docker://{}", self.spec);
        if !self.insecure_image {
            return Err(RktError::Message(format!(
                "{shown}: signature verification for Docker images is not supported; \
                 pass --insecure-options=image to fetch it unverified"
            )));
        }
        let image_ref = DockerRef::parse(self.spec).map_err(RktError::Message)?;
        let scheme = if self.insecure_http { "http" } else { "https" };
        let mut registry = Registry {
            http,
            base: format!("{scheme}://{}", image_ref.registry),
            repository: image_ref.repository.clone(),
            credentials: self.auth.for_registry(&image_ref.registry),
            authorization: None,
        };
        let bad = |problem: String| RktError::Message(format!("{shown}: {problem}"));

        let (mut bytes, mut media_type) = registry.manifest(&image_ref.reference)?;
        if image_ref.is_digest && sha256_digest(&bytes) != image_ref.reference {
            return Err(bad(
                "the manifest does not match the requested digest".to_string()
            ));
        }
        if media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST {
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("bad image index: {e}")))?;
            let chosen = oci::pick_platform(&index).map_err(&bad)?.clone();
            oci::sha256_hex(&chosen.digest).map_err(&bad)?;
            (bytes, media_type) = registry.manifest(&chosen.digest)?;
            if sha256_digest(&bytes) != chosen.digest {
                return Err(bad(format!(
                    "manifest {} does not match its digest",
                    chosen.digest
                )));
            }
        }
        if media_type.starts_with(MEDIA_TYPE_DOCKER_SCHEMA1) {
            return Err(bad(
                "the registry only offers a Docker schema 1 manifest, which is not supported; \
                 push the image again with a current Docker or skopeo"
                    .to_string(),
            ));
        }
        if media_type != MEDIA_TYPE_OCI_MANIFEST && media_type != MEDIA_TYPE_DOCKER_MANIFEST {
            return Err(bad(format!("unsupported manifest type {media_type:?}")));
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("bad manifest: {e}")))?;
        // Digests go into URLs and file names: check them before any use.
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            oci::sha256_hex(&descriptor.digest).map_err(&bad)?;
        }
        let config_bytes = registry.blob_small(&manifest.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("bad image config: {e}")))?;

        oci::check_layer_count(manifest.layers.len()).map_err(&bad)?;
        // One budget for the whole image: each layer's declared size is
        // checked before its download starts, and the download is cut off
        // at that size.
        let mut remaining = self.max_bytes;
        let mut layers = Vec::new();
        for (index, layer) in manifest.layers.iter().enumerate() {
            if layer.size > remaining {
                return Err(bad(format!(
                    "layer {} ({} bytes) would take the image past the {} MiB limit; if it \
                     really is that big, raise it with --max-image-size",
                    layer.digest,
                    layer.size,
                    self.max_bytes >> 20
                )));
            }
            let response = registry.get(&format!("blobs/{}", layer.digest), "*/*")?;
            registry.expect_ok(&response, &format!("layer {}", layer.digest))?;
            let label = format!(
                "layer {}/{} {}",
                index + 1,
                manifest.layers.len(),
                &layer.digest[..19.min(layer.digest.len())]
            );
            let mut body = Http::stream(response, &label, layer.size.saturating_add(1));
            // Staged, not stored: the layers are applied before anything of
            // the image enters the store (`Store::insert_oci`).
            let staged = store.stage_sha256_blob(&layer.digest, &mut body, layer.size)?;
            remaining -= staged.size.min(remaining);
            layers.push(staged);
        }

        let name = format!("{}/{}", image_ref.registry, image_ref.repository);
        let tag = (!image_ref.is_digest).then_some(image_ref.reference.as_str());
        let manifest_digest = sha256_digest(&bytes);
        let appc = appc_manifest(
            &config,
            &Provenance {
                name: &name,
                tag,
                repository: Some(&name),
                manifest_digest: &manifest_digest,
                config_digest: &manifest.config.digest,
            },
        )
        .map_err(&bad)?;
        let image = StagedOci {
            manifest_bytes: bytes,
            manifest,
            config_bytes,
            config,
            layers,
        };
        // Its name as Docker spells it in full (`docker.io/library/nginx:1.25`).
        let names: Vec<String> = reference::canonical_name(self.spec).into_iter().collect();
        Ok(super::store_oci(
            store,
            image,
            &appc,
            &shown,
            &shown,
            names,
            self.max_bytes,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_like_docker() {
        let hub = DockerRef::parse("busybox").unwrap();
        assert_eq!(
            (
                hub.registry.as_str(),
                hub.repository.as_str(),
                hub.reference.as_str()
            ),
            (reference::DOCKER_HUB, "library/busybox", "latest")
        );
        let user = DockerRef::parse("someone/tool:1.2").unwrap();
        assert_eq!(
            (user.repository.as_str(), user.reference.as_str()),
            ("someone/tool", "1.2")
        );
        let local = DockerRef::parse("127.0.0.1:5000/test/busybox:1.0").unwrap();
        assert_eq!(
            (
                local.registry.as_str(),
                local.repository.as_str(),
                local.reference.as_str()
            ),
            ("127.0.0.1:5000", "test/busybox", "1.0")
        );
        let port_no_tag = DockerRef::parse("localhost:5000/x").unwrap();
        assert_eq!(
            (
                port_no_tag.registry.as_str(),
                port_no_tag.reference.as_str()
            ),
            ("localhost:5000", "latest")
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = DockerRef::parse(&format!("quay.io/x/y@{digest}")).unwrap();
        assert!(pinned.is_digest);
        assert_eq!(pinned.reference, digest);
        assert!(DockerRef::parse("Busybox").is_err());
        assert!(DockerRef::parse("x@sha256:short").is_err());
    }

    #[test]
    fn parses_bearer_challenges() {
        let challenge = parse_bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(challenge.realm, "https://auth.docker.io/token");
        assert_eq!(challenge.params["service"], "registry.docker.io");
        assert_eq!(challenge.params["scope"], "repository:library/busybox:pull");
        assert!(parse_bearer_challenge("Basic realm=\"x\"").is_none());
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
