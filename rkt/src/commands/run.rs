//! `rkt run`: for now, only its first step, the host check.
//!
//! A pod's first requirement is a host that can run its micro-VM, so `rkt run` checks that before
//! it fetches or prepares anything: no `/dev/kvm`, no permission, an old KVM, another hypervisor
//! holding VT-x/AMD-V, or a KVM that runs only PVM guest kernels (`kvm_pvm`) each get a plain
//! one-line message naming the fix, instead of a guest that hangs in KVM's instruction emulator.
//! Preparing and running the pod itself (stage1 handover, pod directory) is not implemented yet:
//! after a passing check, `rkt run` says so and fails, rather than pretending.

use clap::Args;

use crate::error::RktError;

#[derive(Args)]
pub struct RunArgs {
    /// The stage1 flavor; only `kvm` exists in this engine.
    #[arg(long, default_value = "kvm", value_name = "FLAVOR")]
    stage1: String,
    /// Images, per-app flags and app arguments, as rkt takes them (`IMAGE [flags] [-- args] [---]`).
    #[arg(trailing_var_arg = true, value_name = "IMAGE")]
    apps: Vec<String>,
}

pub fn run(args: RunArgs) -> Result<(), RktError> {
    if args.stage1 != "kvm" {
        return Err(RktError::Message(format!(
            "stage1 flavor {:?} is not available: this engine runs every pod in a KVM micro-VM; use --stage1=kvm",
            args.stage1
        )));
    }
    if args.apps.is_empty() {
        return Err(RktError::Message(
            "rkt run needs at least one image: rkt run --stage1=kvm IMAGE".into(),
        ));
    }
    vmm::check_host().map_err(|e| RktError::Message(e.to_string()))?;
    Err(RktError::Message(
        "this host can run micro-VMs, but running pods is not implemented yet in this build: \
         use rkt-vmm to boot a VM directly (see README)"
            .into(),
    ))
}
