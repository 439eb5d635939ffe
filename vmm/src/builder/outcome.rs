//! How a VM ended: the outcome of its first stopping vCPU combined with what its console
//! showed, and the exit status `rkt-vmm` reports for it.

use crate::devices::legacy::console_scan::ConsoleReport;
use crate::error::VmmError;
use crate::stats::VmStats;
use crate::vcpu::VcpuStop;

/// How the guest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmOutcome {
    /// guest-init reported `exit-status=N`, then the guest stopped cleanly.
    GuestReportedExit(u8),
    /// The guest stopped cleanly without reporting a status.
    CleanStop,
    /// The guest kernel panicked.
    GuestPanic,
    /// The guest triple-faulted (KVM shutdown exit).
    TripleFault,
    /// KVM could not run the guest (internal error, failed entry, unexpected exit).
    KvmError(String),
}

/// Exit status for a VMM error (docs/foundation.md).
pub const EXIT_VMM_ERROR: i32 = 254;

impl VmOutcome {
    /// The `rkt-vmm` exit status for this outcome (docs/foundation.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            VmOutcome::GuestReportedExit(n) => i32::from(*n),
            VmOutcome::CleanStop => 0,
            VmOutcome::GuestPanic => 250,
            VmOutcome::TripleFault | VmOutcome::KvmError(_) => 251,
        }
    }

    /// A one-line description for stderr, or None when the outcome is a normal end.
    pub fn describe(&self) -> Option<String> {
        match self {
            VmOutcome::GuestReportedExit(_) | VmOutcome::CleanStop => None,
            VmOutcome::GuestPanic => {
                Some("the guest kernel panicked (see its console output)".into())
            }
            VmOutcome::TripleFault => {
                Some("the guest hit a triple fault (KVM shutdown exit)".into())
            }
            VmOutcome::KvmError(what) => Some(format!("KVM stopped the guest: {what}")),
        }
    }
}

/// The outcome plus, when asked for, the statistics.
#[derive(Debug)]
pub struct VmReport {
    /// How the guest ended.
    pub outcome: VmOutcome,
    /// Counters and timings (`VmConfig::collect_stats`).
    pub stats: Option<VmStats>,
}

/// Combines how the first vCPU stopped with what the console showed.
pub(crate) fn decide_outcome(
    (index, stop): &(u8, VcpuStop),
    console: &ConsoleReport,
) -> Result<VmOutcome, VmmError> {
    if console.panicked {
        return Ok(VmOutcome::GuestPanic);
    }
    Ok(match stop {
        VcpuStop::GuestReset | VcpuStop::Kicked => match console.exit_status {
            Some(n) => VmOutcome::GuestReportedExit(n),
            None => VmOutcome::CleanStop,
        },
        VcpuStop::TripleFault => VmOutcome::TripleFault,
        VcpuStop::KvmError(what) => VmOutcome::KvmError(what.clone()),
        VcpuStop::RunFailed(errno) => {
            return Err(VmmError::VcpuRun {
                index: *index,
                source: kvm_ioctls::Error::new(*errno),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_foundation_table() {
        assert_eq!(VmOutcome::GuestReportedExit(0).exit_code(), 0);
        assert_eq!(VmOutcome::GuestReportedExit(42).exit_code(), 42);
        assert_eq!(VmOutcome::CleanStop.exit_code(), 0);
        assert_eq!(VmOutcome::GuestPanic.exit_code(), 250);
        assert_eq!(VmOutcome::TripleFault.exit_code(), 251);
        assert_eq!(VmOutcome::KvmError("x".into()).exit_code(), 251);
    }

    #[test]
    fn outcome_combines_stop_and_console() {
        let mut console = ConsoleReport::default();
        let reset = (0, VcpuStop::GuestReset);
        assert_eq!(
            decide_outcome(&reset, &console).unwrap(),
            VmOutcome::CleanStop
        );
        console.exit_status = Some(3);
        assert_eq!(
            decide_outcome(&reset, &console).unwrap(),
            VmOutcome::GuestReportedExit(3)
        );
        assert_eq!(
            decide_outcome(&(0, VcpuStop::TripleFault), &console).unwrap(),
            VmOutcome::TripleFault
        );
        console.panicked = true;
        assert_eq!(
            decide_outcome(&reset, &console).unwrap(),
            VmOutcome::GuestPanic
        );
        assert_eq!(
            decide_outcome(&(0, VcpuStop::TripleFault), &console).unwrap(),
            VmOutcome::GuestPanic
        );
        console.panicked = false;
        let err = decide_outcome(&(1, VcpuStop::RunFailed(libc::EFAULT)), &console).unwrap_err();
        assert!(
            err.to_string().starts_with("vCPU 1: KVM_RUN failed"),
            "{err}"
        );
    }

    #[test]
    fn error_outcomes_say_what_happened() {
        assert!(VmOutcome::TripleFault
            .describe()
            .unwrap()
            .contains("triple fault"));
        assert!(VmOutcome::GuestPanic.describe().unwrap().contains("panic"));
        assert_eq!(VmOutcome::GuestReportedExit(3).describe(), None);
    }
}
