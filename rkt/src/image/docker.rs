//! Docker images: reading a `docker save` archive (once safely unpacked), and
//! mapping a Docker/OCI config to an appc app the way docker2aci did, so pods
//! and listings see one shape. The image itself stays in its native form.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use appc::ImageManifest;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::members::{ImageFiles, MemberError};
use super::oci::{
    sha256_digest, Descriptor, ImageConfig, LocalImage, Manifest, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_MANIFEST,
};
use super::reference::canonical_name;
use crate::extract::decompress::Compression;

/// One image in a `docker save` archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An image read from a `docker save` archive.
#[derive(Debug)]
pub struct SavedImage {
    pub image: LocalImage,
    /// The repository of the tag it was picked by (or of its first tag).
    pub repository: Option<String>,
    /// Every `RepoTags` entry of the image, as found (each a whole
    /// reference, still to be checked): `docker load` applies them all.
    pub repo_tags: Vec<String>,
}

/// Reads the image (the only one, or the one tagged `reference`, e.g.
/// `busybox:latest`, compared as Docker reads references, so
/// `debian-nginx:bookworm` also picks `docker.io/library/debian-nginx:bookworm`)
/// from an unpacked `docker save` archive. The manifest is synthesized in
/// OCI form so the store handles both alike.
pub fn read_saved(
    files: &mut dyn ImageFiles,
    reference: Option<&str>,
) -> Result<SavedImage, String> {
    let index_bytes = match files.read_json("manifest.json", "manifest.json") {
        Ok(bytes) => bytes,
        Err(MemberError::Missing { .. }) => {
            return Err("not a docker save archive (no manifest.json)".to_string())
        }
        Err(err) => return Err(err.to_string()),
    };
    let images: Vec<SavedEntry> = serde_json::from_slice(&index_bytes)
        .map_err(|err| format!("manifest.json is not valid: {err}"))?;
    let tags = |image: &SavedEntry| image.repo_tags.clone().unwrap_or_default();
    let same = |tag: &str, wanted: &str| {
        tag == wanted
            || matches!(
                (canonical_name(tag), canonical_name(wanted)),
                (Ok(a), Ok(b)) if a == b
            )
    };
    let saved = match reference {
        Some(reference) => images
            .iter()
            .find(|image| tags(image).iter().any(|t| same(t, reference)))
            .ok_or_else(|| format!("no image tagged {reference:?} in the archive"))?,
        None if images.len() == 1 => &images[0],
        None => {
            let all: Vec<String> = images.iter().flat_map(tags).collect();
            return Err(format!(
                "the archive holds {} images; pick one with docker-archive:PATH:REPO:TAG (tags: {})",
                images.len(),
                all.join(", ")
            ));
        }
    };
    let repo_tag = match reference {
        Some(reference) => tags(saved).into_iter().find(|t| same(t, reference)),
        None => tags(saved).into_iter().next(),
    };

    let config_bytes = files
        .read_json(&saved.config, "config")
        .map_err(|err| err.to_string())?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|err| format!("the image config is not valid: {err}"))?;

    let mut layers = Vec::new();
    super::oci::check_layer_count(saved.layers.len())?;
    for layer in &saved.layers {
        let (mut file, _) = files.open(layer, "layer").map_err(|err| err.to_string())?;
        let (digest, size, compression) =
            hash_file(&mut file).map_err(|err| format!("reading layer {layer}: {err}"))?;
        let media_type = match compression {
            Compression::Gzip => format!("{MEDIA_TYPE_OCI_LAYER}+gzip"),
            Compression::Zstd => format!("{MEDIA_TYPE_OCI_LAYER}+zstd"),
            _ => MEDIA_TYPE_OCI_LAYER.to_string(),
        };
        layers.push((
            Descriptor {
                media_type,
                digest,
                size,
                platform: None,
                annotations: BTreeMap::new(),
            },
            file,
        ));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
        config: Descriptor {
            media_type: MEDIA_TYPE_OCI_CONFIG.to_string(),
            digest: sha256_digest(&config_bytes),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers: layers.iter().map(|(d, _)| d.clone()).collect(),
    };
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|err| format!("encoding the manifest: {err}"))?;
    let (repository, tag) = match &repo_tag {
        Some(repo_tag) => split_repo_tag(repo_tag),
        None => (None, None),
    };
    Ok(SavedImage {
        image: LocalImage {
            manifest_bytes,
            manifest,
            config_bytes,
            config,
            layers,
            tag,
        },
        repository,
        repo_tags: tags(saved),
    })
}

