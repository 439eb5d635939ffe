//! `rkt image rm IMAGE...`.

use clap::Args;

use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{LockMode, Store};

#[derive(Args)]
pub struct RmArgs {
    /// Image IDs (full or abbreviated) or names.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

pub fn run(globals: &GlobalOptions, args: RmArgs) -> Result<(), RktError> {
    let mut store = Store::open(&globals.dir, LockMode::Exclusive)?;
    let mut failed = 0;
    let mut removed = 0;
    for reference in &args.images {
        let outcome = store
            .resolve(reference)
            .and_then(|image| store.remove(&image.id).map(|()| image.id));
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
