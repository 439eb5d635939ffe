//! Guest RAM: anonymous host memory mapped 2 MiB-aligned so that KVM can back the guest with
//! huge pages (measured in the emulated KVM host: ~4,400 4K nested page faults before /init
//! without the alignment, 13 with it), registered with vm-memory.

use std::io;
use std::ptr::null_mut;
use std::sync::Arc;

use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// Guest memory as the rest of the VMM sees it.
pub type GuestMemory = GuestMemoryMmap<()>;

const HUGE_PAGE: usize = 2 << 20;

/// Where the guest's RAM lives in guest-physical space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    /// RAM from address 0 up to at most the MMIO gap.
    pub low_size: u64,
    /// RAM from 4 GiB, for guests larger than the space below the gap.
    pub high_size: u64,
}

impl RamLayout {
    /// Splits `mem_bytes` around the 32-bit MMIO gap.
    pub fn new(mem_bytes: u64) -> Self {
        let low_size = mem_bytes.min(MMIO_GAP_START);
        RamLayout {
            low_size,
            high_size: mem_bytes - low_size,
        }
    }

    /// The (guest address, size) of each RAM region, in address order.
    pub fn regions(&self) -> Vec<(GuestAddress, u64)> {
        let mut regions = vec![(GuestAddress(0), self.low_size)];
        if self.high_size > 0 {
            regions.push((GuestAddress(MMIO_GAP_END), self.high_size));
        }
        regions
    }
}

/// Failure to set up guest RAM.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The host refused the mapping.
    #[error("cannot map {size} bytes of guest memory: {source}: lower --mem or free host memory")]
    Mmap {
        /// Requested size.
        size: u64,
        /// The mmap error.
        source: io::Error,
    },
    /// vm-memory refused the region set (overlap or size), a VMM bug.
    #[error("cannot describe guest memory: {0}")]
    Regions(String),
}

/// One host mapping backing one guest RAM region; unmapped when dropped, so it must outlive
/// every user of the `GuestMemory` built on it (the VM keeps both and drops the memory first).
#[derive(Debug)]
pub struct HostMapping {
    addr: *mut u8,
    size: usize,
}

impl HostMapping {
    /// Maps `size` bytes of zeroed anonymous memory at a 2 MiB-aligned host address.
    fn new_huge_aligned(size: usize) -> Result<Self, MemoryError> {
        let mmap_err = |source| MemoryError::Mmap {
            size: size as u64,
            source,
        };
        let padded = size
            .checked_add(HUGE_PAGE)
            .ok_or_else(|| mmap_err(io::Error::from_raw_os_error(libc::ENOMEM)))?;
        // SAFETY: a fresh anonymous private mapping at an address of the kernel's choosing does
        // not alias anything; the result is checked below.
        let raw = unsafe {
            libc::mmap(
                null_mut(),
                padded,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(mmap_err(io::Error::last_os_error()));
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(HUGE_PAGE);
        let head = aligned - start;
        let tail = padded - head - size;
        // SAFETY: both ranges lie inside the mapping created above and are not used by anyone:
        // trimming them leaves exactly [aligned, aligned + size) mapped.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + size) as *mut libc::c_void, tail);
            }
            // Best effort: the host may run THP in "madvise" mode; failure only costs speed.
            libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
        }
        Ok(HostMapping {
            addr: aligned as *mut u8,
            size,
        })
    }

    /// Maps `size` bytes of `file` from `offset`, private (copy-on-write: the guest's writes
    /// never reach the file, and every VM mapping the same file shares its page cache until it
    /// writes), at a 2 MiB-aligned host address. Huge pages: private copies of file pages are
    /// made 4 KiB at a time, so KVM maps such memory with 4 KiB pages (the price of sharing).
    fn new_file_private(
        size: usize,
        file: &std::fs::File,
        offset: u64,
    ) -> Result<Self, MemoryError> {
        use std::os::fd::AsRawFd;
        let reserved = HostMapping::new_huge_aligned(size)?;
        let mmap_err = |source| MemoryError::Mmap {
            size: size as u64,
            source,
        };
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| mmap_err(io::Error::from_raw_os_error(libc::EINVAL)))?;
        // SAFETY: MAP_FIXED replaces exactly the anonymous range we reserved above and own (no
        // one else uses it yet); the file descriptor is valid for the call.
        let raw = unsafe {
            libc::mmap(
                reserved.addr as *mut libc::c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                offset,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(mmap_err(io::Error::last_os_error()));
        }
        Ok(reserved)
    }

