//! Fetching Docker and OCI images from local files: `docker-archive:PATH`
//! (`docker save`), `oci:PATH` (an OCI layout directory) and
//! `oci-archive:PATH` (a tar of one). Their files are read through
//! `image::members`, which never follows a link nor opens anything but a
//! regular file, and bounds what it copies by `--max-image-size`.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::{FetchError, Fetched};
use crate::error::RktError;
use crate::extract::decompress::decompress;
use crate::image::docker::{self, Provenance};
use crate::image::members::{ArchiveMembers, ImageFiles, LayoutDir};
use crate::image::oci::{self, LocalImage};
use crate::image::reference;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    DockerArchive,
    OciLayout,
    OciArchive,
}

impl LocalKind {
    pub fn prefix(self) -> &'static str {
        match self {
            LocalKind::DockerArchive => "docker-archive:",
            LocalKind::OciLayout => "oci:",
            LocalKind::OciArchive => "oci-archive:",
        }
    }
}

/// Splits `PATH[:REF]`: the longest prefix that exists on disk is the path.
pub fn split_path_and_reference(spec: &str) -> (PathBuf, Option<String>) {
    if Path::new(spec).exists() {
        return (PathBuf::from(spec), None);
    }
    for (index, _) in spec.match_indices(':') {
        let (path, rest) = (&spec[..index], &spec[index + 1..]);
        if Path::new(path).exists() {
            return (PathBuf::from(path), Some(rest.to_string()));
        }
    }
    (PathBuf::from(spec), None)
}

pub struct LocalOciFetch<'a> {
    pub kind: LocalKind,
    /// The argument without its `docker-archive:`/`oci:`/`oci-archive:` prefix.
    pub spec: &'a str,
    /// `--insecure-options=image`; required, as in rkt.
    pub insecure_image: bool,
    pub max_bytes: u64,
}

impl LocalOciFetch<'_> {
    pub fn run(&self, store: &Store) -> Result<Fetched, RktError> {
        let shown = format!("{}{}", self.kind.prefix(), self.spec);
        if !self.insecure_image {
            return Err(RktError::Message(format!(
                "{shown}: signature verification for Docker and OCI images is not supported; \
                 pass --insecure-options=image to fetch it unverified"
            )));
        }
        let (path, reference) = split_path_and_reference(self.spec);
        let bad = |problem: String| RktError::Message(format!("{shown}: {problem}"));

        // Every file comes through `members`: opened as a regular file or
        // refused, and (for archives) copied within the size budget.
        let mut files: Box<dyn ImageFiles> = match self.kind {
            LocalKind::OciLayout => {
                Box::new(LayoutDir::open(&path).map_err(|source| FetchError::Open {
                    path: path.display().to_string(),
                    source,
                })?)
            }
            LocalKind::DockerArchive | LocalKind::OciArchive => {
                let file = super::open_regular(&path)?;
                let stream = decompress(BufReader::with_capacity(256 * 1024, file))
                    .map_err(RktError::io(format!("reading {}", path.display())))?;
                Box::new(
                    ArchiveMembers::read(stream, &store.tmp_dir(), self.max_bytes)
                        .map_err(|err| bad(err.to_string()))?,
                )
            }
        };

        // Where the image says it is from: a docker-archive's RepoTags, or
        // an OCI ref.name that is a whole reference rather than a tag.
        let (mut image, mut repository, references): (LocalImage, Option<String>, Vec<String>) =
            match self.kind {
                LocalKind::DockerArchive => {
                    let saved =
                        docker::read_saved(files.as_mut(), reference.as_deref()).map_err(bad)?;
                    (saved.image, saved.repository, saved.repo_tags)
                }
                LocalKind::OciLayout | LocalKind::OciArchive => (
                    oci::read_layout(files.as_mut(), reference.as_deref()).map_err(bad)?,
                    None,
                    Vec::new(),
                ),
            };
        // The repository and tags come from inside the image and become its
        // names, `version` label and annotations: only what the Docker
        // reference grammar allows.
        if let Some(repository) = &repository {
            reference::check_repository(repository).map_err(|err| bad(err.to_string()))?;
        }
        for tag in &references {
            reference::parse(tag).map_err(|err| bad(err.to_string()))?;
        }
        let mut references = references;
        if let Some(tag) = image.tag.clone() {
            reference::check_ref_name(&tag).map_err(|err| bad(err.to_string()))?;
            if reference::check_tag(&tag).is_err() {
                // A whole reference (`docker.io/library/nginx:1.25`): its
                // repository names the image, its tag is the version.
                let parsed = reference::parse(&tag).map_err(|err| bad(err.to_string()))?;
                repository = Some(parsed.repository_name());
                image.tag = parsed.tag.clone();
                references.push(tag);
            }
        }
        let name = match &repository {
            Some(repository) => repository.clone(),
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().trim_end_matches(".tar").to_string())
                .unwrap_or_else(|| "image".to_string()),
        };
        let manifest_digest = oci::sha256_digest(&image.manifest_bytes);
        let appc_manifest = docker::appc_manifest(
            &image.config,
            &Provenance {
                name: &name,
                tag: image.tag.as_deref(),
                repository: repository.as_deref(),
                manifest_digest: &manifest_digest,
                config_digest: &image.manifest.config.digest,
            },
        )
        .map_err(bad)?;
        let source = format!(
            "{}{}",
            self.kind.prefix(),
            std::path::absolute(&path).unwrap_or(path.clone()).display()
        );
        let tag = if references.is_empty() {
            image.tag.clone()
        } else {
            None
        };
        let names = crate::image::names::local(&source, &references, tag.as_deref());
        let staged = store.stage_local(image, &source, self.max_bytes)?;
        Ok(super::store_oci(
            store,
            staged,
            &appc_manifest,
            &source,
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
    fn splits_paths_from_references_by_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("img");
        std::fs::create_dir(&layout).unwrap();
        let base = layout.to_str().unwrap();
        assert_eq!(split_path_and_reference(base), (layout.clone(), None));
        assert_eq!(
            split_path_and_reference(&format!("{base}:latest")),
            (layout.clone(), Some("latest".to_string()))
        );
        assert_eq!(
            split_path_and_reference(&format!("{base}:busybox:1.36")),
            (layout.clone(), Some("busybox:1.36".to_string()))
        );
    }
}
