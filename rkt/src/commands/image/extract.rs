//! `rkt image extract IMAGE DIR`: the image's own files, no dependencies.

use std::io::BufReader;
use std::path::PathBuf;

use clap::Args;

use super::clear_destination;
use crate::error::RktError;
use crate::extract::{extract_new, ExtractOptions};
use crate::globals::GlobalOptions;
use crate::store::{ImageFormat, ImageRecord, LockMode, Store};

#[derive(Args)]
pub struct ExtractArgs {
    #[arg(value_name = "IMAGE")]
    image: String,
    #[arg(value_name = "DIR")]
    dest: PathBuf,
    /// Replace DIR if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Only the rootfs, without the manifest.
    #[arg(long)]
    rootfs_only: bool,
}

pub fn run(globals: &GlobalOptions, args: ExtractArgs) -> Result<(), RktError> {
    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let image = store.resolve(&args.image)?;
    clear_destination(&args.dest, args.overwrite)?;
    if image.format == ImageFormat::Oci {
        return extract_layers(&store, &image, &args);
    }
    let blob = BufReader::with_capacity(256 * 1024, store.open_blob(&image.id)?);
    let trusted = nix::unistd::geteuid().is_root() && image.signature_verified;
    let options = ExtractOptions {
        subtree: args.rootfs_only.then(|| PathBuf::from("rootfs")),
        max_bytes: u64::MAX, // checked when fetched
        allow_devices: trusted,
        keep_setid_bits: trusted,
        set_owners: nix::unistd::geteuid().is_root(),
        overlay: false,
        whiteouts: false,
    };
    extract_new(blob, &args.dest, &options)?;
    Ok(())
}

/// A Docker/OCI image's layers applied in order (its "own files"), with the
/// derived appc manifest unless `--rootfs-only`.
fn extract_layers(store: &Store, image: &ImageRecord, args: &ExtractArgs) -> Result<(), RktError> {
    let parent = match args.dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let shown = args.dest.display().to_string();
    let staging = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(&parent)
        .map_err(RktError::io(format!(
            "creating a directory in {}",
            parent.display()
        )))?;
    let rootfs = if args.rootfs_only {
        staging.path().to_path_buf()
    } else {
        std::fs::write(staging.path().join("manifest"), &image.manifest_bytes)
            .map_err(RktError::io(format!("writing {shown}/manifest")))?;
        let rootfs = staging.path().join("rootfs");
        std::fs::create_dir(&rootfs).map_err(RktError::io(format!("creating {shown}/rootfs")))?;
        rootfs
    };
    store.unpack_into(image, &rootfs)?;
    std::fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(RktError::io(format!("setting the mode of {shown}")))?;
    let staged = staging.keep();
    std::fs::rename(&staged, &args.dest).map_err(|err| {
        let _ = std::fs::remove_dir_all(&staged);
        RktError::io(format!("moving the extracted tree to {shown}"))(err)
    })
}
