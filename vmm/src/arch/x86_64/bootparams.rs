//! The Linux zero page (`boot_params`) for the 64-bit boot protocol, used for a bzImage and for
//! an ELF vmlinux without a PVH note.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress};

use super::e820::E820Entry;
use super::layout::ZERO_PAGE_START;
use super::pvh::InitrdPlacement;
use super::BootError;
use crate::memory::GuestMemory;

/// "HdrS": a setup header follows.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// The boot sector signature the kernel expects in `boot_flag`.
const BOOT_FLAG: u16 = 0xaa55;
/// "Undefined" boot loader ID: we are not one of the registered ones.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Default kernel alignment when no setup header exists (ELF vmlinux).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// The zero page holds at most this many e820 entries.
const E820_MAX: usize = 128;

/// Fills a zero page from the kernel's own setup header (bzImage) or a minimal one (vmlinux).
pub fn build(
    kernel_header: Option<setup_header>,
    map: &[E820Entry],
    cmdline_addr: u64,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
) -> Result<boot_params, BootError> {
    let hdr = match kernel_header {
        Some(header) => header,
        None => setup_header {
            boot_flag: BOOT_FLAG,
            header: HDRS_MAGIC,
            kernel_alignment: DEFAULT_KERNEL_ALIGNMENT,
            ..Default::default()
        },
    };
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = cmdline_addr as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
        params.ext_ramdisk_image = (initrd.addr >> 32) as u32;
        params.ext_ramdisk_size = (initrd.size >> 32) as u32;
    }
    if map.len() > E820_MAX {
        return Err(BootError::BootStructures("too many e820 entries"));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the zero page; the kernel gets `ZERO_PAGE_START` in RSI.
pub fn write(mem: &GuestMemory, params: &boot_params) -> Result<(), BootError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| BootError::BootStructures("zero page"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::e820::memory_map;
    use crate::memory::{GuestRam, RamLayout};

    #[test]
    fn vmlinux_zero_page_has_a_minimal_header() {
        let map = memory_map(&RamLayout::new(64 << 20));
        let p = build(None, &map, 0x20000, 42, None).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
        assert_eq!(p.e820_entries as usize, map.len());
        let third = p.e820_table[2];
        assert_eq!(({ third.addr }, { third.r#type }), (0x10_0000, 1));
    }

    #[test]
    fn bzimage_header_is_kept_and_initrd_recorded() {
        let header = setup_header {
            header: HDRS_MAGIC,
            version: 0x20f,
            loadflags: 1,
            code32_start: 0x10_0000,
            ..Default::default()
        };
        let map = memory_map(&RamLayout::new(64 << 20));
        let initrd = InitrdPlacement {
            addr: 0x3c0_0000,
            size: 0x20_0000,
        };
        let p = build(Some(header), &map, 0x20000, 10, Some(initrd)).unwrap();
        assert_eq!({ p.hdr.version }, 0x20f);
        assert_eq!({ p.hdr.loadflags }, 1);
        assert_eq!({ p.hdr.ramdisk_image }, 0x3c0_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x20_0000);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
    }

    #[test]
    fn zero_page_lands_at_its_offsets() {
        let ram = GuestRam::new(RamLayout::new(16 << 20)).unwrap();
        let map = memory_map(&RamLayout::new(16 << 20));
        write(&ram.memory, &build(None, &map, 0x20000, 5, None).unwrap()).unwrap();
        let byte = |off: u64| {
            ram.memory
                .read_obj::<u8>(GuestAddress(ZERO_PAGE_START + off))
                .unwrap()
        };
        assert_eq!(byte(0x1e8), map.len() as u8, "e820_entries");
        assert_eq!(byte(0x210), 0xff, "type_of_loader");
        let word = ram
            .memory
            .read_obj::<u32>(GuestAddress(ZERO_PAGE_START + 0x228))
            .unwrap();
        assert_eq!(word, 0x20000, "cmd_line_ptr");
    }
}
