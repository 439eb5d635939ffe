//! `rkt image render IMAGE DIR`: the image with its dependencies applied, as
//! an app sees it, copied out of the store's rendered-tree cache.

use std::path::PathBuf;

use clap::Args;

use super::clear_destination;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{copy_tree, LockMode, Store};

#[derive(Args)]
pub struct RenderArgs {
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

pub fn run(globals: &GlobalOptions, args: RenderArgs) -> Result<(), RktError> {
    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let image = store.resolve(&args.image)?;
    let tree = store.tree(&image.id)?;
    clear_destination(&args.dest, args.overwrite)?;
    let source = if args.rootfs_only {
        tree.join("rootfs")
    } else {
        tree
    };
    let parent = match args.dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let shown = args.dest.display().to_string();
    // Copy into a temporary sibling, then rename: no half-rendered DIR.
    let staging = tempfile::Builder::new()
        .prefix(".render-")
        .tempdir_in(&parent)
        .map_err(RktError::io(format!(
            "creating a directory in {}",
            parent.display()
        )))?;
    copy_tree(&source, staging.path()).map_err(RktError::io(format!("copying to {shown}")))?;
    let staged = staging.keep();
    std::fs::rename(&staged, &args.dest).map_err(|err| {
        let _ = std::fs::remove_dir_all(&staged);
        RktError::io(format!("moving the rendered tree to {shown}"))(err)
    })?;
    Ok(())
}
