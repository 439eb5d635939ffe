//! `rkt rm UUID...`: remove pods at once (what gc would do after the grace
//! period), refusing pods that are running or being prepared.

use std::path::PathBuf;

use clap::Args;

use super::pod_json::{for_each_named_pod, named_pods};
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
    let wanted = named_pods(&args.uuids, args.uuid_file.as_deref())?;
    let pods = PodsDir::open(&globals.dir)?;
    for_each_named_pod(&wanted, ("remove", "removed"), |text| {
        remove_one(&pods, text, globals)
    })
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
