//! Where images come from. `ImageSource::parse` reads an image argument the
//! way rkt did; each source kind has its fetcher module (`file` for ACIs,
//! `oci` for local Docker/OCI images).

pub mod file;
pub mod oci;

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error(
        "{kind} images ({image}) are not supported yet; fetch an ACI file (PATH or file://PATH), \
         docker-archive:PATH, oci:PATH or oci-archive:PATH instead"
    )]
    Unsupported { kind: &'static str, image: String },
    #[error(
        "{image}: no signature found (looked for {looked_for}); sign the image, point at its \
         signature with --signature=FILE, or skip the check with --insecure-options=image"
    )]
    NoSignature { image: String, looked_for: String },
    #[error(
        "{image} is not in the store and discovery by name is not supported yet; fetch it from \
         a file (PATH or file://PATH)"
    )]
    DiscoveryUnsupported { image: String },
    #[error("{image} is not in the store and --pull-policy=never forbids fetching it")]
    NotInStoreNever { image: String },
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
    /// A kind recognised but not fetchable yet (`docker://`, http(s)).
    Unsupported(&'static str),
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
        for (prefix, kind) in [
            ("docker://", "docker://"),
            ("http://", "http(s)"),
            ("https://", "http(s)"),
        ] {
            if argument.starts_with(prefix) {
                return ImageSource::Unsupported(kind);
            }
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
            ImageSource::Unsupported("docker://")
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
            ImageSource::Unsupported("http(s)")
        );
    }
}
