//! `rkt image ...`: operations on the image store.

mod cat_manifest;
mod export;
mod extract;
mod gc;
mod list;
mod render;
mod rm;
mod verify;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::format::parse_size;
use crate::error::RktError;
use crate::extract::DEFAULT_MAX_BYTES;
use crate::globals::GlobalOptions;
use crate::pod::PodsDir;
use crate::store::{Holds, LockMode, Store};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List the images in the store.
    List(list::ListArgs),
    /// Remove images from the store.
    Rm(rm::RmArgs),
    /// Print an image's manifest.
    CatManifest(cat_manifest::CatManifestArgs),
    /// Write a stored image out as an (uncompressed) ACI file.
    Export(export::ExportArgs),
    /// Unpack an image (manifest and rootfs, without dependencies) into a directory.
    Extract(ImageToDirArgs),
    /// Unpack an image with its dependencies applied, as an app sees it.
    Render(ImageToDirArgs),
    /// Remove images unused for longer than the grace period, and stray files.
    Gc(gc::GcArgs),
    /// Re-hash stored images against their IDs and digests.
    Verify(verify::VerifyArgs),
}

pub fn run(globals: &GlobalOptions, command: ImageCommand) -> Result<(), RktError> {
    match command {
        ImageCommand::List(args) => list::run(globals, args),
        ImageCommand::Rm(args) => rm::run(globals, args),
        ImageCommand::CatManifest(args) => cat_manifest::run(globals, args),
        ImageCommand::Export(args) => export::run(globals, args),
        ImageCommand::Extract(args) => extract::run(globals, args),
        ImageCommand::Render(args) => render::run(globals, args),
        ImageCommand::Gc(args) => gc::run(globals, args),
        ImageCommand::Verify(args) => verify::run(globals, args),
    }
}

/// The store under the exclusive lock, and what the pods that still exist
/// hold in it (read after the lock is taken, so no prepare can be between
/// rendering a tree and recording it): what `image rm` and `image gc` must
/// leave alone.
fn open_for_removal(globals: &GlobalOptions) -> Result<(Store, Holds), RktError> {
    let pods = PodsDir::open(&globals.dir)?;
    let mut store = Store::open(&globals.dir, LockMode::Exclusive)?;
    let holds = store.holds(|uuid| pods.exists(uuid))?;
    Ok((store, holds))
}

/// Makes room for a command's output directory: refuses an existing one
/// unless `overwrite`, in which case it is removed.
fn clear_destination(dest: &Path, overwrite: bool) -> Result<(), RktError> {
    match std::fs::symlink_metadata(dest) {
        Err(_) => Ok(()),
        Ok(_) if !overwrite => Err(RktError::Message(format!(
            "{} already exists; remove it or pass --overwrite",
            dest.display()
        ))),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(dest)
            .map_err(RktError::io(format!("removing {}", dest.display()))),
        Ok(_) => {
            std::fs::remove_file(dest).map_err(RktError::io(format!("removing {}", dest.display())))
        }
    }
}

/// Arguments of the commands that write an image out as a directory (`extract`, `render`).
#[derive(Args)]
pub struct ImageToDirArgs {
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
    /// Refuse to unpack more than this (e.g. 512M, 8G): the same limit as
    /// `fetch --max-image-size`, checked again here because Docker/OCI
    /// layers are stored compressed.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_MAX_BYTES)]
    max_image_size: u64,
}

/// Builds a directory at `dest` all at once: `fill` writes into a temporary sibling of `dest`
/// (named `.<staging_prefix>-...`, on the same file system), which is then renamed to `dest`.
/// On any failure the sibling is removed, so no half-written DIR is ever left behind.
/// `tree` names the result in errors ("extracted tree", "rendered tree").
fn build_dir_atomically(
    dest: &Path,
    staging_prefix: &str,
    tree: &str,
    fill: impl FnOnce(&Path) -> Result<(), RktError>,
) -> Result<(), RktError> {
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{staging_prefix}-"))
        .tempdir_in(&parent)
        .map_err(RktError::io(format!(
            "creating a directory in {}",
            parent.display()
        )))?;
    // A failing `fill` drops `staging`, which removes it.
    fill(staging.path())?;
    let staged = staging.keep();
    std::fs::rename(&staged, dest).map_err(|err| {
        let _ = std::fs::remove_dir_all(&staged);
        RktError::io(format!("moving the {tree} to {}", dest.display()))(err)
    })
}
