//! The guest kernel and initramfs: recognise the kernel file, check that everything fits the
//! guest's RAM (with an error that says how much is needed), and load them with linux-loader.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use crate::arch::x86_64::layout::HIGH_MEMORY_START;
use crate::arch::x86_64::pvh::InitrdPlacement;
use crate::arch::x86_64::regs::BootProtocol;
use crate::error::VmmError;
use crate::memory::GuestMemory;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_CLASS_64: u8 = 2;
const ELF_MACHINE_X86_64: u16 = 0x3e;
const ELF_PT_LOAD: u32 = 1;
/// vmlinux is a fixed-address executable; programs and libraries are ET_DYN or ET_REL.
const ELF_TYPE_EXEC: u16 = 2;
/// Offset of the bzImage setup header and of its "HdrS" magic.
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
/// The 64-bit entry point sits 0x200 bytes into the protected-mode kernel.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// RAM the kernel needs beyond its image and the initramfs to get to init (page tables, slab,
/// the unpacked initramfs, init's own pages). Measured tiny kernels reach init in far less.
const WORKING_MEMORY: u64 = 16 << 20;
const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;

/// The two kernel formats we boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF vmlinux.
    Elf,
    /// A bzImage.
    BzImage,
}

/// What a kernel file needs, found before touching guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelProbe {
    /// The format.
    pub format: KernelFormat,
    /// The first byte above everything the kernel occupies while it boots.
    pub end: u64,
}

/// Where and how the loaded kernel starts.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Entry point (guest-physical).
    pub entry: u64,
    /// PVH or the 64-bit Linux protocol.
    pub protocol: BootProtocol,
    /// The bzImage setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

/// Recognises the kernel and computes how far up it reaches in guest memory.
pub fn probe(path: &Path, file: &mut File) -> Result<KernelProbe, VmmError> {
    let not_kernel = || VmmError::NotAKernel(path.to_path_buf());
    let unreadable = |source| VmmError::KernelUnreadable {
        path: path.to_path_buf(),
        source,
    };
    let file_len = file.metadata().map_err(unreadable)?.len();
    let mut head = vec![0u8; 0x400.min(file_len as usize)];
    file.seek(SeekFrom::Start(0)).map_err(unreadable)?;
    file.read_exact(&mut head).map_err(unreadable)?;

    if head.len() >= 64 && &head[..4] == ELF_MAGIC {
        if head[4] != ELF_CLASS_64
            || u16_at(&head, 16) != ELF_TYPE_EXEC
            || u16_at(&head, 18) != ELF_MACHINE_X86_64
        {
            return Err(not_kernel());
        }
        let phoff = u64_at(&head, 0x20);
        let phentsize = u64::from(u16_at(&head, 0x36));
        let phnum = u64::from(u16_at(&head, 0x38));
        if phentsize < 0x38 || phnum == 0 || phnum > 64 {
            return Err(not_kernel());
        }
        let mut phdrs = vec![0u8; (phentsize * phnum) as usize];
        file.seek(SeekFrom::Start(phoff)).map_err(unreadable)?;
        file.read_exact(&mut phdrs).map_err(|_| not_kernel())?;
        let loads: Vec<(u64, u64)> = phdrs
            .chunks_exact(phentsize as usize)
            .filter(|ph| u32_at(ph, 0) == ELF_PT_LOAD)
            .map(|ph| (u64_at(ph, 0x18), u64_at(ph, 0x28)))
            .collect();
        // A kernel loads at physical addresses above the legacy first MiB; an ordinary
        // executable that slipped through the type check would not.
        if loads.is_empty() || loads.iter().any(|(paddr, _)| *paddr < HIGH_MEMORY_START) {
            return Err(not_kernel());
        }
        let end = loads
            .iter()
            .map(|(paddr, memsz)| paddr.saturating_add(*memsz))
            .max()
            .ok_or_else(not_kernel)?;
        return Ok(KernelProbe {
            format: KernelFormat::Elf,
            end,
        });
    }

    if head.len() >= HDRS_OFFSET + 4 && &head[HDRS_OFFSET..HDRS_OFFSET + 4] == HDRS_MAGIC {
        let mut header = setup_header::default();
        file.seek(SeekFrom::Start(SETUP_HEADER_OFFSET))
            .map_err(unreadable)?;
        file.read_exact(header.as_mut_slice())
            .map_err(|_| not_kernel())?;
        let setup_sects = match header.setup_sects {
            0 => 4,
            n => u64::from(n),
        };
        let payload = file_len.saturating_sub((setup_sects + 1) * 512);
        let loaded_end = HIGH_MEMORY_START + payload;
        // The decompressor needs init_size bytes from the preferred (or load) address.
        let run_base = if header.pref_address != 0 {
            header.pref_address
        } else {
            HIGH_MEMORY_START
        };
        let decompressed_end = run_base.saturating_add(u64::from(header.init_size));
        return Ok(KernelProbe {
            format: KernelFormat::BzImage,
            end: loaded_end.max(decompressed_end),
        });
    }
    Err(not_kernel())
}

