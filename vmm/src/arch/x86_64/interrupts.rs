//! Local APIC wiring as a PC has it: LINT0 receives the 8259's ExtINT, LINT1 is the NMI line.

use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::VcpuFd;

use super::BootError;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const DELIVERY_MODE_NMI: u32 = 0x4;
const DELIVERY_MODE_EXTINT: u32 = 0x7;

fn read_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([
        bytes[0] as u8,
        bytes[1] as u8,
        bytes[2] as u8,
        bytes[3] as u8,
    ])
}

fn write_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        lapic.regs[offset + i] = *b as _;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Sets LINT0 to ExtINT and LINT1 to NMI in a LAPIC state.
pub fn wire_local_interrupts(lapic: &mut kvm_lapic_state) {
    let lvt0 = read_reg(lapic, APIC_LVT0);
    write_reg(
        lapic,
        APIC_LVT0,
        with_delivery_mode(lvt0, DELIVERY_MODE_EXTINT),
    );
    let lvt1 = read_reg(lapic, APIC_LVT1);
    write_reg(
        lapic,
        APIC_LVT1,
        with_delivery_mode(lvt1, DELIVERY_MODE_NMI),
    );
}

/// Applies [`wire_local_interrupts`] to a vCPU's in-kernel LAPIC.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), BootError> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| BootError::Vcpu("KVM_GET_LAPIC", e))?;
    wire_local_interrupts(&mut lapic);
    vcpu.set_lapic(&lapic)
        .map_err(|e| BootError::Vcpu("KVM_SET_LAPIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_delivery_modes() {
        let mut lapic = kvm_lapic_state::default();
        // Masked with some vector bits set, as after reset; only the mode may change.
        write_reg(&mut lapic, APIC_LVT0, 0x0001_0000);
        write_reg(&mut lapic, APIC_LVT1, 0x0001_0700);
        wire_local_interrupts(&mut lapic);
        assert_eq!(read_reg(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!(read_reg(&lapic, APIC_LVT1), 0x0001_0400);
    }
}
