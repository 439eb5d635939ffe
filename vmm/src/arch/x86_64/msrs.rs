//! Model-specific registers every vCPU starts with: syscall MSRs cleared, TSC at zero, fast
//! strings on, and MTRRs defaulting to write-back (otherwise the guest treats RAM as uncached).

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use super::BootError;

/// The time-stamp counter (also restored on its own: snapshot/tsc.rs).
pub const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_TYPE_WRITE_BACK: u64 = 6;

/// The (index, value) pairs written at boot.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRITE_BACK),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Writes the boot MSRs; KVM stops at the first one it rejects, which the error names.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), BootError> {
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(|_| BootError::Msr(0))?;
    let written = vcpu
        .set_msrs(&msrs)
        .map_err(|e| BootError::Vcpu("KVM_SET_MSRS", e))?;
    if written != entries.len() {
        let index = entries.get(written).map_or(0, |e| e.index);
        return Err(BootError::Msr(index));
    }
    Ok(())
}

/// The vCPU's TSC as KVM has it (a host-initiated read of MSR_IA32_TSC).
pub fn read_tsc(vcpu: &VcpuFd) -> Result<u64, BootError> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        ..Default::default()
    }])
    .map_err(|_| BootError::Msr(MSR_IA32_TSC))?;
    let read = vcpu
        .get_msrs(&mut msrs)
        .map_err(|e| BootError::Vcpu("KVM_GET_MSRS (TSC)", e))?;
    match msrs.as_slice().first() {
        Some(entry) if read == 1 => Ok(entry.data),
        _ => Err(BootError::Msr(MSR_IA32_TSC)),
    }
}

/// How long a TSC that did not move between two reads gets before the host is blamed: millions
/// of cycles.
const TSC_SECOND_LOOK: std::time::Duration = std::time::Duration::from_millis(1);

/// Refuses a host whose KVM does not keep a vCPU's TSC running. Without TSC scaling, a KVM that
/// was loaded before the host's TSC calibration settled, and whose recorded rate then differed
/// from the host's by more than its tolerance (`tsc_tolerance_ppm`), leaves every new VM's TSC
/// multiplier at zero: to KVM the guest's TSC then stands still (at 0, or at the value last
/// written) while the guest sees the host's TSC, and each TSC deadline the guest arms fires as
/// many seconds late as the host has been up. The guest boots, then hangs whenever it waits for
/// a timer. Seen in the emulated KVM host of the tests (tests/kvm-host/README.md, "TSC rate and
/// KVM"); a host in that state must be told, not given a VM that hangs. A running TSC moves
/// between two reads (GHz), so the check costs two KVM_GET_MSRS.
pub fn check_tsc_is_kept(vcpu: &VcpuFd) -> Result<(), BootError> {
    tsc_advances(|| read_tsc(vcpu), || std::thread::sleep(TSC_SECOND_LOOK))
}

/// The decision of [`check_tsc_is_kept`], over any way of reading a TSC and of waiting.
fn tsc_advances(
    mut read: impl FnMut() -> Result<u64, BootError>,
    wait: impl FnOnce(),
) -> Result<(), BootError> {
    let first = read()?;
    if read()? != first {
        return Ok(());
    }
    wait();
    if read()? == first {
        return Err(BootError::TscNotKept);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TSC that moves passes at once; one that stands still for two reads gets a second
    /// look after the wait; one that still has not moved (what a KVM that left the TSC
    /// multiplier at zero gives) is refused; a failed read is an error, not a verdict.
    #[test]
    fn a_tsc_that_does_not_advance_is_refused() {
        let reads = |values: Vec<u64>| {
            let mut values = values.into_iter();
            move || values.next().ok_or(BootError::Msr(MSR_IA32_TSC))
        };
        let mut waited = false;
        assert!(tsc_advances(reads(vec![10, 20]), || waited = true).is_ok());
        assert!(!waited, "a moving TSC needs no second look");
        assert!(tsc_advances(reads(vec![5, 5, 9]), || waited = true).is_ok());
        assert!(waited);
        assert!(matches!(
            tsc_advances(reads(vec![0, 0, 0]), || ()),
            Err(BootError::TscNotKept)
        ));
        assert!(matches!(
            tsc_advances(reads(vec![7, 7, 7]), || ()),
            Err(BootError::TscNotKept)
        ));
        assert!(matches!(
            tsc_advances(reads(vec![1]), || ()),
            Err(BootError::Msr(MSR_IA32_TSC))
        ));
    }

    #[test]
    fn mtrr_default_is_write_back_and_enabled() {
        let entries = boot_msr_entries();
        let mtrr = entries
            .iter()
            .find(|e| e.index == MSR_MTRR_DEF_TYPE)
            .unwrap();
        assert_eq!(mtrr.data, 0x806);
        let misc = entries
            .iter()
            .find(|e| e.index == MSR_IA32_MISC_ENABLE)
            .unwrap();
        assert_eq!(misc.data & 1, 1);
        assert_eq!(entries.len(), 11);
    }
}
