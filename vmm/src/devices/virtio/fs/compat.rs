//! The bridge between our rust-vmm versions (vm-memory 0.18, virtio-queue 0.18) and the ones
//! fuse-backend-rs 0.14 is built on (vm-memory =0.17.1, virtio-queue 0.17, imported here as
//! `fuse_vm_memory` and `fuse_virtio_queue`). Its Reader/Writer only accept 0.17 descriptor
//! chains over 0.17 guest memory, so at activation we build:
//! - a 0.17 view of guest RAM over the very same host mappings (no copy, no new mapping), and
//! - 0.17 queues carrying the validated 0.18 queues' size, ring addresses and indices.
//!
//! Delete this module (and the two renamed dependencies) once fuse-backend-rs moves to
//! vm-memory 0.18: the device can then use the transport's queues and memory directly.

use std::sync::Arc;

use fuse_virtio_queue::QueueState as FuseQueueState;
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::GuestMemory;

/// Guest memory as fuse-backend-rs sees it.
pub type FuseGuestMemory = fuse_vm_memory::GuestMemoryMmap<()>;
/// A virtqueue as fuse-backend-rs sees it.
pub type FuseQueue = fuse_virtio_queue::Queue;

/// The 0.18 objects could not be expressed in 0.17 terms (a VMM bug, not a guest error: the
/// transport validated everything before activation).
#[derive(Debug, Error)]
pub enum CompatError {
    /// vm-memory 0.17 refused a region (unaligned host address, overlap, overflow).
    #[error("cannot describe guest RAM region at {guest_addr:#x} to fuse-backend-rs: {reason}")]
    Region {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// What vm-memory 0.17 said.
        reason: String,
    },
    /// virtio-queue 0.17 refused the queue state.
    #[error("cannot describe virtqueue to fuse-backend-rs: {0}")]
    Queue(String),
}

/// Guest RAM as fuse-backend-rs sees it, together with the VMM's handle on the same RAM.
///
/// The 0.17 regions borrow the host mappings without owning them. Holding the 0.18
/// `GuestMemory` next to them keeps mappings that vm-memory owns alive as long as the view;
/// RAM mapped by the VM itself (`GuestRam`) stays mapped because the device keeps the view in
/// its worker thread, which `reset` and `Drop` join before the transport, and then the VM, let
/// the memory go.
pub struct GuestMemoryView {
    /// Declared first so it is dropped before the memory it points into.
    view: FuseGuestMemory,
    _backing: GuestMemory,
}

impl GuestMemoryView {
    /// Builds the 0.17 view of `memory`.
    pub fn new(memory: &GuestMemory) -> Result<Self, CompatError> {
        Ok(GuestMemoryView {
            view: guest_memory_view(memory)?,
            _backing: memory.clone(),
        })
    }

    /// The view, for fuse-backend-rs.
    pub fn get(&self) -> &FuseGuestMemory {
        &self.view
    }
}

/// A vm-memory 0.17 view of `memory`: one region per 0.18 region, over the same host bytes.
/// It must not outlive the mappings (see [`GuestMemoryView`], which ties them together).
fn guest_memory_view(memory: &GuestMemory) -> Result<FuseGuestMemory, CompatError> {
    let mut regions = Vec::new();
    for region in memory.iter() {
        let guest_addr = region.start_addr().0;
        let err = |reason: String| CompatError::Region { guest_addr, reason };
        // SAFETY: `as_ptr()`/`size()` describe exactly one live, readable and writable mapping
        // owned by the VM's `GuestRam` (prot and flags are the ones it was created with). The
        // 0.17 region built over it is not owned (it never unmaps), and it is only used by the
        // device worker, which is joined before guest RAM is dropped (see the function doc),
        // so the pointer stays valid for the view's whole life. Both views access the bytes
        // only through volatile accesses, as vm-memory requires for guest memory.
        let mapping = unsafe {
            fuse_vm_memory::MmapRegion::<()>::build_raw(
                region.as_ptr(),
                region.size(),
                region.prot(),
                region.flags(),
            )
        }
        .map_err(|e| err(e.to_string()))?;
        let region =
            fuse_vm_memory::GuestRegionMmap::new(mapping, fuse_vm_memory::GuestAddress(guest_addr))
                .ok_or_else(|| err("the region overflows the guest address space".into()))?;
        regions.push(Arc::new(region));
    }
    FuseGuestMemory::from_arc_regions(regions).map_err(|e| CompatError::Region {
        guest_addr: 0,
        reason: e.to_string(),
    })
}