    /// Host address of the mapping (for tests and KVM registration checks).
    pub fn host_addr(&self) -> usize {
        self.addr as usize
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: we created this mapping and nobody uses it once the VM (and its GuestMemory)
        // is gone, which the field order of `GuestRam` guarantees.
        unsafe {
            libc::munmap(self.addr as *mut libc::c_void, self.size);
        }
    }
}

/// Guest RAM: vm-memory's view plus the host mappings that back it.
pub struct GuestRam {
    /// The guest memory used by loaders, devices and KVM registration.
    pub memory: GuestMemory,
    /// Keeps the mappings alive; declared after `memory` so it is dropped after it.
    mappings: Vec<HostMapping>,
}

impl GuestRam {
    /// Maps RAM for `layout`.
    pub fn new(layout: RamLayout) -> Result<Self, MemoryError> {
        let mut mappings = Vec::new();
        for (guest_addr, size) in layout.regions() {
            mappings.push((guest_addr, HostMapping::new_huge_aligned(size as usize)?));
        }
        Self::from_mappings(
            mappings,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
    }

    /// Maps RAM for `layout` from `file`, which holds the regions one after the other (a
    /// snapshot's memory file), private and copy-on-write. The caller checked the file's size.
    pub fn from_file(layout: RamLayout, file: &std::fs::File) -> Result<Self, MemoryError> {
        let mut mappings = Vec::new();
        let mut offset = 0u64;
        for (guest_addr, size) in layout.regions() {
            mappings.push((
                guest_addr,
                HostMapping::new_file_private(size as usize, file, offset)?,
            ));
            offset += size;
        }
        Self::from_mappings(mappings, libc::MAP_PRIVATE | libc::MAP_NORESERVE)
    }

    /// vm-memory's view of host mappings placed at their guest addresses; `flags` are the
    /// mmap flags they were made with.
    fn from_mappings(
        placed: Vec<(GuestAddress, HostMapping)>,
        flags: libc::c_int,
    ) -> Result<Self, MemoryError> {
        let mut mappings = Vec::new();
        let mut regions = Vec::new();
        for (guest_addr, mapping) in placed {
            // SAFETY: `mapping` covers exactly `mapping.size` bytes, readable and writable, and
            // lives as long as `GuestRam`, which owns both it and the region.
            let region = unsafe {
                MmapRegion::<()>::build_raw(
                    mapping.addr,
                    mapping.size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                )
            }
            .map_err(|e| MemoryError::Regions(e.to_string()))?;
            let region = GuestRegionMmap::new(region, guest_addr).ok_or_else(|| {
                MemoryError::Regions(format!("region at {:#x} overflows", guest_addr.0))
            })?;
            regions.push(Arc::new(region));
            mappings.push(mapping);
        }
        let memory = GuestMemoryMmap::from_arc_regions(regions)
            .map_err(|e| MemoryError::Regions(e.to_string()))?;
        Ok(GuestRam { memory, mappings })
    }

    /// The host mappings, in guest address order.
    pub fn mappings(&self) -> &[HostMapping] {
        &self.mappings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn small_guest_has_only_low_ram() {
        let l = RamLayout::new(128 << 20);
        assert_eq!(l.regions(), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn large_guest_continues_above_4g() {
        let l = RamLayout::new(4 << 30);
        assert_eq!(
            l.regions(),
            vec![
                (GuestAddress(0), MMIO_GAP_START),
                (GuestAddress(MMIO_GAP_END), (4 << 30) - MMIO_GAP_START)
            ]
        );
    }

    #[test]
    fn ram_is_2mib_aligned_and_usable() {
        let ram = GuestRam::new(RamLayout::new(6 << 20)).unwrap();
        for m in ram.mappings() {
            assert_eq!(m.host_addr() % HUGE_PAGE, 0);
        }
        let region = ram.memory.iter().next().unwrap();
        assert_eq!(region.len(), 6 << 20);
        ram.memory
            .write_obj(0xdead_beef_u32, GuestAddress(0x5000))
            .unwrap();
        assert_eq!(
            ram.memory.read_obj::<u32>(GuestAddress(0x5000)).unwrap(),
            0xdead_beef
        );
    }
}
