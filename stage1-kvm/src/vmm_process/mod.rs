//! The VMM as a jailed process of its own (docs/security.md, "The VMM's jail").
//!
//! The stage1 process keeps what needs host privilege for the pod's whole life (the pod lock,
//! CNI, the status and output listeners, `--port`); each VM runs in a child process that
//! confines itself before the guest runs its first instruction:
//!
//! 1. born in a pid namespace of its own (it is its pid 1) and in the pod's network namespace,
//!    in a cgroup v2 of its own (memory.max, pids.max), killed if the stage1 dies;
//! 2. before it has its request (the stage1 starts it as soon as the pod's network exists,
//!    `JailPlan::start_standby`, so that this overlaps the rest of the stage1's set-up): new
//!    mount, IPC and UTS namespaces, and an empty network namespace made for later;
//! 3. with its request: a tmpfs root holding only the kernel and initramfs (read-only), the
//!    shares, the vsock directory, `/dev/kvm` (and `/dev/net/tun` with NICs), a pid-only
//!    `/proc` and, for a snapshot, its directory; pivot_root into it, the host's root detached;
//!    the bounding set cut to the file capabilities virtio-fs needs, `no_new_privs`;
//! 4. the VM built (KVM, devices, taps opened, snapshot mapped) while still root;
//! 5. at lock-down (`vmm::sandbox`): the empty network namespace, rlimits, then every thread
//!    confined by kind ([`policy`]): an unprivileged per-pod uid/gid and no capability for
//!    the main, vCPU, net, vsock and rng threads, uid 0 with only the file capabilities for
//!    the spawner and the virtio-fs threads, and each kind's seccomp allow-list.
//!
//! `parent` starts and waits for the child; `child` is the child's side; `protocol` is what
//! they say to each other (defined once, here, for both).

pub mod child;
pub mod parent;
pub mod policy;
pub mod protocol;
pub mod stopper;

pub use parent::JailPlan;
pub use protocol::Action;
pub use stopper::VmStopper;

/// The first argument that makes the stage1 binary the jailed VMM (the stage1 execs itself).
pub const CHILD_ARG: &str = "__jailed-vmm";

use vmm::{VmConfig, VmOutcome};

use crate::error::Stage1Error;
use protocol::Reply;

/// Boots `config` in a jailed VMM process and runs it to its end.
pub fn boot(plan: &JailPlan, config: VmConfig) -> Result<VmOutcome, Stage1Error> {
    match plan.run(Action::Boot, config)? {
        Reply::Ended(outcome) => Ok(outcome.into()),
        other => Err(unexpected(other)),
    }
}

/// A reply that does not fit the request: a failure's message, or a VMM that got confused.
pub fn unexpected(reply: Reply) -> Stage1Error {
    match reply {
        Reply::Failed(message) | Reply::SnapshotRefused(message) => Stage1Error::Jail(message),
        other => Stage1Error::Jail(format!(
            "the VMM process gave an unexpected reply: {other:?}"
        )),
    }
}
