//! rkt's stage0 configuration beyond credentials: `paths.d/` (the data directory and the
//! default stage1 images directory) and `stage1.d/` (the default stage1 image), read from the
//! system, local and user configuration directories (later ones win), and the merged view
//! `rkt config` prints (with the `auth.d/` entries, see `fetch::auth`).
//!
//! ```json
//! {"rktKind": "paths", "rktVersion": "v1", "data": "/var/lib/rkt", "stage1-images": "/usr/lib/rkt"}
//! {"rktKind": "stage1", "rktVersion": "v1", "name": "coreos.com/rkt/stage1-kvm",
//!  "version": "0.1.0", "location": "/usr/lib/rkt/stage1-kvm.aci"}
//! ```
//!
//! As in rkt: only `*.json` regular files directly in the kind's directory are read (sorted by
//! name); each must carry `rktKind` and `rktVersion` (`v1`); a file of another kind in that
//! directory is an error naming it; inside one configuration directory a setting given twice
//! is an error; `data` must be absolute; a stage1 `name` needs a `version` and the reverse; a
//! stage1 `location` is an absolute path or a `file`, `docker`, `http` or `https` URL.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RktError;
use crate::fetch::auth::{AuthConfigs, Credentials};

/// The data directory when neither `--dir` nor `paths.d` name one.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rkt";

/// `paths.d/`: where rkt keeps its data and looks for stage1 images.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PathsConfig {
    pub data: Option<PathBuf>,
    pub stage1_images: Option<PathBuf>,
}

/// `stage1.d/`: the stage1 image used when no `--stage1-*` flag is given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stage1Config {
    /// Name and version, both or neither.
    pub name: Option<(String, String)>,
    pub location: Option<String>,
}

/// `paths.d/` and `stage1.d/` of every configuration directory, merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stage0Config {
    pub paths: PathsConfig,
    pub stage1: Stage1Config,
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "rktKind", default)]
    kind: String,
    #[serde(rename = "rktVersion", default)]
    version: String,
}

#[derive(Deserialize)]
struct PathsFile {
    #[serde(default)]
    data: String,
    #[serde(rename = "stage1-images", default)]
    stage1_images: String,
}

#[derive(Deserialize)]
struct Stage1File {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    location: String,
}

impl Stage0Config {
    /// Reads `paths.d/` and `stage1.d/` of each of `config_dirs` (lowest precedence first).
    pub fn load(config_dirs: &[&Path]) -> Result<Stage0Config, RktError> {
        let mut merged = Stage0Config::default();
        for dir in config_dirs {
            let one = Stage0Config::load_one(dir)?;
            if one.paths.data.is_some() {
                merged.paths.data = one.paths.data;
            }
            if one.paths.stage1_images.is_some() {
                merged.paths.stage1_images = one.paths.stage1_images;
            }
            if one.stage1.name.is_some() {
                merged.stage1.name = one.stage1.name;
            }
            if one.stage1.location.is_some() {
                merged.stage1.location = one.stage1.location;
            }
        }
        Ok(merged)
    }

