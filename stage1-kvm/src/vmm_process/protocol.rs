//! What the stage1 and its jailed VMM process say to each other: one [`Request`] as JSON on
//! the child's stdin, one [`Reply`] as JSON on its descriptor 3, then the child exits.

use std::path::PathBuf;

use jail::PodIds;
use serde::{Deserialize, Serialize};
use vmm::{VmConfig, VmOutcome};

/// The descriptor the child writes its reply to.
pub const REPLY_FD: i32 = 3;
/// The largest request or reply read (both are a few KiB; the reply comes from a process that
/// runs guest-facing code, so it is bounded).
pub const MAX_MESSAGE: u64 = 1 << 20;

/// What the VMM process is to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Boot the kernel and run the VM to its end.
    Boot,
    /// Boot, save a snapshot into `dir` at guest-init's warm marker, stop.
    MakeSnapshot { dir: PathBuf },
    /// Restore the snapshot in `dir` and run the VM to its end.
    Restore { dir: PathBuf },
}

/// Everything the child needs; host paths throughout (the child maps them into its jail).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub action: Action,
    pub config: VmConfig,
    /// The pod directory.
    pub pod_dir: PathBuf,
    /// What the pod share holds, from the pod manifest the stage1 read.
    pub share: crate::guest_view::ShareContents,
    /// An empty directory the jail's root is mounted on.
    pub jail_dir: PathBuf,
    /// The unprivileged identity of the VMM's threads.
    pub ids: PodIds,
    /// Device and inode of the snapshot directory as the stage1 opened and checked it: the
    /// directory the child binds must be that one.
    pub snapshot_dir_identity: Option<(u64, u64)>,
    /// RLIMIT_NOFILE for the process.
    pub max_open_files: u64,
    /// Log calls outside the seccomp lists instead of killing the VMM (a debugging aid:
    /// `RKT_STAGE1_KVM_SECCOMP=log`, docs/security.md).
    pub seccomp_log_only: bool,
    /// With `--debug`: when rkt started, on the boot-time clock; the child prints its own
    /// timing lines (jail built, locked down) against it.
    #[serde(default)]
    pub debug_timing_origin: Option<f64>,
}

/// How the child's VM ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The VM ran to its end.
    Ended(Outcome),
    /// The snapshot was saved (MakeSnapshot).
    Saved,
    /// The snapshot could not be restored (Restore); the stage1 boots cold instead.
    SnapshotRefused(String),
    /// The VM could not be built or run, or the jail could not be set up.
    Failed(String),
}

/// `vmm::VmOutcome` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    GuestReportedExit(u8),
    CleanStop,
    GuestPanic,
    TripleFault,
    KvmError(String),
}

impl From<VmOutcome> for Outcome {
    fn from(outcome: VmOutcome) -> Outcome {
        match outcome {
            VmOutcome::GuestReportedExit(n) => Outcome::GuestReportedExit(n),
            VmOutcome::CleanStop => Outcome::CleanStop,
            VmOutcome::GuestPanic => Outcome::GuestPanic,
            VmOutcome::TripleFault => Outcome::TripleFault,
            VmOutcome::KvmError(what) => Outcome::KvmError(what),
        }
    }
}

impl From<Outcome> for VmOutcome {
    fn from(outcome: Outcome) -> VmOutcome {
        match outcome {
            Outcome::GuestReportedExit(n) => VmOutcome::GuestReportedExit(n),
            Outcome::CleanStop => VmOutcome::CleanStop,
            Outcome::GuestPanic => VmOutcome::GuestPanic,
            Outcome::TripleFault => VmOutcome::TripleFault,
            Outcome::KvmError(what) => VmOutcome::KvmError(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_the_wire() {
        for outcome in [
            VmOutcome::GuestReportedExit(7),
            VmOutcome::CleanStop,
            VmOutcome::GuestPanic,
            VmOutcome::TripleFault,
            VmOutcome::KvmError("x".into()),
        ] {
            let json = serde_json::to_string(&Reply::Ended(outcome.clone().into())).unwrap();
            let Reply::Ended(back) = serde_json::from_str(&json).unwrap() else {
                panic!("{json}");
            };
            assert_eq!(VmOutcome::from(back), outcome);
        }
    }
}
