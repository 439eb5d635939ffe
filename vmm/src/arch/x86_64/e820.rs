//! The guest memory map that both boot paths hand to the kernel (the zero page's e820 table and
//! the PVH memory map carry the same entries).

use super::layout::{EBDA_START, HIGH_MEMORY_START};
use crate::memory::RamLayout;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// One memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest-physical byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The guest's memory map: conventional memory below the EBDA, the legacy BIOS area reserved
/// (it holds our MP table), RAM from 1 MiB to the end of low RAM, and RAM above 4 GiB if any.
pub fn memory_map(ram: &RamLayout) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIGH_MEMORY_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    if ram.low_size > HIGH_MEMORY_START {
        map.push(E820Entry {
            addr: HIGH_MEMORY_START,
            size: ram.low_size - HIGH_MEMORY_START,
            kind: E820_RAM,
        });
    }
    for (addr, size) in ram.regions().into_iter().skip(1) {
        map.push(E820Entry {
            addr: addr.0,
            size,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};

    #[test]
    fn small_guest_map() {
        let map = memory_map(&RamLayout::new(128 << 20));
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x60400,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x100000,
                    size: (128 << 20) - 0x100000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn large_guest_map_skips_the_mmio_gap() {
        let map = memory_map(&RamLayout::new(5 << 30));
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_eq!(map[3].addr, MMIO_GAP_END);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Everything except the reserved legacy hole is RAM.
        assert_eq!(ram, (5 << 30) - (HIGH_MEMORY_START - EBDA_START));
    }

    #[test]
    fn entries_are_sorted_and_disjoint() {
        for mib in [16, 128, 3072, 3073, 8192] {
            let map = memory_map(&RamLayout::new(mib << 20));
            for pair in map.windows(2) {
                assert!(
                    pair[0].addr + pair[0].size <= pair[1].addr,
                    "{mib}: {pair:?}"
                );
            }
        }
    }
}
