//! HTTP(S) access for fetchers: one agent, status codes handled by the
//! caller, bodies bounded, and downloads streamed into the store's temp dir.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use tempfile::NamedTempFile;
use ureq::http::Response;
use ureq::Body;

use super::auth::HostAuth;
use super::progress::ProgressReader;
use super::FetchError;
use crate::error::RktError;

pub struct Http {
    agent: ureq::Agent,
    /// Credentials from `auth` configs, added to requests that carry no
    /// `Authorization` header of their own.
    host_auth: HostAuth,
}

/// A response whose status the caller looks at.
pub type HttpResponse = Response<Body>;

impl Http {
    /// `insecure_tls`: accept any certificate (`--insecure-options=tls`).
    /// Servers are checked against the bundled Mozilla roots, or, when
    /// `SSL_CERT_FILE` names a PEM file, against the certificates in it
    /// instead (as OpenSSL-based tools do; a private CA, or a test's own).
    pub fn new(insecure_tls: bool) -> Result<Http, RktError> {
        let mut tls = ureq::tls::TlsConfig::builder().disable_verification(insecure_tls);
        if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
            tls = tls.root_certs(read_root_certs(Path::new(&path))?);
        }
        let tls = tls.build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .tls_config(tls)
            .user_agent(concat!("rkt/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Http {
            agent: config.into(),
            host_auth: HostAuth::default(),
        })
    }

    /// Sends `auth`-config credentials to the domains they name.
    pub fn with_host_auth(self, host_auth: HostAuth) -> Http {
        Http { host_auth, ..self }
    }

    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, RktError> {
        let mut request = self.agent.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let has_own_auth = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        if !has_own_auth {
            if let Some(value) = self.host_auth.header_for(url) {
                request = request.header("Authorization", value);
            }
        }
        request.call().map_err(|err| {
            if answered_in_plain_http(&err) {
                FetchError::PlainHttpServer {
                    url: url.to_string(),
                }
                .into()
            } else {
                RktError::Message(format!("fetching {url}: {err}"))
            }
        })
    }

    /// Reads a small body (a manifest, a token) whole.
    pub fn read_small(response: HttpResponse, url: &str, limit: u64) -> Result<Vec<u8>, RktError> {
        let mut bytes = Vec::new();
        response
            .into_body()
            .into_with_config()
            .limit(limit)
            .reader()
            .read_to_end(&mut bytes)
            .map_err(|err| RktError::Message(format!("reading {url}: {err}")))?;
        Ok(bytes)
    }

    /// The body as a stream capped at `limit` bytes, with a progress line.
    pub fn stream(response: HttpResponse, label: &str, limit: u64) -> impl Read {
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let reader = response
            .into_body()
            .into_with_config()
            .limit(limit)
            .reader();
        ProgressReader::new(reader, label, total)
    }

    /// Downloads `url` into a new temporary file under `dir`. `Ok(None)` on 404.
    pub fn download(
        &self,
        url: &str,
        dir: &Path,
        limit: u64,
    ) -> Result<Option<NamedTempFile>, RktError> {
        let response = self.get(url, &[])?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status @ (401 | 403) => {
                return Err(RktError::Message(format!(
                    "fetching {url}: the server answered HTTP {status}; if it needs credentials, \
                     add an \"auth\" config for its host in auth.d/ of --local-config"
                )))
            }
            status => {
                return Err(RktError::Message(format!(
                    "fetching {url}: the server answered HTTP {status}"
                )))
            }
        }
        let mut temp = tempfile::Builder::new()
            .prefix("download-")
            .tempfile_in(dir)
            .map_err(RktError::io("creating a temporary file in the store"))?;
        let label = url.rsplit('/').next().unwrap_or(url).to_string();
        let mut body = Self::stream(response, &label, limit);
        io::copy(&mut body, &mut temp)
            .and_then(|_| temp.flush())
            .map_err(|err| RktError::Message(format!("downloading {url}: {err}")))?;
        Ok(Some(temp))
    }
}

/// Whether a TLS handshake failed because the server answered in plain
/// HTTP: the first byte of `HTTP/1.1 400 ...` read as a TLS record's
/// content type, which rustls reports as an invalid one (as an error of its
/// own, or inside the I/O error of the stream that read it).
fn answered_in_plain_http(err: &ureq::Error) -> bool {
    let is_it = |tls: &rustls::Error| {
        matches!(
            tls,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        )
    };
    match err {
        ureq::Error::Rustls(tls) => is_it(tls),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(is_it),
        _ => false,
    }
}

/// The certificates of a PEM bundle, as the only roots to trust.
fn read_root_certs(path: &Path) -> Result<ureq::tls::RootCerts, RktError> {
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(RktError::io(format!("reading SSL_CERT_FILE {shown}")))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(err) => {
                return Err(RktError::Message(format!(
                    "SSL_CERT_FILE {shown} is not a PEM certificate bundle: {err}"
                )))
            }
        }
    }
    if certs.is_empty() {
        return Err(RktError::Message(format!(
            "SSL_CERT_FILE {shown} holds no certificates; point it at a PEM bundle or unset it"
        )));
    }
    Ok(ureq::tls::RootCerts::from(certs))
}
