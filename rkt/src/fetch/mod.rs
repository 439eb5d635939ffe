//! Where images come from. `ImageSource::parse` reads an image argument the
//! way rkt did; each source kind has its fetcher module (`file` for ACIs,
//! `oci` for local Docker/OCI images, `remote_aci` for ACI URLs, `docker`
//! for registries).

pub mod auth;
pub mod discovery;
pub mod docker;
pub mod file;
pub mod http;
pub mod oci;
mod progress;
pub mod remote_aci;

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::RktError;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error(
        "{image}: no signature found (looked for {looked_for}); sign the image, point at its \
         signature with --signature=FILE, or skip the check with --insecure-options=image"
    )]
    NoSignature { image: String, looked_for: String },
    #[error(
        "{image} is not in the store and --pull-policy=never forbids fetching it{}",
        close(.suggestions)
    )]
    NotInStoreNever {
        image: String,
        suggestions: Vec<String>,
    },
    /// A name neither the store nor discovery knows.
    #[error("{error} ({hint})")]
    NotInStore {
        error: crate::store::StoreError,
        hint: String,
    },
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The store refused what was fetched (a layer the render refuses, a
    /// blob that is not what its digest says); nothing of it was stored.
    #[error("{image}: {error}")]
    Refused {
        image: String,
        #[source]
        error: crate::store::StoreError,
    },
    #[error(
        "{url}: the server answered in plain HTTP, not TLS; if this registry (or discovery \
         server) serves plain HTTP, pass --insecure-options=http (for an ACI URL, write it \
         with http://)"
    )]
    PlainHttpServer { url: String },
}

/// "; did you mean X?" when the store holds something close.
fn close(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!("; did you mean {one}?"),
        many => format!("; did you mean one of {}?", many.join(", ")),
    }
}

/// An image a fetch put in the store (or found there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub id: appc::ImageId,
    /// The name it was fetched or found under, if it has Docker-style names
    /// (the first, if it got several): where a pod's default app name comes
    /// from.
    pub name: Option<String>,
}

impl Fetched {
    /// An image known by ID only (an ACI, or one found by ID).
    pub fn id(id: appc::ImageId) -> Fetched {
        Fetched { id, name: None }
    }
}

/// Stores a staged Docker/OCI image under `names` (applying its layers; store::insert_oci) and
/// warns once about the device nodes the layers had and the tree left out. `source` is what
/// the store records it came from, `shown` how errors name it.
pub(crate) fn store_oci(
    store: &crate::store::Store,
    staged: crate::store::StagedOci,
    appc_manifest: &appc::ImageManifest,
    source: &str,
    shown: &str,
    names: Vec<String>,
    max_bytes: u64,
) -> Result<Fetched, FetchError> {
    let inserted = store
        .insert_oci(staged, appc_manifest, source, &names, max_bytes)
        .map_err(|error| FetchError::Refused {
            image: shown.to_string(),
            error,
        })?;
    if let Some(warning) = inserted.skipped_devices.warning(shown) {
        eprintln!("rkt: warning: {}", crate::terminal::escape(&warning));
    }
    Ok(Fetched {
        id: inserted.id,
        name: names.into_iter().next(),
    })
}

/// An image argument, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A local ACI file (`PATH`, `file://PATH`).
    File(PathBuf),
    /// An image name (`example.com/app[:version]`), resolved from the store
    /// or by appc discovery.
    Name(String),
    /// A local Docker or OCI image: the kind, and `PATH[:REF]`.
    LocalOci(oci::LocalKind, String),
    /// An image in a Docker registry: the part after `docker://`.
    Docker(String),
    /// An ACI at an http(s) URL.
    Url(String),
}

impl ImageSource {
    pub fn parse(argument: &str) -> ImageSource {
        if let Some(path) = argument.strip_prefix("file://") {
            return ImageSource::File(PathBuf::from(path));
        }
        for kind in [
            oci::LocalKind::DockerArchive,
            oci::LocalKind::OciArchive,
            oci::LocalKind::OciLayout,
        ] {
            if let Some(spec) = argument.strip_prefix(kind.prefix()) {
                return ImageSource::LocalOci(kind, spec.to_string());
            }
        }
        if let Some(spec) = argument.strip_prefix("docker://") {
            return ImageSource::Docker(spec.to_string());
        }
        if argument.starts_with("http://") || argument.starts_with("https://") {
            return ImageSource::Url(argument.to_string());
        }
        // rkt's rule: anything that looks like a path, or names an existing
        // file, is a file; the rest is an image name.
        let looks_like_path = argument.starts_with('/')
            || argument.starts_with("./")
            || argument.starts_with("../")
            || argument.ends_with(".aci");
        if looks_like_path || std::path::Path::new(argument).is_file() {
            ImageSource::File(PathBuf::from(argument))
        } else {
            ImageSource::Name(argument.to_string())
        }
    }
}

/// Opens a file a fetch reads (an archive, an ACI's signature), refusing
/// anything but a regular file: a FIFO there would hang the fetch, and
/// `O_NONBLOCK` keeps the open itself from blocking.
pub(crate) fn open_regular(path: &Path) -> Result<File, RktError> {
    let open_error = |source| FetchError::Open {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(open_error)?;
    let meta = file.metadata().map_err(open_error)?;
    if !meta.is_file() {
        return Err(RktError::Message(format!(
            "{} is not a regular file; give the archive as a file",
            path.display()
        )));
    }
    // A regular file's reads never block; clear the flag all the same.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|err| open_error(err.into()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_arguments_like_rkt() {
        assert_eq!(
            ImageSource::parse("file:///tmp/a.aci"),
            ImageSource::File("/tmp/a.aci".into())
        );
        assert_eq!(
            ImageSource::parse("./a.aci"),
            ImageSource::File("./a.aci".into())
        );
        assert_eq!(
            ImageSource::parse("busybox.aci"),
            ImageSource::File("busybox.aci".into())
        );
        assert_eq!(
            ImageSource::parse("example.com/app:1.0"),
            ImageSource::Name("example.com/app:1.0".into())
        );
        assert_eq!(
            ImageSource::parse("docker://busybox"),
            ImageSource::Docker("busybox".into())
        );
        assert_eq!(
            ImageSource::parse("oci:/x:latest"),
            ImageSource::LocalOci(oci::LocalKind::OciLayout, "/x:latest".into())
        );
        assert_eq!(
            ImageSource::parse("docker-archive:a.tar"),
            ImageSource::LocalOci(oci::LocalKind::DockerArchive, "a.tar".into())
        );
        assert_eq!(
            ImageSource::parse("https://e.com/a.aci"),
            ImageSource::Url("https://e.com/a.aci".into())
        );
    }
}
