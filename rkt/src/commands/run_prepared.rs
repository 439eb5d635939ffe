//! `rkt run-prepared UUID`: run a prepared pod. Today it checks the pod and
//! says plainly that handing pods to the kvm stage1 is not implemented yet.
//!
//! LEAD: the finished command is `Pod::load`, then `pod::handover::hand_over`
//! with `runtime.run_options(globals)`, then exec of
//! `Stage1Invocation::command()` (see docs/pods.md, "Handing a pod to
//! stage1").

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
    args.runtime.run_options(globals)?;
    let pods = PodsDir::open(&globals.dir)?;
    let pod = Pod::load(&pods, &pods.resolve(&args.uuid)?)?;
    if pod.state() != PodState::Prepared {
        return Err(RktError::Message(format!(
            "pod {} is {}, not prepared; only prepared pods can be run",
            pod.uuid,
            pod.state().as_str()
        )));
    }
    Err(RktError::Message(format!(
        "pod {} is prepared, but running pods is not implemented yet in this build \
         (the kvm stage1 handover is missing); it stays prepared",
        pod.uuid
    )))
}
