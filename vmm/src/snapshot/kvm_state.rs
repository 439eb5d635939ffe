//! KVM's part of a snapshot: each vCPU's registers and the VM's interrupt controllers, PIT and
//! kvmclock, saved with the KVM_GET_* ioctls and put back with the KVM_SET_* ones.
//!
//! Order matters on restore (as KVM's documentation and other VMMs have it): CPUID first (it
//! decides which state is valid), then MP state, general and special registers (the latter
//! carry the APIC base), XSAVE, XCRs, debug registers, the LAPIC, the TSC (written so that KVM
//! cannot take it for a synchronization: tsc.rs) before the other MSRs (the TSC deadline is
//! relative to it), and last the pending events. The kvmclock is set after the vCPUs, without
//! KVM_CLOCK_REALTIME, so the guest's monotonic clock continues where it stopped; the wall
//! clock is stepped by guest-init from the handover.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{VcpuFd, VmFd};
use zerocopy::{FromBytes, IntoBytes};

use super::format::{Blob, VcpuState, VmState};
use super::tsc::TscRestore;
use super::SnapshotError;
use crate::arch::x86_64::msrs::MSR_IA32_TSC;

/// MSR_IA32_TSC_DEADLINE: meaningful only once the TSC is set, so it is restored last.
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// How many MSRs one KVM_GET/SET_MSRS call handles here.
const MSR_CHUNK: usize = 64;

fn blob<T: IntoBytes + zerocopy::Immutable>(value: &T) -> Blob {
    Blob(value.as_bytes().to_vec())
}

/// Reads a KVM structure back from its bytes; a wrong length is a corrupt file.
fn from_blob<T: FromBytes>(blob: &Blob, what: &str) -> Result<T, SnapshotError> {
    T::read_from_bytes(&blob.0).map_err(|_| {
        SnapshotError::Corrupt(format!(
            "{what} is {} bytes, expected {}",
            blob.0.len(),
            std::mem::size_of::<T>()
        ))
    })
}

pub(super) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm { what, source }
}

/// Saves vCPU `vcpu`, which must be out of KVM_RUN with no I/O half done, given the CPUID
/// table it was created with and the MSRs KVM lists.
pub fn save_vcpu(
    vcpu: &VcpuFd,
    cpuid: &CpuId,
    msr_indexes: &[u32],
) -> Result<VcpuState, SnapshotError> {
    // KVM_GET_MP_STATE first: it makes KVM process pending INIT/SIPI events, which the other
    // state then reflects.
    let mp_state = vcpu.get_mp_state().map_err(kvm("KVM_GET_MP_STATE"))?;
    let regs = vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
    let sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let xsave = vcpu.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?;
    let xcrs = vcpu.get_xcrs().map_err(kvm("KVM_GET_XCRS"))?;
    let debug_regs = vcpu.get_debug_regs().map_err(kvm("KVM_GET_DEBUGREGS"))?;
    let lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    let msrs = save_msrs(vcpu, msr_indexes)?;
    let events = vcpu.get_vcpu_events().map_err(kvm("KVM_GET_VCPU_EVENTS"))?;
    let tsc_khz = vcpu.get_tsc_khz().map_err(kvm("KVM_GET_TSC_KHZ"))?;
    Ok(VcpuState {
        cpuid: cpuid.as_slice().iter().map(blob).collect(),
        mp_state: blob(&mp_state),
        regs: blob(&regs),
        sregs: blob(&sregs),
        xsave: blob(&xsave),
        xcrs: blob(&xcrs),
        debug_regs: blob(&debug_regs),
        lapic: blob(&lapic),
        msrs,
        events: blob(&events),
        tsc_khz,
    })
}

/// Reads every listed MSR that KVM lets us read. KVM_GET_MSRS stops at the first MSR it
/// cannot read and returns how many it did; that one is skipped and the rest read on.
fn save_msrs(vcpu: &VcpuFd, indexes: &[u32]) -> Result<Vec<(u32, u64)>, SnapshotError> {
    let mut saved = Vec::with_capacity(indexes.len());
    let mut rest: &[u32] = indexes;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(MSR_CHUNK)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| {
            SnapshotError::Corrupt("too many MSRs for one KVM_GET_MSRS call".into())
        })?;
        let read = vcpu.get_msrs(&mut msrs).map_err(kvm("KVM_GET_MSRS"))?;
        saved.extend(msrs.as_slice()[..read].iter().map(|e| (e.index, e.data)));
        // `read` entries worked; the next one (if any) cannot be read and is skipped.
        let consumed = if read < chunk.len() { read + 1 } else { read };
        rest = &rest[consumed..];
    }
    // The TSC deadline is a TSC value: write it after the TSC.
    saved.sort_by_key(|&(index, _)| index == MSR_IA32_TSC_DEADLINE);
    Ok(saved)
}

