//! `rkt image render IMAGE DIR`: the image with its dependencies applied, as
//! an app sees it, copied out of the store's rendered-tree cache.

use super::{build_dir_atomically, clear_destination, ImageToDirArgs};
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{copy_tree, LockMode, Store};

pub fn run(globals: &GlobalOptions, args: ImageToDirArgs) -> Result<(), RktError> {
    let mut store = Store::open(&globals.dir, LockMode::Shared)?;
    store.set_max_image_size(args.max_image_size);
    let image = store.resolve(&args.image)?;
    let rendered = store.rendered(&image.id)?;
    if let Some(warning) = rendered.skipped_devices.warning(image.id.as_str()) {
        eprintln!("rkt: warning: {warning}");
    }
    let tree = rendered.path;
    clear_destination(&args.dest, args.overwrite)?;
    let source = if args.rootfs_only {
        tree.join("rootfs")
    } else {
        tree
    };
    let shown = args.dest.display().to_string();
    build_dir_atomically(&args.dest, "render", "rendered tree", |staging| {
        copy_tree(&source, staging).map_err(RktError::io(format!("copying to {shown}")))
    })
}