    /// One configuration directory: a setting given twice in it is an error.
    fn load_one(dir: &Path) -> Result<Stage0Config, RktError> {
        let mut config = Stage0Config::default();
        for path in json_files(&dir.join("paths.d"), "paths")? {
            let shown = path.display().to_string();
            let file: PathsFile = parse(&path)?;
            let bad = |problem: &str| RktError::Message(format!("{shown}: {problem}"));
            if !file.data.is_empty() {
                if config.paths.data.is_some() {
                    return Err(bad("the data directory is already given in another file"));
                }
                if !Path::new(&file.data).is_absolute() {
                    return Err(bad("\"data\" must be an absolute path"));
                }
                config.paths.data = Some(PathBuf::from(file.data));
            }
            if !file.stage1_images.is_empty() {
                if config.paths.stage1_images.is_some() {
                    return Err(bad(
                        "the stage1 images directory is already given in another file",
                    ));
                }
                if !Path::new(&file.stage1_images).is_absolute() {
                    return Err(bad("\"stage1-images\" must be an absolute path"));
                }
                config.paths.stage1_images = Some(PathBuf::from(file.stage1_images));
            }
        }
        for path in json_files(&dir.join("stage1.d"), "stage1")? {
            let shown = path.display().to_string();
            let file: Stage1File = parse(&path)?;
            let bad = |problem: String| RktError::Message(format!("{shown}: {problem}"));
            match (file.name.is_empty(), file.version.is_empty()) {
                (true, true) => {}
                (false, false) => {
                    if config.stage1.name.is_some() {
                        return Err(bad(
                            "the default stage1 name and version are already given in another \
                             file"
                                .to_string(),
                        ));
                    }
                    config.stage1.name = Some((file.name, file.version));
                }
                (false, true) => {
                    return Err(bad(
                        "a default stage1 \"name\" needs its \"version\" too".to_string()
                    ))
                }
                (true, false) => {
                    return Err(bad(
                        "a default stage1 \"version\" needs its \"name\" too".to_string()
                    ))
                }
            }
            if !file.location.is_empty() {
                if config.stage1.location.is_some() {
                    return Err(bad(
                        "the default stage1 location is already given in another file".to_string(),
                    ));
                }
                check_location(&file.location).map_err(bad)?;
                config.stage1.location = Some(file.location);
            }
        }
        Ok(config)
    }
}

/// A stage1 location: an absolute path, or a URL of a scheme rkt can fetch a stage1 from.
fn check_location(location: &str) -> Result<(), String> {
    if location.starts_with('/') {
        return Ok(());
    }
    match location.split_once("://") {
        Some((scheme, _)) if ["file", "docker", "http", "https"].contains(&scheme) => Ok(()),
        Some((scheme, _)) => Err(format!(
            "the default stage1 location has the scheme {scheme:?}; use an absolute path or a \
             file, docker, http or https URL"
        )),
        None => Err(format!(
            "the default stage1 location {location:?} is neither an absolute path nor a URL"
        )),
    }
}

