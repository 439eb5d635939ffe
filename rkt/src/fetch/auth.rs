//! Credentials from rkt's configuration: JSON files in `auth.d/`
//! (`<system-config>/auth.d/*.json`, then `<local-config>/auth.d/*.json`, the
//! latter winning for a host named in both). Two kinds, as in rkt:
//!
//! ```json
//! {"rktKind": "dockerAuth", "rktVersion": "v1",
//!  "registries": ["quay.io", "registry-1.docker.io"],
//!  "credentials": {"user": "me", "password": "secret"}}
//!
//! {"rktKind": "auth", "rktVersion": "v1", "domains": ["example.com"],
//!  "type": "basic", "credentials": {"user": "me", "password": "secret"}}
//! {"rktKind": "auth", "rktVersion": "v1", "domains": ["example.com"],
//!  "type": "oauth", "credentials": {"token": "sometoken"}}
//! ```
//!
//! `dockerAuth` is for registries (`docker://`); `auth` adds an
//! `Authorization` header to every other http(s) request rkt makes to those
//! domains (ACI and signature downloads, discovery pages, keys).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::RktError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    rkt_kind: String,
    rkt_version: String,
    #[serde(default)]
    registries: Vec<String>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default, rename = "type")]
    auth_type: Option<String>,
    credentials: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

#[derive(Deserialize, Serialize)]
struct OauthCredentials {
    token: String,
}

impl Credentials {
    /// The `Authorization` header value for HTTP Basic auth.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// Credentials per registry host (`quay.io`, `127.0.0.1:5000`).
#[derive(Debug, Default)]
pub struct DockerAuth {
    by_registry: HashMap<String, Credentials>,
}

impl DockerAuth {
    /// From `auth.d/` of each of `config_dirs` (see [`AuthConfigs::load_from`]).
    pub fn load_from(config_dirs: &[&Path]) -> Result<DockerAuth, RktError> {
        Ok(AuthConfigs::load_from(config_dirs)?.docker)
    }

    pub fn for_registry(&self, registry: &str) -> Option<&Credentials> {
        self.by_registry.get(registry)
    }

    /// Every registry with its credentials, sorted by registry (for `rkt config`).
    pub fn registries(&self) -> Vec<(&str, &Credentials)> {
        let mut all: Vec<_> = self
            .by_registry
            .iter()
            .map(|(registry, credentials)| (registry.as_str(), credentials))
            .collect();
        all.sort_by_key(|(registry, _)| *registry);
        all
    }
}

/// `Authorization` header values per domain (`example.com`, or
/// `example.com:8080` for one port only), from `auth` configs.
#[derive(Debug, Default, Clone)]
pub struct HostAuth {
    by_domain: HashMap<String, String>,
}

impl HostAuth {
    /// From `auth.d/` of each of `config_dirs` (see [`AuthConfigs::load_from`]).
    pub fn load_from(config_dirs: &[&Path]) -> Result<HostAuth, RktError> {
        Ok(AuthConfigs::load_from(config_dirs)?.hosts)
    }

    /// The header for a URL's host: `host:port` first, then the bare host.
    pub fn header_for(&self, url: &str) -> Option<&str> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let host = uri.host()?;
        let with_port = uri.port_u16().map(|port| format!("{host}:{port}"));
        with_port
            .and_then(|key| self.by_domain.get(&key))
            .or_else(|| self.by_domain.get(host))
            .map(String::as_str)
    }
}

/// An `auth` entry as configured: its type and credentials, for `rkt config`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostEntry {
    /// `basic` or `oauth`.
    pub auth_type: String,
    /// `{"user", "password"}` or `{"token"}`.
    pub credentials: serde_json::Value,
}

/// Everything in the `auth.d/` directories.
#[derive(Debug, Default)]
pub struct AuthConfigs {
    pub docker: DockerAuth,
    pub hosts: HostAuth,
    /// The `auth` entries per domain, as configured (the last directory's wins).
    pub host_entries: BTreeMap<String, HostEntry>,
}

impl AuthConfigs {
    /// Reads `auth.d/` in each of `config_dirs`, later directories overriding earlier ones
    /// for the same domain or registry (rkt's order: system, local, user).
    pub fn load_from(config_dirs: &[&Path]) -> Result<AuthConfigs, RktError> {
        let mut configs = AuthConfigs::default();
        for config in config_dirs {
            configs.read_dir(&config.join("auth.d"))?;
        }
        Ok(configs)
    }

