//! `rkt image verify IMAGE...`: re-hash what the store holds.
//! `rkt image verify --all`: every image, and the store's own consistency
//! (what the index names is on disk).

use clap::Args;

use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{ImageRecord, LockMode, Store, StoreError};

#[derive(Args)]
pub struct VerifyArgs {
    /// Image IDs (full or abbreviated), sha256 digests or names.
    #[arg(
        required_unless_present = "all",
        conflicts_with = "all",
        value_name = "IMAGE"
    )]
    images: Vec<String>,
    /// Verify every image, and that the index, blobs, trees and pod records agree.
    #[arg(long)]
    all: bool,
}

pub fn run(globals: &GlobalOptions, args: VerifyArgs) -> Result<(), RktError> {
    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let records: Vec<Result<ImageRecord, StoreError>> = if args.all {
        store.image_records()?
    } else {
        args.images
            .iter()
            .map(|reference| store.resolve(reference).map(Ok))
            .collect::<Result<_, _>>()?
    };
    let mut damaged = 0;
    for record in &records {
        // A row that cannot be read is one damaged image; the others are still checked.
        let image = match record {
            Ok(image) => image,
            Err(err) => {
                damaged += 1;
                eprintln!("rkt: {err}");
                continue;
            }
        };
        // A missing blob is one more problem found, not the end of the check.
        let problems = store
            .verify(image)
            .unwrap_or_else(|err| vec![err.to_string()]);
        if problems.is_empty() {
            println!(
                "successfully verified checksum for image: {:?}",
                image.id.as_str()
            );
        } else {
            damaged += 1;
            for problem in problems {
                eprintln!("rkt: {problem}");
            }
        }
    }
    let inconsistencies = if args.all {
        store.check_consistency()?
    } else {
        Vec::new()
    };
    for problem in &inconsistencies {
        eprintln!("rkt: {problem}");
    }
    if damaged > 0 {
        return Err(RktError::Message(format!(
            "{damaged} image(s) are damaged in the store; remove them with `rkt image rm` and fetch them again"
        )));
    }
    if !inconsistencies.is_empty() {
        return Err(RktError::Message(format!(
            "the store is inconsistent ({} problems above); remove the images named with \
             `rkt image rm` and fetch them again",
            inconsistencies.len()
        )));
    }
    if args.all {
        println!("the store is consistent ({} images)", records.len());
    }
    Ok(())
}