/// `registry:5000/repo:tag` -> (`registry:5000/repo`, `tag`).
fn split_repo_tag(reference: &str) -> (Option<String>, Option<String>) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (Some(repo.to_string()), Some(tag.to_string())),
        _ => (Some(reference.to_string()), None),
    }
}

/// Hashes a layer (a member file the archive reader wrote, so bounded),
/// then rewinds it for the copy into the store.
fn hash_file(file: &mut File) -> io::Result<(String, u64, Compression)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut head = Vec::new();
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        if head.len() < 8 {
            head.extend_from_slice(&buffer[..n.min(8)]);
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok((
        format!("sha256:{}", hex::encode(hasher.finalize())),
        size,
        Compression::detect(&head),
    ))
}

/// Turns any string into an AC identifier (lowercase; other characters
/// become `-`).
pub fn sanitize_identifier(raw: &str) -> String {
    let mapped: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~/".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "image".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Turns a path into an AC name (`/var/tmp` -> `var-tmp`).
fn sanitize_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Docker's os/arch to appc's label values.
fn appc_arch(arch: &str, variant: Option<&str>) -> Option<&'static str> {
    Some(match (arch, variant) {
        ("amd64", _) => "amd64",
        ("386", _) => "i386",
        ("arm64", _) => "aarch64",
        ("arm", Some("v6")) => "armv6l",
        ("arm", _) => "armv7l",
        ("ppc64le", _) => "ppc64le",
        ("ppc64", _) => "ppc64",
        ("s390x", _) => "s390x",
        _ => return None,
    })
}

/// Where a Docker/OCI image came from, for its annotations.
pub struct Provenance<'a> {
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub repository: Option<&'a str>,
    pub manifest_digest: &'a str,
    pub config_digest: &'a str,
}

