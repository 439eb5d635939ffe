//! `rkt image export IMAGE OUTPUT.aci`: the stored ACI, uncompressed.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::clear_destination;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{ImageFormat, LockMode, Store};

#[derive(Args)]
pub struct ExportArgs {
    #[arg(value_name = "IMAGE")]
    image: String,
    #[arg(value_name = "OUTPUT_ACI_FILE")]
    output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(globals: &GlobalOptions, args: ExportArgs) -> Result<(), RktError> {
    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let image = store.resolve(&args.image)?;
    if image.format != ImageFormat::Aci {
        return Err(RktError::Message(format!(
            "{} is a Docker/OCI image, and export writes ACIs only; \
             use `rkt image render` to get its files",
            image.id
        )));
    }
    let mut blob = store.open_blob(&image.id)?;
    clear_destination(&args.output, args.overwrite)?;
    let shown = args.output.display().to_string();
    let dir = match args.output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Temp + rename: a failed export never leaves a truncated ACI behind.
    let mut temp = tempfile::NamedTempFile::new_in(&dir).map_err(RktError::io(format!(
        "creating a file in {}",
        dir.display()
    )))?;
    std::io::copy(&mut blob, &mut temp)
        .and_then(|_| temp.flush())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(RktError::io(format!("writing {shown}")))?;
    temp.persist(&args.output)
        .map_err(|err| RktError::io(format!("writing {shown}"))(err.error))?;
    Ok(())
}
