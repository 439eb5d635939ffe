//! Registry credentials from rkt's configuration: `dockerAuth` files in
//! `auth.d/` (`<system-config>/auth.d/*.json`, then `<local-config>/auth.d/*.json`,
//! the latter winning for a registry named in both):
//!
//! ```json
//! {"rktKind": "dockerAuth", "rktVersion": "v1",
//!  "registries": ["quay.io", "registry-1.docker.io"],
//!  "credentials": {"user": "me", "password": "secret"}}
//! ```
//!
//! Files of other kinds (`auth` for ACI hosts) are skipped for now.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;

use crate::error::RktError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    rkt_kind: String,
    rkt_version: String,
    #[serde(default)]
    registries: Vec<String>,
    credentials: Option<Credentials>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
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
    pub fn load(local_config: &Path, system_config: &Path) -> Result<DockerAuth, RktError> {
        let mut auth = DockerAuth::default();
        for config in [system_config, local_config] {
            auth.read_dir(&config.join("auth.d"))?;
        }
        Ok(auth)
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
            if file.rkt_kind != "dockerAuth" {
                continue;
            }
            if file.rkt_version != "v1" {
                return Err(RktError::Message(format!(
                    "{shown}: rktVersion {:?} is not supported; use \"v1\"",
                    file.rkt_version
                )));
            }
            let credentials = file.credentials.ok_or_else(|| {
                RktError::Message(format!(
                    "{shown}: a dockerAuth config needs \"credentials\""
                ))
            })?;
            for registry in file.registries {
                self.by_registry.insert(registry, credentials.clone());
            }
        }
        Ok(())
    }

    pub fn for_registry(&self, registry: &str) -> Option<&Credentials> {
        self.by_registry.get(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["x"],"type":"basic"}"#,
        )
        .unwrap();
        let auth = DockerAuth::load(local.path(), system.path()).unwrap();
        assert_eq!(auth.for_registry("quay.io").unwrap().user, "admin");
        assert_eq!(auth.for_registry("r.example").unwrap().user, "vendor");
        assert!(auth.for_registry("docker.io").is_none());
        assert_eq!(
            auth.for_registry("quay.io").unwrap().basic_header(),
            "Basic YWRtaW46b3BlbiBzZXNhbWU="
        );

        fs::write(local.path().join("auth.d/d.json"), "{").unwrap();
        let err = DockerAuth::load(local.path(), system.path()).unwrap_err();
        assert!(err.to_string().contains("d.json"), "{err}");
    }
}
