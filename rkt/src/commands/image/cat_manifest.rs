//! `rkt image cat-manifest IMAGE`.

use clap::Args;

use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{LockMode, Store};
use crate::terminal::escape_json;

#[derive(Args)]
pub struct CatManifestArgs {
    /// Image ID (full or abbreviated) or name.
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Indent the JSON (the default, as in rkt); --pretty-print=false prints it as stored.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pretty_print: bool,
}

pub fn run(globals: &GlobalOptions, args: CatManifestArgs) -> Result<(), RktError> {
    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let image = store.resolve(&args.image)?;
    if args.pretty_print {
        // Reformat the stored bytes (not our typed copy) so unknown fields survive.
        let value: serde_json::Value =
            serde_json::from_slice(&image.manifest_bytes).map_err(|err| {
                RktError::Message(format!("the stored manifest of {}: {err}", image.id))
            })?;
        println!(
            "{}",
            escape_json(&serde_json::to_string_pretty(&value).unwrap_or_default())
        );
    } else {
        // The image's own bytes: JSON, but C1 controls and bidi overrides
        // may sit raw in its strings.
        println!(
            "{}",
            escape_json(&String::from_utf8_lossy(&image.manifest_bytes))
        );
    }
    Ok(())
}