/// The appc manifest docker2aci would have written for this config
/// (RKT-REFERENCE.md section 6.2), validated.
pub fn appc_manifest(config: &ImageConfig, from: &Provenance<'_>) -> Result<ImageManifest, String> {
    let container = config.config.clone().unwrap_or_default();
    let entrypoint = container.entrypoint.clone().unwrap_or_default();
    let cmd = container.cmd.clone().unwrap_or_default();
    let exec: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();

    // docker2aci: "" -> 0:0, "u" -> u:u, "u:g" -> u:g.
    let user_spec = container.user.clone().unwrap_or_default();
    let (user, group) = match user_spec.split_once(':') {
        _ if user_spec.is_empty() => ("0".to_string(), "0".to_string()),
        Some((user, group)) => (user.to_string(), group.to_string()),
        None => (user_spec.clone(), user_spec.clone()),
    };

    let environment: Vec<serde_json::Value> = container
        .env
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => json!({"name": name, "value": value}),
            None => json!({"name": pair, "value": ""}),
        })
        .collect();

    let mut ports = Vec::new();
    for spec in container.exposed_ports.clone().unwrap_or_default().keys() {
        let (port, protocol) = spec.split_once('/').unwrap_or((spec.as_str(), "tcp"));
        let number: u16 = port
            .parse()
            .map_err(|_| format!("exposed port {spec:?} is not a port number"))?;
        ports.push(
            json!({"name": format!("{number}-{protocol}"), "protocol": protocol, "port": number}),
        );
    }

    let mut mount_points = Vec::new();
    let mut used_names: Vec<String> = Vec::new();
    for path in container.volumes.clone().unwrap_or_default().keys() {
        let base = format!("volume-{}", sanitize_name(path));
        let base = base.trim_end_matches('-').to_string();
        let mut name = base.clone();
        let mut n = 1;
        while used_names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        used_names.push(name.clone());
        mount_points.push(json!({"name": name, "path": path}));
    }

    let mut app = json!({
        "exec": exec,
        "user": user,
        "group": group,
        "environment": environment,
        "ports": ports,
        "mountPoints": mount_points,
        "userLabels": container.labels.clone().unwrap_or_default(),
    });
    if let Some(dir) = container.working_dir.as_deref().filter(|d| !d.is_empty()) {
        app["workingDirectory"] = json!(dir);
    }

    let mut labels = vec![];
    if let Some(tag) = from.tag {
        labels.push(json!({"name": "version", "value": tag}));
    }
    if config.os == "linux" {
        labels.push(json!({"name": "os", "value": "linux"}));
        if let Some(arch) = appc_arch(&config.architecture, config.variant.as_deref()) {
            labels.push(json!({"name": "arch", "value": arch}));
        }
    }

    let mut annotations = vec![
        json!({"name": "appc.io/docker/entrypoint", "value": serde_json::to_string(&entrypoint).unwrap_or_default()}),
        json!({"name": "appc.io/docker/cmd", "value": serde_json::to_string(&cmd).unwrap_or_default()}),
        json!({"name": "appc.io/docker/imageid", "value": from.config_digest}),
        json!({"name": "appc.io/docker/manifesthash", "value": from.manifest_digest}),
    ];
    if let Some(repository) = from.repository {
        annotations.push(json!({"name": "appc.io/docker/repository", "value": repository}));
    }
    if let Some(tag) = from.tag {
        annotations.push(json!({"name": "appc.io/docker/tag", "value": tag}));
    }
    if let Some(created) = &config.created {
        annotations.push(json!({"name": "created", "value": created}));
    }
    if let Some(author) = &config.author {
        annotations.push(json!({"name": "authors", "value": author}));
    }

    let manifest = json!({
        "acKind": "ImageManifest",
        "acVersion": appc::APPC_SPEC_VERSION,
        "name": sanitize_identifier(from.name),
        "labels": labels,
        "app": app,
        "annotations": annotations,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|err| err.to_string())?;
    ImageManifest::from_json(&bytes)
        .map_err(|err| format!("its config does not map to a valid app: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> ImageConfig {
        serde_json::from_value(json).unwrap()
    }

    fn provenance() -> Provenance<'static> {
        Provenance {
            name: "Registry:5000/Library/Web_App",
            tag: Some("1.0"),
            repository: Some("registry:5000/library/web_app"),
            manifest_digest: "sha256:aa",
            config_digest: "sha256:bb",
        }
    }

    #[test]
    fn maps_config_like_docker2aci() {
        let image = config(json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "User": "www:staff",
                "Env": ["PATH=/usr/bin:/bin", "EMPTY"],
                "Entrypoint": ["/entry"], "Cmd": ["--serve", "x"],
                "WorkingDir": "/srv",
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                "Volumes": {"/var/tmp": {}, "/var-tmp": {}},
                "Labels": {"maintainer": "me"}
            }
        }));
        let manifest = appc_manifest(&image, &provenance()).unwrap();
        assert_eq!(manifest.name.as_str(), "registry-5000/library/web_app");
        assert_eq!(manifest.labels.get("version"), Some("1.0"));
        assert_eq!(manifest.labels.get("arch"), Some("amd64"));
        let app = manifest.app.as_ref().unwrap();
        assert_eq!(app.exec, vec!["/entry", "--serve", "x"]);
        assert_eq!((app.user.as_str(), app.group.as_str()), ("www", "staff"));
        assert_eq!(app.environment[0].value, "/usr/bin:/bin");
        assert_eq!(app.environment[1].value, "");
        assert_eq!(app.working_directory.as_deref(), Some("/srv"));
        let ports: Vec<_> = app.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(ports, vec!["53-udp", "80-tcp"]);
        let volumes: Vec<_> = app.mount_points.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(volumes, vec!["volume-var-tmp", "volume-var-tmp-1"]);
        assert_eq!(
            app.user_labels.get("maintainer").map(String::as_str),
            Some("me")
        );
        assert_eq!(
            manifest.annotation("appc.io/docker/entrypoint"),
            Some("[\"/entry\"]")
        );
        assert_eq!(
            manifest.annotation("appc.io/docker/imageid"),
            Some("sha256:bb")
        );
    }

    #[test]
    fn user_defaults_and_single_user() {
        let root = appc_manifest(
            &config(json!({"os": "linux", "architecture": "arm64"})),
            &provenance(),
        )
        .unwrap();
        let app = root.app.unwrap();
        assert_eq!((app.user.as_str(), app.group.as_str()), ("0", "0"));
        assert_eq!(root.labels.get("arch"), Some("aarch64"));
        let single =
            appc_manifest(&config(json!({"config": {"User": "1000"}})), &provenance()).unwrap();
        let app = single.app.unwrap();
        assert_eq!((app.user.as_str(), app.group.as_str()), ("1000", "1000"));
    }

    #[test]
    fn repo_tags_split_at_the_last_colon_outside_the_registry() {
        assert_eq!(
            split_repo_tag("localhost:5000/x:v1"),
            (Some("localhost:5000/x".into()), Some("v1".into()))
        );
        assert_eq!(
            split_repo_tag("localhost:5000/x"),
            (Some("localhost:5000/x".into()), None)
        );
    }
}
