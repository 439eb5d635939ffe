//! `rkt run-prepared UUID`: run a prepared pod: the runtime flags as `rkt
//! run`, then the same handover and exec of the stage1 (`run::exec_stage1`).

use clap::Args;

use super::run_flags::RuntimeArgs;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::{Pod, PodState, PodsDir};

#[derive(Args, Debug)]
pub struct RunPreparedArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// The prepared pod's UUID (or a unique prefix).
    uuid: String,
}

pub fn run(globals: &GlobalOptions, args: RunPreparedArgs) -> Result<(), RktError> {
    let options = args.runtime.run_options(globals)?;
    let pods = PodsDir::open(&globals.dir)?;
    let pod = Pod::load(&pods, &pods.resolve(&args.uuid)?)?;
    if pod.state() != PodState::Prepared {
        return Err(RktError::Message(format!(
            "pod {} is {}, not prepared; only prepared pods can be run",
            pod.uuid,
            pod.state().as_str()
        )));
    }
    // The host (KVM) is the stage1's to check: it reports a missing or unusable KVM in one
    // line and exits 254 (see run.rs).
    super::run::exec_stage1(globals, pod, &options)
}