    fn read_dir(&mut self, dir: &Path) -> Result<(), RktError> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(()); // no auth.d: no credentials
        };
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let shown = path.display().to_string();
            let bytes = fs::read(&path).map_err(RktError::io(format!("reading {shown}")))?;
            let file: AuthFile = serde_json::from_slice(&bytes).map_err(|err| {
                RktError::Message(format!("{shown} is not a valid rkt auth config: {err}"))
            })?;
            if file.rkt_kind != "dockerAuth" && file.rkt_kind != "auth" {
                continue;
            }
            if file.rkt_version != "v1" {
                return Err(RktError::Message(format!(
                    "{shown}: rktVersion {:?} is not supported; use \"v1\"",
                    file.rkt_version
                )));
            }
            let bad = |problem: &str| RktError::Message(format!("{shown}: {problem}"));
            let credentials = file
                .credentials
                .ok_or_else(|| bad("the config needs \"credentials\""))?;
            if file.rkt_kind == "dockerAuth" {
                let credentials: Credentials = serde_json::from_value(credentials)
                    .map_err(|_| bad("dockerAuth credentials need \"user\" and \"password\""))?;
                for registry in file.registries {
                    self.docker
                        .by_registry
                        .insert(registry, credentials.clone());
                }
                continue;
            }
            let (header, shown_credentials) = match file.auth_type.as_deref() {
                Some("basic") => {
                    let basic = serde_json::from_value::<Credentials>(credentials)
                        .map_err(|_| bad("basic credentials need \"user\" and \"password\""))?;
                    (basic.basic_header(), serde_json::to_value(&basic))
                }
                Some("oauth") => {
                    let oauth: OauthCredentials = serde_json::from_value(credentials)
                        .map_err(|_| bad("oauth credentials need \"token\""))?;
                    (
                        format!("Bearer {}", oauth.token),
                        serde_json::to_value(&oauth),
                    )
                }
                other => {
                    return Err(bad(&format!(
                        "auth type {other:?} is not supported; use \"basic\" or \"oauth\""
                    )))
                }
            };
            let entry = HostEntry {
                auth_type: file.auth_type.unwrap_or_default(),
                credentials: shown_credentials.unwrap_or_default(),
            };
            for domain in file.domains {
                self.hosts.by_domain.insert(domain.clone(), header.clone());
                self.host_entries.insert(domain, entry.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_kind_gives_headers_per_domain() {
        let local = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        fs::create_dir(local.path().join("auth.d")).unwrap();
        fs::write(
            local.path().join("auth.d/basic.json"),
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["example.com","127.0.0.1:8080"],
                "type":"basic","credentials":{"user":"admin","password":"open sesame"}}"#,
        )
        .unwrap();
        fs::write(
            local.path().join("auth.d/oauth.json"),
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["tokens.example"],
                "type":"oauth","credentials":{"token":"t0k3n"}}"#,
        )
        .unwrap();
        let auth = HostAuth::load_from(&[system.path(), local.path()]).unwrap();
        assert_eq!(
            auth.header_for("https://example.com/a.aci"),
            Some("Basic YWRtaW46b3BlbiBzZXNhbWU=")
        );
        assert_eq!(
            auth.header_for("https://example.com:444/a.aci"),
            Some("Basic YWRtaW46b3BlbiBzZXNhbWU="),
            "a bare domain covers every port"
        );
        assert!(auth.header_for("http://127.0.0.1:8080/x").is_some());
        assert!(auth.header_for("http://127.0.0.1:8081/x").is_none());
        assert_eq!(
            auth.header_for("https://tokens.example/x?ac-discovery=1"),
            Some("Bearer t0k3n")
        );
        assert!(auth.header_for("https://other.example/").is_none());
        assert!(DockerAuth::load_from(&[system.path(), local.path()])
            .unwrap()
            .for_registry("example.com")
            .is_none());

        fs::write(
            local.path().join("auth.d/bad.json"),
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["x"],"type":"digest","credentials":{}}"#,
        )
        .unwrap();
        let err = HostAuth::load_from(&[system.path(), local.path()]).unwrap_err();
        assert!(
            err.to_string().contains("bad.json") && err.to_string().contains("\"digest\""),
            "{err}"
        );
    }

    #[test]
    fn local_config_overrides_system_config_and_other_kinds_are_skipped() {
        let local = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        for dir in [local.path(), system.path()] {
            fs::create_dir(dir.join("auth.d")).unwrap();
        }
        fs::write(
            system.path().join("auth.d/a.json"),
            r#"{"rktKind":"dockerAuth","rktVersion":"v1","registries":["quay.io","r.example"],
                "credentials":{"user":"vendor","password":"v"}}"#,
        )
        .unwrap();
        fs::write(
            local.path().join("auth.d/b.json"),
            r#"{"rktKind":"dockerAuth","rktVersion":"v1","registries":["quay.io"],
                "credentials":{"user":"admin","password":"open sesame"}}"#,
        )
        .unwrap();
        fs::write(
            local.path().join("auth.d/c.json"),
            r#"{"rktKind":"other","rktVersion":"v9"}"#,
        )
        .unwrap();
        let auth = DockerAuth::load_from(&[system.path(), local.path()]).unwrap();
        assert_eq!(auth.for_registry("quay.io").unwrap().user, "admin");
        assert_eq!(auth.for_registry("r.example").unwrap().user, "vendor");
        assert!(auth.for_registry("docker.io").is_none());
        assert_eq!(
            auth.for_registry("quay.io").unwrap().basic_header(),
            "Basic YWRtaW46b3BlbiBzZXNhbWU="
        );

        fs::write(local.path().join("auth.d/d.json"), "{").unwrap();
        let err = DockerAuth::load_from(&[system.path(), local.path()]).unwrap_err();
        assert!(err.to_string().contains("d.json"), "{err}");
    }
}
