//! `rkt cat-manifest [--pretty-print=BOOL] UUID`: print a pod's manifest.

use std::path::PathBuf;

use clap::Args;

use super::pod_json::pod_argument;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::{Pod, PodsDir};
use crate::terminal::escape_json;

#[derive(Args, Debug)]
pub struct CatManifestArgs {
    /// Indent the JSON (`--pretty-print=false` prints it as stored).
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pretty_print: bool,
    /// Read the pod's UUID from this file.
    #[arg(long, value_name = "FILE")]
    uuid_file: Option<PathBuf>,
    /// The pod's UUID (or a unique prefix).
    uuid: Option<String>,
}

pub fn run(globals: &GlobalOptions, args: CatManifestArgs) -> Result<(), RktError> {
    let wanted = pod_argument(args.uuid.as_deref(), args.uuid_file.as_deref())?;
    let pods = PodsDir::open(&globals.dir)?;
    let pod = Pod::load(&pods, &pods.resolve(&wanted)?)?;
    let bytes = pod.manifest_bytes()?;
    if !args.pretty_print {
        // Labels and annotations in it come from images: keep the JSON, but
        // show what a terminal would act on as escapes.
        println!("{}", escape_json(&String::from_utf8_lossy(&bytes)));
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|err| {
        RktError::Message(format!(
            "pod {}: its manifest is not JSON ({err}); remove the pod with `rkt rm`",
            pod.uuid
        ))
    })?;
    let pretty = serde_json::to_string_pretty(&value)
        .map_err(|err| RktError::Message(format!("encoding JSON: {err}")))?;
    println!("{}", escape_json(&pretty));
    Ok(())
}
