//! `rkt stop [--force] [--uuid-file=F] UUID...`: stop running pods through their stage1's
//! `stop` entrypoint (`<stop> [--force] UUID`, run from the pod directory, as rkt did). The
//! kvm stage1 asks the guest to SIGTERM the apps (then SIGKILL after its grace period) and
//! waits for the pod to end; `--force` kills the pod's VM. Prints `"UUID"` per pod stopped.

use std::path::PathBuf;

use clap::Args;

use super::pod_json::{for_each_named_pod, named_pods};
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::{stage1, PodsDir};

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Kill the pod's VM at once instead of asking its apps to end.
    #[arg(long)]
    force: bool,
    /// Read a pod's UUID from this file.
    #[arg(long, value_name = "FILE")]
    uuid_file: Option<PathBuf>,
    /// Pod UUIDs (or unique prefixes).
    uuids: Vec<String>,
}

pub fn run(globals: &GlobalOptions, args: StopArgs) -> Result<(), RktError> {
    let wanted = named_pods(&args.uuids, args.uuid_file.as_deref())?;
    let pods = PodsDir::open(&globals.dir)?;
    for_each_named_pod(&wanted, ("stop", "stopped"), |text| {
        stop_one(&pods, text, args.force)
    })
}

fn stop_one(pods: &PodsDir, text: &str, force: bool) -> Result<String, RktError> {
    let pod = super::running_pod::load(pods, text, "stopped")?;
    let dir = pod.path();
    let program = super::running_pod::entrypoint(&pod, stage1::ENTRYPOINT_STOP)?;
    let mut command = std::process::Command::new(&program);
    if force {
        command.arg("--force");
    }
    let status = command
        .arg(pod.uuid.as_str())
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(RktError::io(format!(
            "running the stage1 stop entrypoint {}",
            program.display()
        )))?;
    if !status.success() {
        // stage1 said why on stderr.
        return Err(RktError::Message(format!(
            "its stage1 stop entrypoint failed ({status})"
        )));
    }
    Ok(pod.uuid.to_string())
}