/// Puts `state` into a freshly created vCPU that already has its CPUID table. `tsc` is the
/// restore's TSC (`tsc.rs`, made from the first vCPU's state by [`saved_tsc`]), the same one
/// for every vCPU of a restore, in order.
pub fn restore_vcpu(
    vcpu: &VcpuFd,
    state: &VcpuState,
    tsc: Option<&mut TscRestore>,
) -> Result<(), SnapshotError> {
    let current_khz = vcpu.get_tsc_khz().map_err(kvm("KVM_GET_TSC_KHZ"))?;
    if current_khz != state.tsc_khz {
        // Needs TSC scaling in the host CPU; without it the guest's clocks would drift.
        vcpu.set_tsc_khz(state.tsc_khz)
            .map_err(|_| SnapshotError::TscFrequency {
                saved: state.tsc_khz,
                host: current_khz,
            })?;
    }
    let mp_state: kvm_mp_state = from_blob(&state.mp_state, "mp_state")?;
    vcpu.set_mp_state(mp_state)
        .map_err(kvm("KVM_SET_MP_STATE"))?;
    let regs: kvm_regs = from_blob(&state.regs, "regs")?;
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
    let sregs: kvm_sregs = from_blob(&state.sregs, "sregs")?;
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
    let xsave: kvm_xsave = from_blob(&state.xsave, "xsave")?;
    // SAFETY: KVM_SET_XSAVE reads the vCPU's `guest_fpu.uabi_size` bytes, which exceeds the
    // 4 KiB of `kvm_xsave` only when the VMM asked for dynamic XSAVE features (AMX) with
    // arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM); this VMM never does, so KVM reads within `xsave`.
    unsafe { vcpu.set_xsave(&xsave) }.map_err(kvm("KVM_SET_XSAVE"))?;
    let xcrs: kvm_xcrs = from_blob(&state.xcrs, "xcrs")?;
    vcpu.set_xcrs(&xcrs).map_err(kvm("KVM_SET_XCRS"))?;
    let debug_regs: kvm_debugregs = from_blob(&state.debug_regs, "debug_regs")?;
    vcpu.set_debug_regs(&debug_regs)
        .map_err(kvm("KVM_SET_DEBUGREGS"))?;
    let lapic: kvm_lapic_state = from_blob(&state.lapic, "lapic")?;
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    // The TSC first, on its own (tsc.rs says why not with the other MSRs).
    if let Some(tsc) = tsc {
        tsc.apply(vcpu)?;
    }
    let msrs: Vec<(u32, u64)> = state
        .msrs
        .iter()
        .copied()
        .filter(|&(index, _)| index != MSR_IA32_TSC)
        .collect();
    for chunk in msrs.chunks(MSR_CHUNK) {
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries)
            .map_err(|_| SnapshotError::Corrupt("too many MSRs in one chunk".into()))?;
        let written = vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        if written < entries.len() {
            return Err(SnapshotError::Msr(entries[written].index));
        }
    }
    let events: kvm_vcpu_events = from_blob(&state.events, "vcpu events")?;
    vcpu.set_vcpu_events(&events)
        .map_err(kvm("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

/// The TSC a vCPU had when it was saved.
pub fn saved_tsc(state: &VcpuState) -> Option<u64> {
    state
        .msrs
        .iter()
        .find(|&&(index, _)| index == MSR_IA32_TSC)
        .map(|&(_, value)| value)
}

/// The CPUID entries of a saved vCPU.
pub fn saved_cpuid(state: &VcpuState) -> Result<Vec<kvm_cpuid_entry2>, SnapshotError> {
    state
        .cpuid
        .iter()
        .map(|b| from_blob::<kvm_cpuid_entry2>(b, "cpuid entry"))
        .collect()
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<Blob, SnapshotError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).map_err(kvm("KVM_GET_IRQCHIP"))?;
    Ok(blob(&chip))
}

/// Saves the VM-wide state (the vCPUs must be stopped).
pub fn save_vm(vm: &VmFd) -> Result<VmState, SnapshotError> {
    let pit = vm.get_pit2().map_err(kvm("KVM_GET_PIT2"))?;
    let clock = vm.get_clock().map_err(kvm("KVM_GET_CLOCK"))?;
    Ok(VmState {
        pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
        pit: blob(&pit),
        clock: blob(&clock),
    })
}

/// Restores the interrupt controllers and the PIT (before the vCPUs run).
pub fn restore_vm_devices(vm: &VmFd, state: &VmState) -> Result<(), SnapshotError> {
    let pit: kvm_pit_state2 = from_blob(&state.pit, "pit")?;
    vm.set_pit2(&pit).map_err(kvm("KVM_SET_PIT2"))?;
    for (blob, id, what) in [
        (&state.pic_master, KVM_IRQCHIP_PIC_MASTER, "pic master"),
        (&state.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "pic slave"),
        (&state.ioapic, KVM_IRQCHIP_IOAPIC, "ioapic"),
    ] {
        let chip: kvm_irqchip = from_blob(blob, what)?;
        if chip.chip_id != id {
            return Err(SnapshotError::Corrupt(format!(
                "{what} has chip id {}",
                chip.chip_id
            )));
        }
        vm.set_irqchip(&chip).map_err(kvm("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}

/// Sets kvmclock to the saved value (after the vCPUs are restored).
pub fn restore_clock(vm: &VmFd, state: &VmState) -> Result<(), SnapshotError> {
    let mut clock: kvm_clock_data = from_blob(&state.clock, "clock")?;
    // No KVM_CLOCK_REALTIME: continue from the saved value instead of adding the time the
    // snapshot spent on disk (the guest's wall clock comes from the handover).
    clock.flags = 0;
    clock.realtime = 0;
    clock.host_tsc = 0;
    vm.set_clock(&clock).map_err(kvm("KVM_SET_CLOCK"))?;
    Ok(())
}
