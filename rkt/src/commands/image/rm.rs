//! `rkt image rm IMAGE...`.

use clap::Args;

use super::open_for_removal;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::StoreError;

#[derive(Args)]
pub struct RmArgs {
    /// Image IDs (full or abbreviated) or names.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

pub fn run(globals: &GlobalOptions, args: RmArgs) -> Result<(), RktError> {
    let (mut store, holds) = open_for_removal(globals)?;
    // Refuse the whole command if any image named is in use by a pod: the
    // user asked for a set, and removing part of it would surprise.
    let mut in_use = Vec::new();
    for reference in &args.images {
        if let Ok(image) = store.resolve(reference) {
            if let Some(pods) = holds.pods_using(&image.id) {
                in_use.push(StoreError::InUse {
                    image: image.id.to_string(),
                    pods: pods.to_vec(),
                });
            }
        }
    }
    if let Some(last) = in_use.pop() {
        for err in &in_use {
            eprintln!("rkt: {err}");
        }
        return Err(last.into());
    }

    let mut failed = 0;
    let mut removed = 0;
    for reference in &args.images {
        let outcome = store
            .resolve(reference)
            .and_then(|image| store.remove(&image.id, &holds).map(|()| image.id));
        match outcome {
            Ok(id) => {
                eprintln!("successfully removed image {id}");
                removed += 1;
            }
            Err(err) => {
                eprintln!("rkt: {err}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(RktError::Message(format!(
            "{failed} image(s) could not be removed ({removed} removed)"
        )));
    }
    Ok(())
}
