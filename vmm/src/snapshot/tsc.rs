//! Putting a restored vCPU's TSC back where the snapshot left it.
//!
//! Not by writing MSR_IA32_TSC like the other MSRs. KVM reads a host write of the TSC that
//! lands within one second of the value it expects (its last write plus the time since) as an
//! attempt to synchronize the vCPUs, keeps its own offset and drops the value
//! (`kvm_synchronize_tsc`). A vCPU is created with its TSC at zero, and nearly every snapshot is
//! taken less than a second into the guest's life: the saved TSC was dropped. The guest's TSC
//! then restarted near zero while its TSC deadline, restored after it, still held the saved
//! value, so its next timer interrupt came up to a second late and every sleep in the guest
//! waited for it (the "half-second stall" of warm pods, docs/stage1-kvm.md; caught with the
//! emulated host's KVM tracepoints: a deadline armed 0.94 s out at restore, never rewritten).
//!
//! So the saved value is written twice: first one far from any value KVM could take for a
//! synchronization, then the saved value, which is then far from the first, and KVM sets the
//! offset that makes the vCPU read it. KVM computes that offset itself, from its own reading
//! of the host's TSC. (An offset computed here from the VMM's RDTSC and set through
//! `KVM_VCPU_TSC_OFFSET` once came out 11 s off in the emulated KVM host while other VMs ran:
//! the two readings need not agree there.) The other vCPUs' writes land within a second of the
//! first's, and KVM gives them the first one's offset, so they stay in step.
//!
//! The TSC is then read back. A TSC behind the saved value means the write was dropped after
//! all, and the restore is refused: the guest's timers would be late. A TSC ahead is harmless:
//! the guest's clock is kvmclock, set on its own, and a deadline in the past fires at once.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use super::kvm_state::kvm;
use super::SnapshotError;
use crate::arch::x86_64::msrs::MSR_IA32_TSC;
use crate::arch::x86_64::BootError;

/// Far enough from any TSC value KVM expects (minutes of cycles) that a write of it is never
/// taken for a synchronization.
const FAR_FROM_EXPECTED: u64 = 1 << 40;

/// The TSC the vCPUs of one restore get: the first vCPU's saved value, from the moment the
/// first vCPU is set.
pub struct TscRestore {
    saved: u64,
    first: bool,
}

impl TscRestore {
    /// For a restore whose first vCPU saved `saved`.
    pub fn new(saved: u64) -> Self {
        Self { saved, first: true }
    }

    /// Sets `vcpu`'s TSC; before its TSC deadline is written, which is relative to it.
    pub fn apply(&mut self, vcpu: &VcpuFd) -> Result<(), SnapshotError> {
        let first = std::mem::replace(&mut self.first, false);
        // A saved 0 needs no detour: KVM takes a write of 0 for a synchronization whatever
        // came before, which leaves the TSC counting from the vCPU's creation, at or past 0.
        if first && self.saved != 0 {
            write_tsc(vcpu, self.saved.wrapping_add(FAR_FROM_EXPECTED))?;
        }
        write_tsc(vcpu, self.saved)?;
        self.check(vcpu)
    }

    /// Reads the TSC back: behind the saved value means KVM dropped the write; one that does
    /// not advance means this host's KVM cannot keep TSCs at all (msrs::check_tsc_is_kept), and
    /// the cold boot the warm path falls back to says so.
    fn check(&self, vcpu: &VcpuFd) -> Result<(), SnapshotError> {
        let now = read_tsc(vcpu)?;
        let kept = crate::arch::x86_64::msrs::check_tsc_is_kept(vcpu).is_ok();
        if now < self.saved || !kept {
            return Err(SnapshotError::Tsc {
                saved: self.saved,
                restored: now,
            });
        }
        Ok(())
    }
}

fn read_tsc(vcpu: &VcpuFd) -> Result<u64, SnapshotError> {
    crate::arch::x86_64::msrs::read_tsc(vcpu).map_err(|err| match err {
        BootError::Vcpu(what, source) => kvm(what)(source),
        _ => SnapshotError::Msr(MSR_IA32_TSC),
    })
}

fn write_tsc(vcpu: &VcpuFd, value: u64) -> Result<(), SnapshotError> {
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        data: value,
        ..Default::default()
    }])
    .map_err(|_| SnapshotError::Corrupt("one MSR does not fit KVM_SET_MSRS".into()))?;
    let written = vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS (TSC)"))?;
    if written != 1 {
        return Err(SnapshotError::Msr(MSR_IA32_TSC));
    }
    Ok(())
}
