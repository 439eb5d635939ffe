//! `rkt image gc`.

use std::time::Duration;

use clap::Args;

use crate::commands::format::parse_duration;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{LockMode, Store};

#[derive(Args)]
pub struct GcArgs {
    /// Remove images not used for this long (e.g. 24h, 30m, 0s).
    #[arg(long, value_parser = parse_duration, default_value = "24h", value_name = "DURATION")]
    grace_period: Duration,
}

pub fn run(globals: &GlobalOptions, args: GcArgs) -> Result<(), RktError> {
    let mut store = Store::open(&globals.dir, LockMode::Exclusive)?;
    let report = store.gc(args.grace_period)?;
    for id in &report.images {
        eprintln!("successfully removed image {id}");
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
