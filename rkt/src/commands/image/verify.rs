//! `rkt image verify IMAGE...`: re-hash what the store holds.

use clap::Args;

use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{LockMode, Store};

#[derive(Args)]
pub struct VerifyArgs {
    /// Image IDs (full or abbreviated), sha256 digests or names.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

pub fn run(globals: &GlobalOptions, args: VerifyArgs) -> Result<(), RktError> {
    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let mut damaged = 0;
    for reference in &args.images {
        let image = store.resolve(reference)?;
        let problems = store.verify(&image)?;
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
    if damaged > 0 {
        return Err(RktError::Message(format!(
            "{damaged} image(s) are damaged in the store; remove them with `rkt image rm` and fetch them again"
        )));
    }
    Ok(())
}
