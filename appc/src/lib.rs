//! appc schema types (appc/spec 0.8.11): the image manifest found at `/manifest`
//! inside an ACI, the pod manifest handed to stage1, and the small value types
//! both are built from.
//!
//! Parsing validates as it goes: every restricted string (identifiers, names,
//! image IDs, versions) is a newtype that refuses bad input while being
//! deserialized, and the cross-field rules (unique label names, os/arch pairs,
//! isolator values, absolute paths) run right after. Either way the error names
//! the JSON path of the offending field, e.g. `app.environment[2].name`, so a
//! user can find it in the manifest.

mod error;
mod image;
mod isolator;
mod pod;
mod types;

pub use error::ManifestError;
pub use image::{
    Annotation, App, Dependency, EventHandler, ImageManifest, MountPoint, Port, IMAGE_MANIFEST_KIND,
};
pub use isolator::Isolator;
pub use pod::{
    ImageRef, Mount, PodApp, PodManifest, PodPort, Volume, VolumeKind, POD_MANIFEST_KIND,
};
pub use types::{AcIdentifier, AcName, AcVersion, ImageId, Label, Labels, NameValue};

/// The appc spec version this crate writes into manifests it creates.
pub const APPC_SPEC_VERSION: &str = "0.8.11";
