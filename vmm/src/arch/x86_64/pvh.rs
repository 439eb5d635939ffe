//! PVH boot: the kernel's 32-bit entry (ELF note XEN_ELFNOTE_PHYS32_ENTRY) receives the
//! address of an `hvm_start_info` in EBX that points at the command line, the memory map and
//! the initramfs (as module 0).

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use vm_memory::{Bytes, GuestAddress};

use super::e820::E820Entry;
use super::layout::{PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START};
use super::BootError;
use crate::memory::GuestMemory;

/// Where the initramfs was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest-physical start.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The PVH structures, before they are written to guest memory.
#[derive(Debug)]
pub struct PvhBootInfo {
    /// The start info the kernel gets in EBX.
    pub start_info: hvm_start_info,
    /// The memory map it points at.
    pub memmap: Vec<hvm_memmap_table_entry>,
    /// Module 0, the initramfs, if any.
    pub module: Option<hvm_modlist_entry>,
}

/// Fills the PVH structures.
pub fn build(map: &[E820Entry], cmdline_addr: u64, initrd: Option<InitrdPlacement>) -> PvhBootInfo {
    let memmap: Vec<hvm_memmap_table_entry> = map
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let module = initrd.map(|i| hvm_modlist_entry {
        paddr: i.addr,
        size: i.size,
        cmdline_paddr: 0,
        reserved: 0,
    });
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: 0,
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: if module.is_some() {
            PVH_MODLIST_START
        } else {
            0
        },
        cmdline_paddr: cmdline_addr,
        rsdp_paddr: 0,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    PvhBootInfo {
        start_info,
        memmap,
        module,
    }
}

/// Writes the PVH structures; the kernel gets `PVH_INFO_START` in EBX.
pub fn write(mem: &GuestMemory, info: &PvhBootInfo) -> Result<(), BootError> {
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    if PVH_MEMMAP_START + entry_size * info.memmap.len() as u64 > ZERO_PAGE_START {
        return Err(BootError::BootStructures("PVH memory map too long"));
    }
    let write_err = |_| BootError::BootStructures("PVH start info");
    mem.write_obj(info.start_info, GuestAddress(PVH_INFO_START))
        .map_err(write_err)?;
    for (i, entry) in info.memmap.iter().enumerate() {
        mem.write_obj(
            *entry,
            GuestAddress(PVH_MEMMAP_START + i as u64 * entry_size),
        )
        .map_err(write_err)?;
    }
    if let Some(module) = info.module {
        mem.write_obj(module, GuestAddress(PVH_MODLIST_START))
            .map_err(write_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::e820::memory_map;
    use crate::arch::x86_64::layout::CMDLINE_START;
    use crate::memory::{GuestRam, RamLayout};
    use vm_memory::ByteValued;

    #[test]
    fn start_info_points_at_cmdline_memmap_and_initrd() {
        let map = memory_map(&RamLayout::new(128 << 20));
        let initrd = InitrdPlacement {
            addr: 0x7f0_0000,
            size: 0x12345,
        };
        let info = build(&map, CMDLINE_START, Some(initrd));
        let s = info.start_info;
        assert_eq!(s.magic, 0x336e_c578);
        assert_eq!(s.version, 1);
        assert_eq!(s.cmdline_paddr, CMDLINE_START);
        assert_eq!(s.memmap_entries as usize, map.len());
        assert_eq!(s.nr_modules, 1);
        assert_eq!(s.modlist_paddr, PVH_MODLIST_START);
        let m = info.module.unwrap();
        assert_eq!((m.paddr, m.size), (0x7f0_0000, 0x12345));
        assert_eq!(info.memmap[2].addr, 0x10_0000);
        assert_eq!(info.memmap[1].type_, 2);
    }

    #[test]
    fn written_layout_matches_the_abi() {
        // The ABI fixes the start info at 56 bytes and memmap entries at 24.
        assert_eq!(std::mem::size_of::<hvm_start_info>(), 56);
        assert_eq!(std::mem::size_of::<hvm_memmap_table_entry>(), 24);
        let ram = GuestRam::new(RamLayout::new(16 << 20)).unwrap();
        let map = memory_map(&RamLayout::new(16 << 20));
        let info = build(&map, CMDLINE_START, None);
        write(&ram.memory, &info).unwrap();
        let mut raw = [0u8; 56];
        ram.memory
            .read_slice(&mut raw, GuestAddress(PVH_INFO_START))
            .unwrap();
        assert_eq!(&raw[..], info.start_info.as_slice());
        assert_eq!(
            u32::from_le_bytes(raw[0..4].try_into().unwrap()),
            0x336e_c578
        );
        assert_eq!(
            u32::from_le_bytes(raw[12..16].try_into().unwrap()),
            0,
            "no modules"
        );
        assert_eq!(
            u64::from_le_bytes(raw[40..48].try_into().unwrap()),
            PVH_MEMMAP_START
        );
        let third: hvm_memmap_table_entry = ram
            .memory
            .read_obj(GuestAddress(PVH_MEMMAP_START + 48))
            .unwrap();
        assert_eq!(
            (third.addr, third.size),
            (0x10_0000, (16 << 20) - 0x10_0000)
        );
    }
}