/// A virtio-queue 0.17 queue with the same configuration and position as `queue`.
pub fn queue_view(queue: &virtio_queue::Queue) -> Result<FuseQueue, CompatError> {
    let state = queue.state();
    let state = FuseQueueState {
        max_size: state.max_size,
        next_avail: state.next_avail,
        next_used: state.next_used,
        event_idx_enabled: state.event_idx_enabled,
        size: state.size,
        ready: state.ready,
        desc_table: state.desc_table,
        avail_ring: state.avail_ring,
        used_ring: state.used_ring,
    };
    FuseQueue::try_from(state).map_err(|e| CompatError::Queue(e.to_string()))
}

#[cfg(test)]
mod tests {
    use fuse_virtio_queue::QueueT as _;
    use fuse_vm_memory::{Bytes as _, GuestMemory as _};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::memory::{GuestRam, RamLayout};

    #[test]
    fn the_view_shares_bytes_with_guest_ram() {
        let ram = GuestRam::new(RamLayout::new(4 << 20)).unwrap();
        let view = guest_memory_view(&ram.memory).unwrap();
        assert_eq!(view.num_regions(), 1);
        assert_eq!(view.last_addr().0, (4 << 20) - 1);
        ram.memory
            .write_obj(0x1234_5678_u32, GuestAddress(0x3000))
            .unwrap();
        assert_eq!(
            view.read_obj::<u32>(fuse_vm_memory::GuestAddress(0x3000))
                .unwrap(),
            0x1234_5678
        );
        view.write_obj(0xabcd_u16, fuse_vm_memory::GuestAddress(0x3ff_ffe))
            .unwrap();
        assert_eq!(
            ram.memory.read_obj::<u16>(GuestAddress(0x3ff_ffe)).unwrap(),
            0xabcd
        );
        // The view ends where guest RAM ends.
        assert!(view
            .read_obj::<u32>(fuse_vm_memory::GuestAddress(4 << 20))
            .is_err());
    }

    #[test]
    fn the_view_keeps_vm_memory_owned_mappings_alive() {
        let memory = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        memory.write_obj(0x55u8, GuestAddress(0x800)).unwrap();
        let view = GuestMemoryView::new(&memory).unwrap();
        drop(memory);
        assert_eq!(
            view.get()
                .read_obj::<u8>(fuse_vm_memory::GuestAddress(0x800))
                .unwrap(),
            0x55
        );
    }

    #[test]
    fn every_region_is_mirrored() {
        let memory = GuestMemory::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x4000_0000), 0x2000),
        ])
        .unwrap();
        let view = guest_memory_view(&memory).unwrap();
        assert_eq!(view.num_regions(), 2);
        memory.write_obj(7u8, GuestAddress(0x4000_1fff)).unwrap();
        assert_eq!(
            view.read_obj::<u8>(fuse_vm_memory::GuestAddress(0x4000_1fff))
                .unwrap(),
            7
        );
        // The hole between the regions is not guest RAM in the view either.
        assert!(view
            .read_obj::<u8>(fuse_vm_memory::GuestAddress(0x20_0000))
            .is_err());
    }

    #[test]
    fn queues_keep_size_rings_and_position() {
        let memory = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mock = MockSplitQueue::create(&memory, GuestAddress(0x1000), 64);
        let mut queue: virtio_queue::Queue = mock.create_queue().unwrap();
        queue.set_next_avail(5);
        queue.set_next_used(3);
        queue.set_event_idx(true);
        let view = queue_view(&queue).unwrap();
        assert_eq!(view.size(), 64);
        assert_eq!(view.max_size(), 64);
        assert!(view.ready());
        assert_eq!(view.desc_table(), mock.desc_table_addr().0);
        assert_eq!(view.avail_ring(), mock.avail_addr().0);
        assert_eq!(view.used_ring(), mock.used_addr().0);
        assert_eq!((view.next_avail(), view.next_used()), (5, 3));
        assert!(view.event_idx_enabled());
        let fuse_memory = guest_memory_view(&memory).unwrap();
        assert!(view.is_valid(&fuse_memory));
    }
}
