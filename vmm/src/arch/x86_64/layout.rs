//! Guest physical address map. Everything the VMM writes before the first instruction lives
//! below 1 MiB except the kernel, the initramfs and the command line's generous slot.
//!
//! ```text
//! 0x0000_0500  GDT (5 entries), then an empty IDT at 0x520
//! 0x0000_6000  PVH hvm_start_info, its module list and its memory map
//! 0x0000_7000  Linux zero page (boot_params) for bzImage / 64-bit boot
//! 0x0000_8ff0  initial stack pointer (grows down, below the page tables)
//! 0x0000_9000  PML4, PDPT at 0xa000, PD at 0xb000: identity map of the first 1 GiB
//! 0x0002_0000  kernel command line (up to 64 KiB reserved, 2 KiB used)
//! 0x0009_fc00  EBDA start: everything up to 1 MiB is reported as reserved
//! 0x000f_0000  MP floating pointer + MP configuration table (BIOS area, scanned by Linux)
//! 0x0010_0000  bzImage protected-mode code (vmlinux loads at its own p_paddr)
//! ...          RAM; the initramfs sits at the top of low RAM
//! 0xc000_0000  start of the 32-bit MMIO gap (no RAM from here to 4 GiB)
//! 0xd000_0000  virtio-mmio device windows (4 KiB each)
//! 0xfec0_0000  IOAPIC; 0xfee0_0000 LAPIC
//! 0xfffb_c000  KVM identity-map page and TSS (3 pages) for VMX real-mode emulation
//! 0x1_0000_0000  RAM above 4 GiB when the guest has more than 3 GiB
//! ```

/// The boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT: the kernel installs its own before enabling interrupts.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (one entry: the initramfs).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map (the e820 table in PVH format).
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Linux zero page.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit boot protocol.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 table.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (512 x 2 MiB pages = 1 GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Space reserved for the command line.
pub const CMDLINE_MAX_SIZE: u64 = 0x10000;
/// Start of the extended BIOS data area: reported as reserved from here to 1 MiB.
pub const EBDA_START: u64 = 0x9fc00;
/// MP floating pointer structure, followed by the MP configuration table.
pub const MPTABLE_START: u64 = 0xf0000;
/// Size of the BIOS area the MP table must fit in.
pub const MPTABLE_MAX_SIZE: u64 = 0x10000;
/// First byte above the legacy area; the bzImage protected-mode kernel loads here.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO gap: low RAM stops here.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO gap: high RAM (if any) starts here.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Window for virtio-mmio devices, one 4 KiB page per device, declared to the guest on the
/// kernel command line (`virtio_mmio.device=4K@0xd0000000:5`).
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of the virtio-mmio window (4096 devices at most).
pub const VIRTIO_MMIO_SIZE: u64 = 0x100_0000;
/// One virtio-mmio device's window.
pub const VIRTIO_MMIO_DEVICE_SIZE: u64 = 0x1000;

/// The IOAPIC's MMIO base, as KVM's in-kernel IOAPIC emulates it.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APIC's MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's identity-map page for VMX real-mode emulation (one page, inside the MMIO gap).
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// KVM's TSS area (three pages right after the identity map page).
pub const KVM_TSS_START: u64 = 0xfffb_d000;

/// Number of IOAPIC pins KVM's in-kernel IOAPIC has.
pub const IOAPIC_PINS: u8 = 24;

// The fixed parts of the map, checked at compile time.
const _: () = {
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE <= EBDA_START);
    assert!(BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + 0x1000);
    assert!(VIRTIO_MMIO_START >= MMIO_GAP_START);
    assert!(VIRTIO_MMIO_START + VIRTIO_MMIO_SIZE <= IOAPIC_START);
    assert!(KVM_IDENTITY_MAP_START > APIC_START && KVM_TSS_START + 0x3000 <= MMIO_GAP_END);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut ranges = [
            (BOOT_GDT_START, BOOT_IDT_START + 8),
            (PVH_INFO_START, PVH_MODLIST_START),
            (PVH_MODLIST_START, PVH_MEMMAP_START),
            (PVH_MEMMAP_START, ZERO_PAGE_START),
            (ZERO_PAGE_START, ZERO_PAGE_START + 0x1000),
            (PML4_START, PDE_START + 0x1000),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX_SIZE),
            (MPTABLE_START, MPTABLE_START + MPTABLE_MAX_SIZE),
        ];
        ranges.sort();
        for pair in ranges.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?}");
        }
    }
}
