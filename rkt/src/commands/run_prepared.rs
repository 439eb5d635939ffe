//! `rkt run-prepared UUID`: run a prepared pod. Today it checks the pod and
//! says plainly that handing pods to the kvm stage1 is not implemented yet.
//!
//! LEAD: the finished command is: `Pod::load` + `mark_running` (locks and moves
//! it to `run/`), `overlay::mount_pod` when the pod has `overlay-prepared`,
//! `stage1::run_invocation`, `lock().keep_across_exec()`, then exec with
//! `RKT_LOCK_FD` set (see docs/pods.md, "Handing a pod to stage1").

use clap::Args;

use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::{Pod, PodState, PodsDir};

#[derive(Args, Debug)]
pub struct RunPreparedArgs {
    /// The prepared pod's UUID (or a unique prefix).
    uuid: String,
}

pub fn run(globals: &GlobalOptions, args: RunPreparedArgs) -> Result<(), RktError> {
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
