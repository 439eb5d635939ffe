//! OCI image format (image-spec v1) and Docker schema 2, which shares its
//! shape: JSON types for index, manifest and config (serde does the parsing),
//! and reading an image out of an OCI layout directory.
//!
//! Stored natively, not converted to an ACI: the store keeps the manifest,
//! config and layer blobs under their sha256 digests and applies the layers
//! in order (with whiteouts) when rendering. The config is mapped to an appc
//! app (see `docker::appc_manifest`) only so pods and listings see one shape.

use std::collections::BTreeMap;
use std::fs::File;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::members::{ImageFiles, MemberError};

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// The tag annotation in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config rkt uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// The config's record of the layers' uncompressed contents: `diff_ids[i]`
/// is the sha256 of layer i's tar after decompression.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A digest as `sha256:<hex>`, checked.
pub fn sha256_hex(digest: &str) -> Result<&str, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest:?} is not sha256, the only algorithm supported"))?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex)
    } else {
        Err(format!("digest {digest:?} is not sha256:<64 hex digits>"))
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An image read out of a layout or archive, not yet in the store: JSON
/// documents in memory, layers as files already opened (as regular files,
/// see `members`) to copy in.
#[derive(Debug)]
pub struct LocalImage {
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
    /// Each layer's descriptor and the file holding its (maybe compressed) tar.
    pub layers: Vec<(Descriptor, File)>,
    /// The tag it was selected by, if any.
    pub tag: Option<String>,
}

/// Where a blob lives in an OCI layout.
fn blob_member(descriptor: &Descriptor) -> Result<String, String> {
    Ok(format!("blobs/sha256/{}", sha256_hex(&descriptor.digest)?))
}

/// Reads a JSON blob from an OCI layout (capped), checking its digest.
fn read_json_blob(
    files: &mut dyn ImageFiles,
    descriptor: &Descriptor,
    role: &'static str,
) -> Result<Vec<u8>, String> {
    let bytes = files
        .read_json(&blob_member(descriptor)?, role)
        .map_err(|err| err.to_string())?;
    if sha256_digest(&bytes) != descriptor.digest {
        return Err(format!(
            "blob {} does not match its digest (corrupt or truncated)",
            descriptor.digest
        ));
    }
    Ok(bytes)
}

/// Most layers an image may have: each is an open file while it is stored
/// and an extraction pass when it is rendered. Docker itself stops at 127.
pub const MAX_LAYERS: usize = 1000;

pub fn check_layer_count(count: usize) -> Result<(), String> {
    if count > MAX_LAYERS {
        return Err(format!(
            "the image has {count} layers; at most {MAX_LAYERS} are accepted"
        ));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|err| format!("{what} is not valid: {err}"))
}

/// Picks the linux/amd64 entry of a multi-platform index.
pub fn pick_platform(index: &Index) -> Result<&Descriptor, String> {
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .ok_or_else(|| {
            let offered: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            format!(
                "the image has no linux/amd64 variant (it offers: {})",
                offered.join(", ")
            )
        })
}

/// Reads the image tagged `tag` (or the only one) from an OCI layout directory.
pub fn read_layout(files: &mut dyn ImageFiles, tag: Option<&str>) -> Result<LocalImage, String> {
    match files.read_json("oci-layout", "oci-layout marker") {
        Ok(_) => {}
        Err(MemberError::Missing { .. }) => {
            return Err("not an OCI image layout (no oci-layout file)".to_string())
        }
        Err(err) => return Err(err.to_string()),
    }
    let index_bytes = files
        .read_json("index.json", "index")
        .map_err(|err| err.to_string())?;
    let index: Index = parse(&index_bytes, "index.json")?;
    let tag_of = |d: &Descriptor| d.annotations.get(REF_NAME).cloned();
    let chosen = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|d| tag_of(d).as_deref() == Some(tag))
            .ok_or_else(|| {
                let tags: Vec<String> = index.manifests.iter().filter_map(tag_of).collect();
                format!(
                    "no image tagged {tag:?} in the layout (tags: {})",
                    tags.join(", ")
                )
            })?,
        None if index.manifests.len() == 1 => &index.manifests[0],
        None => {
            let tags: Vec<String> = index.manifests.iter().filter_map(tag_of).collect();
            return Err(format!(
                "the layout holds {} images; pick one with oci:PATH:TAG (tags: {})",
                index.manifests.len(),
                tags.join(", ")
            ));
        }
    };
    let chosen_tag = tag.map(str::to_string).or_else(|| tag_of(chosen));
    let mut descriptor = chosen.clone();
    if descriptor.media_type == MEDIA_TYPE_OCI_INDEX
        || descriptor.media_type == MEDIA_TYPE_DOCKER_LIST
    {
        let nested: Index = parse(
            &read_json_blob(files, &descriptor, "index")?,
            "the image index",
        )?;
        descriptor = pick_platform(&nested)?.clone();
    }
    let manifest_bytes = read_json_blob(files, &descriptor, "manifest")?;
    let manifest: Manifest = parse(&manifest_bytes, "the image manifest")?;
    let config_bytes = read_json_blob(files, &manifest.config, "config")?;
    let config: ImageConfig = parse(&config_bytes, "the image config")?;
    check_layer_count(manifest.layers.len())?;
    let mut layers = Vec::new();
    for layer in &manifest.layers {
        let (file, _) = files
            .open(&blob_member(layer)?, "layer")
            .map_err(|err| err.to_string())?;
        layers.push((layer.clone(), file));
    }
    Ok(LocalImage {
        manifest_bytes,
        manifest,
        config_bytes,
        config,
        layers,
        tag: chosen_tag,
    })
}
