//! The kvm stage1: what `rkt run` execs to run a pod, and the other entrypoints rkt's stage1
//! interface (version 6) names. One pod is one micro-VM, run through the `vmm` crate in a
//! jailed child process (`vmm_process`); the host <-> guest contract is docs/stage1-kvm.md.
//!
//! One job per module:
//! - `entrypoint`: which entrypoint was called (by the name stage0 called the binary by);
//! - `args`: the entrypoints' command lines, as stage0 (docs/pods.md) builds them;
//! - `pod`: the pod directory: lock descriptor, manifest, the paths stage1 reads and writes;
//! - `resources`: the VM's size from the apps' isolators;
//! - `volumes`: virtio-fs shares for the pod and its host volumes, empty-volume directories;
//! - `dns`: `--dns-conf-mode=...host` as files the guest finds;
//! - `net`: the pod's networks (CNI in its own namespace, taps for the VMM; `--port`);
//! - `vsock`: where the VM's vsock socket lives (in the pod, or under /run when too long);
//! - `output`: the apps' stdout/stderr arriving over vsock, to our stdout/stderr and the logs;
//! - `status`: the apps' exit statuses, and the pod's exit code from them;
//! - `run`: the `run` entrypoint, tying it all together around `vmm::run`;
//! - `timing`: `--debug`'s account of where the start-up time went;
//! - `gc`: the `gc` entrypoint;
//! - `control`: the vsock control channel to guest-init: the `enter` and `stop` entrypoints,
//!   readiness and `--interactive` for `run`;
//! - `image`: writing the stage1 image itself (`rkt-mkstage1`);
//! - `vmm_process`: the VMM as a jailed process of its own (one per VM);
//! - `warm`: warm start, restoring the pod's VM from a cached snapshot (`snapshot-cache`).

pub mod accept;
pub mod args;
pub mod control;
pub mod dns;
pub mod entrypoint;
pub mod error;
pub mod gc;
pub mod guest_view;
pub mod image;
pub mod isolators;
pub mod net;
pub mod output;
pub mod pod;
pub mod resources;
pub mod run;
pub mod status;
pub mod timing;
pub mod vmm_process;
pub mod volumes;
pub mod vsock;
pub mod warm;

pub use error::Stage1Error;

/// Every failure of stage1 itself (not of an app) exits with this, as rkt's stage1 did.
pub const EXIT_STAGE1_ERROR: i32 = 254;
