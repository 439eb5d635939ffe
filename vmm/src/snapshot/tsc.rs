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
//! So the TSC is set through the vCPU's TSC offset (`KVM_VCPU_TSC_OFFSET`, Linux 5.16), KVM's
//! interface for exactly this: guest TSC = host TSC (scaled to the guest's frequency) + offset,
//! one offset for every vCPU as when KVM synchronizes them itself. On an older kernel the MSR
//! is written twice: first far from any value KVM could take for a synchronization, then the
//! saved value, which is then far from the first.

use kvm_bindings::{
    kvm_device_attr, kvm_msr_entry, Msrs, KVMIO, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET,
};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use super::SnapshotError;

/// MSR_IA32_TSC.
pub const MSR_IA32_TSC: u32 = 0x10;

ioctl_iow_nr!(KVM_SET_DEVICE_ATTR, KVMIO, 0xe1, kvm_device_attr);
ioctl_iow_nr!(KVM_HAS_DEVICE_ATTR, KVMIO, 0xe3, kvm_device_attr);

/// Far enough from any TSC value KVM expects (minutes of cycles) that a write of it is never
/// taken for a synchronization.
const FAR_FROM_EXPECTED: u64 = 1 << 40;

/// The TSC the vCPUs of one restore get: the first vCPU's saved value, from the moment the
/// first vCPU is set; the others get the same offset, so the vCPUs stay in step as they were.
pub struct TscRestore {
    saved: u64,
    /// The guest's TSC frequency over the host's (KVM scales the host TSC by it).
    guest_khz: u32,
    host_khz: u32,
    offset: Option<u64>,
    first: bool,
}

impl TscRestore {
    /// For a restore whose first vCPU saved `saved`, at `guest_khz`, on a host whose vCPUs run
    /// at `host_khz` before any KVM_SET_TSC_KHZ.
    pub fn new(saved: u64, guest_khz: u32, host_khz: u32) -> Self {
        Self {
            saved,
            guest_khz,
            host_khz,
            offset: None,
            first: true,
        }
    }

    /// Sets `vcpu`'s TSC; before its TSC deadline is written, which is relative to it.
    pub fn apply(&mut self, vcpu: &VcpuFd) -> Result<(), SnapshotError> {
        let first = std::mem::replace(&mut self.first, false);
        if has_offset_control(vcpu) {
            let offset = match self.offset {
                Some(offset) => offset,
                None => {
                    let offset = self.saved.wrapping_sub(self.scaled_host_tsc());
                    self.offset = Some(offset);
                    offset
                }
            };
            set_offset(vcpu, offset)?;
        } else {
            if first {
                write_tsc(vcpu, self.saved.wrapping_add(FAR_FROM_EXPECTED))?;
            }
            // The later vCPUs' writes are within a second of the first's: KVM gives them the
            // first one's offset.
            write_tsc(vcpu, self.saved)?;
        }
        self.check(vcpu)
    }

    /// Reads the TSC back: it must have gone on from the saved value, by less than a second
    /// (the restore takes milliseconds). A restore that fails here is refused (the caller
    /// boots instead) rather than run with its timers a second late.
    fn check(&self, vcpu: &VcpuFd) -> Result<(), SnapshotError> {
        let now = read_tsc(vcpu)?;
        let one_second = u64::from(self.guest_khz) * 1000;
        let ahead = now.wrapping_sub(self.saved);
        if ahead > one_second {
            return Err(SnapshotError::Tsc {
                saved: self.saved,
                restored: now,
            });
        }
        Ok(())
    }

    /// The host's TSC now, at the guest's frequency.
    fn scaled_host_tsc(&self) -> u64 {
        // SAFETY: RDTSC only reads the time-stamp counter; every x86-64 CPU has it.
        let host = unsafe { core::arch::x86_64::_rdtsc() };
        if self.guest_khz == self.host_khz || self.host_khz == 0 {
            return host;
        }
        let scaled = u128::from(host) * u128::from(self.guest_khz) / u128::from(self.host_khz);
        scaled as u64
    }
}

fn offset_attr(offset: &u64) -> kvm_device_attr {
    kvm_device_attr {
        flags: 0,
        group: KVM_VCPU_TSC_CTRL,
        attr: u64::from(KVM_VCPU_TSC_OFFSET),
        addr: offset as *const u64 as u64,
    }
}

/// Whether this kernel lets the VMM set the vCPU's TSC offset (Linux 5.16 and later).
fn has_offset_control(vcpu: &VcpuFd) -> bool {
    let attr = offset_attr(&0);
    // SAFETY: KVM_HAS_DEVICE_ATTR reads `attr`, a valid kvm_device_attr, and ignores its addr.
    unsafe { ioctl_with_ref(vcpu, KVM_HAS_DEVICE_ATTR(), &attr) == 0 }
}

fn set_offset(vcpu: &VcpuFd, offset: u64) -> Result<(), SnapshotError> {
    let attr = offset_attr(&offset);
    // SAFETY: KVM_SET_DEVICE_ATTR reads `attr` and, through its addr, the u64 `offset`, which
    // lives until the call returns.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_SET_DEVICE_ATTR(), &attr) };
    if ret != 0 {
        return Err(SnapshotError::Kvm {
            what: "KVM_SET_DEVICE_ATTR (KVM_VCPU_TSC_OFFSET)",
            source: kvm_ioctls::Error::last(),
        });
    }
    Ok(())
}

fn read_tsc(vcpu: &VcpuFd) -> Result<u64, SnapshotError> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        ..Default::default()
    }])
    .map_err(|_| SnapshotError::Corrupt("one MSR does not fit KVM_GET_MSRS".into()))?;
    let read = vcpu
        .get_msrs(&mut msrs)
        .map_err(|source| SnapshotError::Kvm {
            what: "KVM_GET_MSRS (TSC)",
            source,
        })?;
    match msrs.as_slice().first() {
        Some(entry) if read == 1 => Ok(entry.data),
        _ => Err(SnapshotError::Msr(MSR_IA32_TSC)),
    }
}

fn write_tsc(vcpu: &VcpuFd, value: u64) -> Result<(), SnapshotError> {
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        data: value,
        ..Default::default()
    }])
    .map_err(|_| SnapshotError::Corrupt("one MSR does not fit KVM_SET_MSRS".into()))?;
    let written = vcpu.set_msrs(&msrs).map_err(|source| SnapshotError::Kvm {
        what: "KVM_SET_MSRS (TSC)",
        source,
    })?;
    if written != 1 {
        return Err(SnapshotError::Msr(MSR_IA32_TSC));
    }
    Ok(())
}
