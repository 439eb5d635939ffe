//! `rkt run [FLAGS] IMAGE [APP FLAGS] [-- ARGS] [---] ...`: today it checks
//! every flag (the same pod flags as `prepare`, plus the runtime flags) and
//! the host, then says plainly that running pods is not implemented yet,
//! rather than pretending.
//!
//! The host check comes before fetching or preparing anything: no
//! `/dev/kvm`, no permission, an old KVM, another hypervisor holding
//! VT-x/AMD-V, or a KVM that runs only PVM guest kernels (`kvm_pvm`) each get
//! a plain one-line message naming the fix.
//!
//! LEAD: the finished command is `prepare::prepare` (pod locked in
//! `prepare/`), `prepare::save_uuid`, then `pod::handover::hand_over` with
//! `runtime.run_options(globals)` and exec of `Stage1Invocation::command()`
//! (see docs/pods.md, "Handing a pod to stage1").

use clap::Args;

use super::app_args;
use super::prepare::PodArgs;
use super::run_flags::RuntimeArgs;
use crate::error::RktError;
use crate::globals::GlobalOptions;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub pod: PodArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(globals: &GlobalOptions, args: RunArgs) -> Result<(), RktError> {
    let apps = app_args::parse(&args.pod.apps).map_err(RktError::Usage)?;
    if apps.is_empty() {
        return Err(RktError::Usage(
            "rkt run needs at least one image: rkt run --stage1=kvm IMAGE".into(),
        ));
    }
    if args.pod.stage1.stage1 != "kvm" {
        return Err(RktError::Usage(format!(
            "stage1 flavor {:?} is not available: this engine runs every pod in a KVM \
             micro-VM; use --stage1=kvm",
            args.pod.stage1.stage1
        )));
    }
    if args.runtime.interactive && apps.len() > 1 {
        return Err(RktError::Usage(
            "--interactive works with one app only".to_string(),
        ));
    }
    args.runtime.run_options(globals)?;
    vmm::check_host().map_err(|e| RktError::Message(e.to_string()))?;
    Err(RktError::Message(
        "this host can run micro-VMs, but running pods is not implemented yet in this build: \
         use `rkt prepare` to lay a pod out, or rkt-vmm to boot a VM directly (see README)"
            .into(),
    ))
}
