//! `rkt image gc`.

use std::time::Duration;

use clap::Args;

use super::open_for_removal;
use crate::commands::format::parse_duration;
use crate::error::RktError;
use crate::globals::GlobalOptions;

#[derive(Args)]
pub struct GcArgs {
    /// Remove images not used for this long (e.g. 24h, 30m, 0s).
    #[arg(long, value_parser = parse_duration, default_value = "24h", value_name = "DURATION")]
    grace_period: Duration,
}

pub fn run(globals: &GlobalOptions, args: GcArgs) -> Result<(), RktError> {
    let (mut store, holds) = open_for_removal(globals)?;
    let report = store.gc(args.grace_period, &holds)?;
    for id in &report.images {
        eprintln!("successfully removed image {id}");
    }
    if globals.debug {
        for (id, pods) in &report.kept_in_use {
            eprintln!(
                "rkt: keeping image {id}: used by {}",
                crate::store::pods_phrase(pods)
            );
        }
    }
    eprintln!(
        "rkt: {} image(s) removed; {} stray tree(s), {} stray blob(s), {} temporary file(s) cleaned up",
        report.images.len(),
        report.stray_trees,
        report.stray_blobs,
        report.stray_temp_files
    );
    Ok(())
}
