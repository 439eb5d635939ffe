//! `rkt rm UUID...`: remove pods at once (what gc would do after the grace
//! period), refusing pods that are running or being prepared.

use std::path::PathBuf;

use clap::Args;

use super::pod_json::pod_argument;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::{remove, Pod, PodState, PodsDir};

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Read a pod's UUID from this file.
    #[arg(long, value_name = "FILE")]
    uuid_file: Option<PathBuf>,
    /// Pod UUIDs (or unique prefixes).
    uuids: Vec<String>,
}

pub fn run(globals: &GlobalOptions, args: RmArgs) -> Result<(), RktError> {
    let mut wanted = args.uuids.clone();
    if args.uuid_file.is_some() || wanted.is_empty() {
        wanted.push(pod_argument(None, args.uuid_file.as_deref())?);
    }
    let pods = PodsDir::open(&globals.dir)?;
    let mut failures = 0;
    for text in &wanted {
        match remove_one(&pods, text, globals) {
            Ok(uuid) => println!("\"{uuid}\""),
            Err(err) => {
                eprintln!("rkt: cannot remove pod {text}: {err}");
                failures += 1;
            }
        }
    }
    match failures {
        0 => Ok(()),
        count => Err(RktError::Message(format!(
            "{count} of {} pods were not removed",
            wanted.len()
        ))),
    }
}

fn remove_one(pods: &PodsDir, text: &str, globals: &GlobalOptions) -> Result<String, RktError> {
    let mut pod = Pod::load(pods, &pods.resolve(text)?)?;
    match pod.state() {
        PodState::Running => {
            return Err(RktError::Message(
                "it is running; stop it first (`rkt stop`)".to_string(),
            ))
        }
        PodState::Embryo | PodState::Preparing => {
            return Err(RktError::Message(
                "it is being prepared; try again when that is done".to_string(),
            ))
        }
        PodState::ExitedDeleting | PodState::Deleting => {
            return Err(RktError::Message(
                "another rkt is deleting it already".to_string(),
            ))
        }
        PodState::Prepared | PodState::AbortedPrepare => pod.mark_garbage()?,
        PodState::Exited => pod.mark_exited_garbage()?,
        PodState::ExitedGarbage | PodState::Garbage => {}
    }
    pod.lock_exclusive()?;
    remove::delete(&pod, &globals.local_config)?;
    Ok(pod.uuid.to_string())
}
