//! `rkt run [FLAGS] IMAGE [APP FLAGS] [-- ARGS] [---] ...`: prepare a pod
//! (the same pod flags as `prepare`), hand it to its stage1 and exec the
//! stage1's `run` entrypoint, which runs the pod in a KVM micro-VM; our exit
//! status is then the stage1's (the pod's: the first failing app's code).
//!
//! Every flag is checked first, and only then is anything fetched or created.
//! The host (no `/dev/kvm`, no permission, an old KVM, another hypervisor
//! holding VT-x/AMD-V, a KVM that runs only PVM guest kernels) is the kvm
//! stage1's business, as in rkt, which kept everything about KVM in its kvm
//! stage1: the stage1 checks it itself and reports one `stage1-kvm: ...` line
//! naming the fix, exit 254, which is then ours (we exec it). Stage0 does not
//! link the VMM.

use clap::Args;

use super::app_args;
use super::prepare::PodArgs;
use super::run_flags::RuntimeArgs;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::{handover, Pod};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub pod: PodArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(globals: &GlobalOptions, args: RunArgs) -> Result<(), RktError> {
    let apps = app_args::parse(&args.pod.apps).map_err(RktError::Usage)?;
    if apps.is_empty() && args.pod.pod_manifest.is_none() {
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
    let options = args.runtime.run_options(globals)?;
    crate::timing::mark(globals, "checked the flags");
    let prepared = super::prepare::prepare(globals, &args.pod, false)?;
    super::prepare::save_uuid(&args.pod, &prepared)?;
    crate::timing::mark(
        globals,
        "prepared the pod (trees rendered, manifest written)",
    );
    exec_stage1(globals, prepared.pod, &options)
}

/// Hands `pod` (prepared, or just prepared by us) to its stage1 and execs the
/// `run` entrypoint; returns only if that failed. Shared with `run-prepared`.
pub fn exec_stage1(
    globals: &GlobalOptions,
    mut pod: Pod,
    options: &crate::pod::stage1::RunOptions,
) -> Result<(), RktError> {
    use std::os::unix::process::CommandExt;
    let call = handover::hand_over(&mut pod, &globals.dir.join("cas/tree"), options).inspect_err(
        |_| {
            // Whatever failed, the next `prepare` tests overlay support again rather than
            // trust a remembered success (the overlay mounts are part of the hand-over).
            crate::pod::overlay::forget_support(&globals.dir)
        },
    )?;
    crate::timing::mark(
        globals,
        "handed the pod over (overlays mounted): exec stage1",
    );
    // `pod` (and with it the lock descriptor) lives until the exec: the
    // stage1 inherits the lock as RKT_LOCK_FD.
    let err = call.command().exec();
    drop(pod);
    Err(RktError::Message(format!(
        "cannot start the stage1 run entrypoint {}: {err}",
        call.program.display()
    )))
}
