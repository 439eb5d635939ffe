//! x86_64 boot: the guest address map, the memory map, the MP table, the PVH and Linux boot
//! structures, and the initial vCPU state (registers, CPUID, MSRs, LAPIC, FPU).

pub mod bootparams;
pub mod cpuid;
pub mod e820;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msrs;
pub mod pvh;
pub mod regs;

use thiserror::Error;

/// Failure to prepare the boot state. These are VMM or host problems, not user mistakes.
#[derive(Debug, Error)]
pub enum BootError {
    /// A boot structure did not fit guest memory.
    #[error("cannot write the {0} into guest memory")]
    BootStructures(&'static str),
    /// A vCPU ioctl failed.
    #[error("{0} failed: {1}")]
    Vcpu(&'static str, kvm_ioctls::Error),
    /// KVM refused a boot MSR.
    #[error("KVM refused to set MSR {0:#x}")]
    Msr(u32),
    /// The MP table could not be built.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    /// The host's KVM does not keep the vCPU's TSC (msrs::check_tsc_is_kept).
    #[error(
        "the host's KVM cannot keep this VM's time stamp counter (it does not advance), so the \
         guest's timers would fire late by about the host's uptime: KVM was \
         probably loaded before the host's TSC calibration settled and cannot scale TSCs; \
         reload it (rmmod kvm_amd kvm, or kvm_intel kvm; then modprobe kvm_amd or kvm_intel)"
    )]
    TscNotKept,
}
