//! `rkt image ...`: operations on the image store.

mod cat_manifest;
mod export;
mod extract;
mod gc;
mod list;
mod render;
mod rm;
mod verify;

use std::path::Path;

use clap::Subcommand;

use crate::error::RktError;
use crate::globals::GlobalOptions;

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
    Extract(extract::ExtractArgs),
    /// Unpack an image with its dependencies applied, as an app sees it.
    Render(render::RenderArgs),
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
