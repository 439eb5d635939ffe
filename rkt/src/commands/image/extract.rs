//! `rkt image extract IMAGE DIR`: the image's own files, no dependencies.

use std::io::BufReader;
use std::path::PathBuf;

use clap::Args;

use super::clear_destination;
use crate::error::RktError;
use crate::extract::{extract_new, ExtractOptions};
use crate::globals::GlobalOptions;
use crate::store::{LockMode, Store};

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
    let blob = BufReader::with_capacity(256 * 1024, store.open_blob(&image.id)?);
    clear_destination(&args.dest, args.overwrite)?;
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
