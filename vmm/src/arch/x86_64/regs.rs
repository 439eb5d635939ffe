//! Initial vCPU state for each boot protocol.
//!
//! PVH: 32-bit protected mode, paging off, flat segments, EBX = start info (PVH spec).
//! Linux 64-bit protocol: long mode with an identity map of the first 1 GiB in 2 MiB pages,
//! `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18, RSI = zero page (Documentation/x86/boot.rst).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    PVH_INFO_START, ZERO_PAGE_START,
};
use super::BootError;
use crate::memory::GuestMemory;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Bit 1 of RFLAGS is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH 32-bit entry of an ELF vmlinux.
    Pvh,
    /// Linux 64-bit boot protocol (bzImage, or vmlinux without a PVH note).
    Linux64,
}

/// Encodes a GDT descriptor. `flags` holds the access byte in bits 0-7 and the G/DB/L/AVL
/// nibble in bits 12-15, the usual compact notation (0xc09b = 32-bit code, 0xa09b = 64-bit
/// code, 0xc093 = data).
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// Decodes a GDT descriptor into the form KVM wants, with its selector.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let granularity = ((entry >> 55) & 1) as u8;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: if granularity == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granularity,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The boot GDT for a protocol: null, null, code (selector 0x10), data (0x18), TSS (0x20).
pub fn boot_gdt(protocol: BootProtocol) -> [u64; 5] {
    let code = match protocol {
        BootProtocol::Pvh => gdt_entry(0xc09b, 0, 0xfffff),
        BootProtocol::Linux64 => gdt_entry(0xa09b, 0, 0xfffff),
    };
    [
        0,
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x008b, 0, 0x67),
    ]
}

fn write_err(_: vm_memory::GuestMemoryError) -> BootError {
    BootError::BootStructures("GDT or page tables")
}

/// Writes the GDT, an empty IDT and (for long mode) the identity page tables.
pub fn write_boot_tables(mem: &GuestMemory, protocol: BootProtocol) -> Result<(), BootError> {
    for (i, entry) in boot_gdt(protocol).iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + i as u64 * 8))
            .map_err(write_err)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(write_err)?;
    if protocol == BootProtocol::Linux64 {
        mem.write_obj(PDPTE_START | 0x3, GuestAddress(PML4_START))
            .map_err(write_err)?;
        mem.write_obj(PDE_START | 0x3, GuestAddress(PDPTE_START))
            .map_err(write_err)?;
        for i in 0..512u64 {
            // Present, writable, 2 MiB page.
            mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))
                .map_err(write_err)?;
        }
    }
    Ok(())
}

/// Special registers for the boot vCPU.
pub fn boot_sregs(mut sregs: kvm_sregs, protocol: BootProtocol) -> kvm_sregs {
    let gdt = boot_gdt(protocol);
    let code = segment_from_gdt(gdt[2], 2);
    let data = segment_from_gdt(gdt[3], 3);
    let tss = segment_from_gdt(gdt[4], 4);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootProtocol::Linux64 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    sregs
}

/// General registers for the boot vCPU.
pub fn boot_regs(entry: u64, protocol: BootProtocol) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        ..Default::default()
    };
    match protocol {
        BootProtocol::Pvh => regs.rbx = PVH_INFO_START,
        BootProtocol::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
    }
    regs
}

/// x87 and SSE control words as after FNINIT / reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Puts the boot vCPU at the kernel entry. Application processors keep KVM's reset state and
/// are started by the guest with INIT/SIPI.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: u64, protocol: BootProtocol) -> Result<(), BootError> {
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| BootError::Vcpu("KVM_GET_SREGS", e))?;
    vcpu.set_sregs(&boot_sregs(sregs, protocol))
        .map_err(|e| BootError::Vcpu("KVM_SET_SREGS", e))?;
    vcpu.set_regs(&boot_regs(entry, protocol))
        .map_err(|e| BootError::Vcpu("KVM_SET_REGS", e))?;
    Ok(())
}

/// FPU state every vCPU starts with.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), BootError> {
    vcpu.set_fpu(&boot_fpu())
        .map_err(|e| BootError::Vcpu("KVM_SET_FPU", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_round_trip() {
        let code64 = gdt_entry(0xa09b, 0, 0xfffff);
        assert_eq!(code64, 0x00af_9b00_0000_ffff);
        let seg = segment_from_gdt(code64, 2);
        assert_eq!(seg.selector, 0x10);
        assert_eq!((seg.l, seg.db, seg.g, seg.present, seg.s), (1, 0, 1, 1, 1));
        assert_eq!(seg.type_, 0xb);
        assert_eq!(seg.limit, 0xffff_ffff);
        let data = segment_from_gdt(gdt_entry(0xc093, 0, 0xfffff), 3);
        assert_eq!(
            (data.selector, data.type_, data.db, data.l),
            (0x18, 3, 1, 0)
        );
        let tss = segment_from_gdt(gdt_entry(0x008b, 0, 0x67), 4);
        assert_eq!((tss.limit, tss.g, tss.s, tss.type_), (0x67, 0, 0, 0xb));
    }

    #[test]
    fn pvh_starts_in_flat_protected_mode() {
        let s = boot_sregs(kvm_sregs::default(), BootProtocol::Pvh);
        assert_eq!(s.cr0 & X86_CR0_PE, X86_CR0_PE);
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!((s.efer, s.cr4), (0, 0));
        assert_eq!(
            (s.cs.db, s.cs.l, s.cs.base, s.cs.limit),
            (1, 0, 0, 0xffff_ffff)
        );
        let r = boot_regs(0x100_0000, BootProtocol::Pvh);
        assert_eq!((r.rip, r.rbx, r.rflags), (0x100_0000, PVH_INFO_START, 2));
    }

    #[test]
    fn linux64_starts_in_long_mode_with_zero_page_in_rsi() {
        let s = boot_sregs(kvm_sregs::default(), BootProtocol::Linux64);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_START);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!((s.cs.selector, s.cs.l, s.ds.selector), (0x10, 1, 0x18));
        let r = boot_regs(0x10_0200, BootProtocol::Linux64);
        assert_eq!((r.rsi, r.rsp), (ZERO_PAGE_START, BOOT_STACK_POINTER));
    }

    #[test]
    fn identity_map_covers_the_first_gib() {
        use crate::memory::{GuestRam, RamLayout};
        let ram = GuestRam::new(RamLayout::new(16 << 20)).unwrap();
        write_boot_tables(&ram.memory, BootProtocol::Linux64).unwrap();
        let read = |a: u64| ram.memory.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(read(PML4_START), PDPTE_START | 3);
        assert_eq!(read(PDPTE_START), PDE_START | 3);
        assert_eq!(read(PDE_START + 511 * 8), (511 << 21) | 0x83);
        assert_eq!(read(BOOT_GDT_START + 16), 0x00af_9b00_0000_ffff);
    }

    #[test]
    fn fpu_control_words() {
        let f = boot_fpu();
        assert_eq!((f.fcw, f.mxcsr), (0x37f, 0x1f80));
    }
}