/// The `*.json` regular files directly in `dir` (none if it does not exist), sorted, each
/// checked to be of `kind`, version `v1`.
fn json_files(dir: &Path, kind: &str) -> Result<Vec<PathBuf>, RktError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(RktError::Io {
                context: format!("reading the configuration directory {}", dir.display()),
                source: err,
            })
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    for path in &paths {
        let header: Header = parse(path)?;
        let shown = path.display();
        if header.kind.is_empty() || header.version.is_empty() {
            return Err(RktError::Message(format!(
                "{shown}: a configuration file needs \"rktKind\" and \"rktVersion\""
            )));
        }
        if header.kind != kind {
            return Err(RktError::Message(format!(
                "{shown}: {} holds configuration of kind {kind:?}, not {:?}; move the file to \
                 the directory of its kind",
                dir.display(),
                header.kind
            )));
        }
        if header.version != "v1" {
            return Err(RktError::Message(format!(
                "{shown}: rktVersion {:?} is not supported; use \"v1\"",
                header.version
            )));
        }
    }
    Ok(paths)
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RktError> {
    let shown = path.display().to_string();
    let bytes = fs::read(path).map_err(RktError::io(format!("reading {shown}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|err| RktError::Message(format!("{shown} is not a valid rkt config: {err}")))
}

/// What `rkt config` prints: `{"stage0": [entries]}`, each entry a valid configuration file
/// of its kind, one per auth domain and per registry (as rkt printed them), then `paths` and
/// `stage1` with the values in effect.
#[derive(Serialize)]
pub struct Printed {
    pub stage0: Vec<Entry>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Entry {
    Auth {
        #[serde(rename = "rktVersion")]
        version: &'static str,
        #[serde(rename = "rktKind")]
        kind: &'static str,
        domains: Vec<String>,
        #[serde(rename = "type")]
        auth_type: String,
        credentials: serde_json::Value,
    },
    DockerAuth {
        #[serde(rename = "rktVersion")]
        version: &'static str,
        #[serde(rename = "rktKind")]
        kind: &'static str,
        registries: Vec<String>,
        credentials: Credentials,
    },
    Paths {
        #[serde(rename = "rktVersion")]
        version: &'static str,
        #[serde(rename = "rktKind")]
        kind: &'static str,
        data: String,
        #[serde(rename = "stage1-images")]
        stage1_images: String,
    },
    Stage1 {
        #[serde(rename = "rktVersion")]
        version: &'static str,
        #[serde(rename = "rktKind")]
        kind: &'static str,
        name: String,
        #[serde(rename = "version")]
        version_label: String,
        location: String,
    },
}

/// The values in effect, for [`printed`].
pub struct Effective<'a> {
    pub auth: &'a AuthConfigs,
    pub data_dir: &'a Path,
    pub stage1_images: &'a Path,
    pub stage1_name: &'a str,
    pub stage1_version: &'a str,
    pub stage1_location: &'a str,
}

pub fn printed(effective: &Effective<'_>) -> Printed {
    let mut stage0 = Vec::new();
    for (domain, entry) in &effective.auth.host_entries {
        stage0.push(Entry::Auth {
            version: "v1",
            kind: "auth",
            domains: vec![domain.clone()],
            auth_type: entry.auth_type.clone(),
            credentials: entry.credentials.clone(),
        });
    }
    for (registry, credentials) in effective.auth.docker.registries() {
        stage0.push(Entry::DockerAuth {
            version: "v1",
            kind: "dockerAuth",
            registries: vec![registry.to_string()],
            credentials: credentials.clone(),
        });
    }
    stage0.push(Entry::Paths {
        version: "v1",
        kind: "paths",
        data: effective.data_dir.display().to_string(),
        stage1_images: effective.stage1_images.display().to_string(),
    });
    stage0.push(Entry::Stage1 {
        version: "v1",
        kind: "stage1",
        name: effective.stage1_name.to_string(),
        version_label: effective.stage1_version.to_string(),
        location: effective.stage1_location.to_string(),
    });
    Printed { stage0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, relative: &str, text: &str) {
        let path = dir.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn later_directories_win_setting_by_setting() {
        let system = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        write(
            system.path(),
            "paths.d/paths.json",
            r#"{"rktKind":"paths","rktVersion":"v1","data":"/sys-data","stage1-images":"/sys-s1"}"#,
        );
        write(
            system.path(),
            "stage1.d/s.json",
            r#"{"rktKind":"stage1","rktVersion":"v1","name":"example.com/s1","version":"1",
                "location":"/sys-s1/s1.aci"}"#,
        );
        write(
            local.path(),
            "paths.d/paths.json",
            r#"{"rktKind":"paths","rktVersion":"v1","data":"/local-data"}"#,
        );
        write(
            user.path(),
            "stage1.d/s.json",
            r#"{"rktKind":"stage1","rktVersion":"v1","location":"https://example.com/s1.aci"}"#,
        );
        // Not read: not .json, and a subdirectory.
        write(local.path(), "paths.d/README", "notes");
        write(
            local.path(),
            "paths.d/sub/x.json",
            r#"{"rktKind":"paths","rktVersion":"v1","data":"/ignored"}"#,
        );
        let config = Stage0Config::load(&[system.path(), local.path(), user.path()]).unwrap();
        assert_eq!(config.paths.data, Some(PathBuf::from("/local-data")));
        assert_eq!(config.paths.stage1_images, Some(PathBuf::from("/sys-s1")));
        assert_eq!(
            config.stage1.name,
            Some(("example.com/s1".to_string(), "1".to_string()))
        );
        assert_eq!(
            config.stage1.location.as_deref(),
            Some("https://example.com/s1.aci")
        );
        // No directories at all: nothing configured.
        let none = Stage0Config::load(&[Path::new("/nonexistent/rkt-config")]).unwrap();
        assert_eq!(none, Stage0Config::default());
    }

    #[test]
    fn bad_files_are_named_with_the_problem() {
        for (relative, text, says) in [
            (
                "paths.d/a.json",
                r#"{"rktKind":"paths","rktVersion":"v1","data":"rel"}"#,
                "absolute",
            ),
            (
                "paths.d/a.json",
                r#"{"rktKind":"stage1","rktVersion":"v1"}"#,
                "kind \"paths\"",
            ),
            (
                "paths.d/a.json",
                r#"{"rktKind":"paths","rktVersion":"v2"}"#,
                "\"v2\"",
            ),
            ("paths.d/a.json", r#"{"rktKind":"paths"}"#, "rktVersion"),
            ("paths.d/a.json", "{", "not a valid rkt config"),
            (
                "stage1.d/a.json",
                r#"{"rktKind":"stage1","rktVersion":"v1","name":"n"}"#,
                "needs its \"version\"",
            ),
            (
                "stage1.d/a.json",
                r#"{"rktKind":"stage1","rktVersion":"v1","version":"1"}"#,
                "needs its \"name\"",
            ),
            (
                "stage1.d/a.json",
                r#"{"rktKind":"stage1","rktVersion":"v1","location":"s1.aci"}"#,
                "neither an absolute path",
            ),
            (
                "stage1.d/a.json",
                r#"{"rktKind":"stage1","rktVersion":"v1","location":"ftp://x/s1.aci"}"#,
                "\"ftp\"",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), relative, text);
            let err = Stage0Config::load(&[dir.path()]).unwrap_err().to_string();
            assert!(
                err.contains("a.json") && err.contains(says),
                "{text}: {err}"
            );
        }
        // The same setting twice in one directory.
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            write(
                dir.path(),
                &format!("paths.d/{name}.json"),
                r#"{"rktKind":"paths","rktVersion":"v1","data":"/d"}"#,
            );
        }
        let err = Stage0Config::load(&[dir.path()]).unwrap_err().to_string();
        assert!(
            err.contains("b.json") && err.contains("already given"),
            "{err}"
        );
    }

    #[test]
    fn printed_as_rkt_did_one_entry_per_domain_and_registry() {
        let system = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        write(
            system.path(),
            "auth.d/basic.json",
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["foo.com","bar.com"],"type":"basic",
                "credentials":{"user":"sysUser","password":"sysPassword"}}"#,
        );
        write(
            local.path(),
            "auth.d/basic.json",
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["foo.com"],"type":"oauth",
                "credentials":{"token":"someToken"}}"#,
        );
        write(
            local.path(),
            "auth.d/docker.json",
            r#"{"rktKind":"dockerAuth","rktVersion":"v1","registries":["quay.io"],
                "credentials":{"user":"u","password":"p"}}"#,
        );
        let auth = AuthConfigs::load_from(&[system.path(), local.path()]).unwrap();
        let printed = printed(&Effective {
            auth: &auth,
            data_dir: Path::new("/var/lib/rkt"),
            stage1_images: Path::new("/usr/lib/rkt"),
            stage1_name: "coreos.com/rkt/stage1-kvm",
            stage1_version: "0.1.0",
            stage1_location: "/usr/lib/rkt/stage1-kvm.aci",
        });
        let json = serde_json::to_value(&printed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"stage0": [
                {"rktVersion": "v1", "rktKind": "auth", "domains": ["bar.com"], "type": "basic",
                 "credentials": {"user": "sysUser", "password": "sysPassword"}},
                {"rktVersion": "v1", "rktKind": "auth", "domains": ["foo.com"], "type": "oauth",
                 "credentials": {"token": "someToken"}},
                {"rktVersion": "v1", "rktKind": "dockerAuth", "registries": ["quay.io"],
                 "credentials": {"user": "u", "password": "p"}},
                {"rktVersion": "v1", "rktKind": "paths", "data": "/var/lib/rkt",
                 "stage1-images": "/usr/lib/rkt"},
                {"rktVersion": "v1", "rktKind": "stage1", "name": "coreos.com/rkt/stage1-kvm",
                 "version": "0.1.0", "location": "/usr/lib/rkt/stage1-kvm.aci"}
            ]})
        );
        // The key order of each entry is rkt's.
        let text = serde_json::to_string(&printed).unwrap();
        assert!(
            text.starts_with(r#"{"stage0":[{"rktVersion":"v1","rktKind":"auth","domains":"#),
            "{text}"
        );
    }
}
