//! `rkt image rm IMAGE...`.
//!
//! A Docker/OCI image may carry several names (`image::names`): removing one
//! by name removes that name, and the image goes with its last name, as
//! `docker rmi NAME` untags first. By ID (or an ACI by its appc name) the
//! image goes at once, with all its names.

use std::collections::HashMap;

use appc::ImageId;
use clap::Args;

use super::open_for_removal;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{Matched, StoreError};
use crate::terminal::escape;

#[derive(Args)]
pub struct RmArgs {
    /// Image IDs (full or abbreviated), names, or digests.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

pub fn run(globals: &GlobalOptions, args: RmArgs) -> Result<(), RktError> {
    let (mut store, holds) = open_for_removal(globals)?;
    // Refuse the whole command if any image it would remove is in use by a
    // pod: the user asked for a set, and removing part of it would surprise.
    // An image goes when named by ID, or when every name it has is named.
    let mut names_removed: HashMap<String, (ImageId, Vec<String>)> = HashMap::new();
    let mut whole: Vec<ImageId> = Vec::new();
    for reference in &args.images {
        match store.lookup(reference) {
            Ok((image, Matched::Name(name))) => {
                let (_, removed) = names_removed
                    .entry(image.id.to_string())
                    .or_insert_with(|| (image.id.clone(), Vec::new()));
                if !removed.contains(&name) {
                    removed.push(name);
                }
            }
            Ok((image, _)) => whole.push(image.id),
            Err(_) => {}
        }
    }
    for (id, removed) in names_removed.into_values() {
        if store.names_of(&id)?.len() <= removed.len() {
            whole.push(id);
        }
    }
    let mut in_use = Vec::new();
    whole.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    whole.dedup();
    for id in &whole {
        if let Some(pods) = holds.pods_using(id) {
            in_use.push(StoreError::InUse {
                image: id.to_string(),
                pods: pods.to_vec(),
            });
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
        let outcome = store.lookup(reference).and_then(|(image, matched)| {
            let last_name = match &matched {
                Matched::Name(_) => store.names_of(&image.id)?.len() <= 1,
                Matched::Id | Matched::AppcName => true,
            };
            match matched {
                Matched::Name(name) if !last_name => {
                    store.remove_name(&name)?;
                    Ok(format!(
                        "successfully removed name {name} from image {}",
                        image.id
                    ))
                }
                _ => store
                    .remove(&image.id, &holds)
                    .map(|()| format!("successfully removed image {}", image.id)),
            }
        });
        match outcome {
            Ok(done) => {
                eprintln!("{}", escape(&done));
                removed += 1;
            }
            Err(err) => {
                eprintln!("rkt: {}", escape(&err.to_string()));
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