/// Where the initramfs goes: page-aligned at the top of low RAM (below `addr_max` if the
/// kernel has a limit), above the kernel with room to work. Errors with the memory needed.
pub fn place_initrd(
    kernel_end: u64,
    initrd_size: u64,
    low_ram_end: u64,
    addr_max: Option<u64>,
    have_mib: u64,
) -> Result<Option<InitrdPlacement>, VmmError> {
    let aligned_size = initrd_size.next_multiple_of(PAGE);
    let need = kernel_end.next_multiple_of(2 * MIB) + aligned_size + WORKING_MEMORY;
    let too_small = VmmError::MemoryTooSmall {
        need_mib: need.div_ceil(MIB),
        have_mib,
    };
    if need > low_ram_end {
        return Err(too_small);
    }
    if initrd_size == 0 {
        return Ok(None);
    }
    let top = match addr_max {
        Some(max) => low_ram_end.min(max.saturating_add(1)),
        None => low_ram_end,
    };
    let addr = top.saturating_sub(aligned_size) & !(PAGE - 1);
    if addr < kernel_end.next_multiple_of(2 * MIB) + WORKING_MEMORY / 2 {
        return Err(too_small);
    }
    Ok(Some(InitrdPlacement {
        addr,
        size: initrd_size,
    }))
}

/// Loads the kernel into guest memory.
pub fn load(
    path: &Path,
    file: &mut File,
    format: KernelFormat,
    mem: &GuestMemory,
) -> Result<LoadedKernel, VmmError> {
    let load_err = |e: linux_loader::loader::Error| VmmError::KernelLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let highmem = Some(GuestAddress(HIGH_MEMORY_START));
    match format {
        KernelFormat::Elf => {
            let result = Elf::load(mem, None, file, highmem).map_err(load_err)?;
            Ok(match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => LoadedKernel {
                    entry: entry.0,
                    protocol: BootProtocol::Pvh,
                    setup_header: None,
                },
                // An ELF's entry is the physical address of startup_64.
                _ => LoadedKernel {
                    entry: result.kernel_load.0,
                    protocol: BootProtocol::Linux64,
                    setup_header: None,
                },
            })
        }
        KernelFormat::BzImage => {
            let result = BzImage::load(mem, None, file, highmem).map_err(load_err)?;
            Ok(LoadedKernel {
                entry: result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                protocol: BootProtocol::Linux64,
                setup_header: result.setup_header,
            })
        }
    }
}

/// Copies the initramfs into guest memory at `placement`.
pub fn load_initrd(
    path: &Path,
    file: &mut File,
    placement: InitrdPlacement,
    mem: &GuestMemory,
) -> Result<(), VmmError> {
    file.seek(SeekFrom::Start(0))
        .map_err(|source| VmmError::InitrdUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
    mem.read_exact_volatile_from(GuestAddress(placement.addr), file, placement.size as usize)
        .map_err(|e| VmmError::InitrdUnreadable {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(bytes: &[u8]) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!(
            "rkt-vmm-kernel-test-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        drop(f);
        let f = File::open(&path).unwrap();
        (path, f)
    }

    #[test]
    fn text_file_is_not_a_kernel() {
        let (path, mut f) = temp_file(b"#!/bin/sh\necho this is not a kernel\n");
        let err = probe(&path, &mut f).unwrap_err();
        assert!(err.to_string().contains("is not a Linux kernel"), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn an_ordinary_program_is_not_a_kernel() {
        // The test binary itself: a 64-bit x86 ELF, but position-independent.
        let exe = std::env::current_exe().unwrap();
        let mut f = File::open(&exe).unwrap();
        let err = probe(&exe, &mut f).unwrap_err();
        assert!(matches!(err, VmmError::NotAKernel(_)), "{err}");
    }

    #[test]
    fn elf_probe_finds_the_highest_segment() {
        let mut elf = vec![0u8; 0x200];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = ELF_CLASS_64;
        elf[16..18].copy_from_slice(&ELF_TYPE_EXEC.to_le_bytes());
        elf[18..20].copy_from_slice(&ELF_MACHINE_X86_64.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        for (i, (paddr, memsz)) in [(0x100_0000u64, 0x50_0000u64), (0x160_0000, 0x20_0000)]
            .iter()
            .enumerate()
        {
            let ph = 0x40 + i * 0x38;
            elf[ph..ph + 4].copy_from_slice(&ELF_PT_LOAD.to_le_bytes());
            elf[ph + 0x18..ph + 0x20].copy_from_slice(&paddr.to_le_bytes());
            elf[ph + 0x28..ph + 0x30].copy_from_slice(&memsz.to_le_bytes());
        }
        let (path, mut f) = temp_file(&elf);
        let p = probe(&path, &mut f).unwrap();
        assert_eq!(
            p,
            KernelProbe {
                format: KernelFormat::Elf,
                end: 0x180_0000
            }
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram() {
        let p = place_initrd(0x200_0000, 0x12_3456, 128 * MIB, None, 128)
            .unwrap()
            .unwrap();
        assert_eq!(p.addr % PAGE, 0);
        assert_eq!(p.addr + p.size.next_multiple_of(PAGE), 128 * MIB);
        let p = place_initrd(0x200_0000, 0x1000, 128 * MIB, Some(0x3ff_ffff), 128)
            .unwrap()
            .unwrap();
        assert_eq!(p.addr, 0x400_0000 - 0x1000);
        assert_eq!(
            place_initrd(0x200_0000, 0, 128 * MIB, None, 128).unwrap(),
            None
        );
    }

    #[test]
    fn too_small_memory_names_the_need() {
        let err = place_initrd(0x300_0000, 40 * MIB, 64 * MIB, None, 64).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("memory too small for kernel and initramfs: need at least 104 MiB"),
            "{msg}"
        );
    }
}
