//! `rkt image extract IMAGE DIR`: the image's own files, no dependencies.

use std::io::BufReader;
use std::path::PathBuf;

use super::{build_dir_atomically, clear_destination, ImageToDirArgs};
use crate::error::RktError;
use crate::extract::{extract_new, DevicePolicy, ExtractOptions};
use crate::globals::GlobalOptions;
use crate::store::{ImageFormat, ImageRecord, LockMode, Store};

pub fn run(globals: &GlobalOptions, args: ImageToDirArgs) -> Result<(), RktError> {
    let mut store = Store::open(&globals.dir, LockMode::Shared)?;
    store.set_max_image_size(args.max_image_size);
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
        devices: if trusted {
            DevicePolicy::Create
        } else {
            DevicePolicy::Refuse
        },
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
fn extract_layers(
    store: &Store,
    image: &ImageRecord,
    args: &ImageToDirArgs,
) -> Result<(), RktError> {
    let shown = args.dest.display().to_string();
    build_dir_atomically(&args.dest, "extract", "extracted tree", |staging| {
        let rootfs = if args.rootfs_only {
            staging.to_path_buf()
        } else {
            std::fs::write(staging.join("manifest"), &image.manifest_bytes)
                .map_err(RktError::io(format!("writing {shown}/manifest")))?;
            let rootfs = staging.join("rootfs");
            std::fs::create_dir(&rootfs)
                .map_err(RktError::io(format!("creating {shown}/rootfs")))?;
            rootfs
        };
        let skipped = store.unpack_into(image, &rootfs)?;
        if let Some(warning) = skipped.warning(image.id.as_str()) {
            eprintln!("rkt: warning: {}", crate::terminal::escape(&warning));
        }
        std::fs::set_permissions(staging, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(RktError::io(format!("setting the mode of {shown}")))
    })
}
