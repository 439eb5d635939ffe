//! Maps a restored guest's memory into KVM's page tables before its vCPUs run
//! (`KVM_PRE_FAULT_MEMORY`, Linux 6.10).
//!
//! Why: a restored guest's RAM is the memory file mapped private, so without this every page the
//! guest touches first costs a nested page fault, 4 KiB at a time. In the emulated KVM host a
//! warm hello pod took about 2,400 of them at 60-85 us each, the largest single cost inside the
//! guest. Mapping the file's data pages ahead (one ioctl per data extent) took 26 ms for 24 MiB
//! there and left about 1,350 faults, mostly the guest's first writes to copy-on-write pages.
//!
//! Only the file's data extents are mapped: holes are pages that were zero at the snapshot,
//! which the guest may never touch. The mapping is read-only for KVM (the pre-fault is a read),
//! so the pages stay the page cache's, shared by every VM restored from the same snapshot:
//! nothing is allocated or copied (the guest's first write to a page still copies it, as
//! without this). It is an optimisation only: when KVM does not offer it
//! (older kernels, or a KVM whose VM type cannot), or stops partway, the guest faults the rest
//! in as before and the restore goes on.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pre_fault_memory, KVM_CAP_PRE_FAULT_MEMORY};
use kvm_ioctls::{VcpuFd, VmFd};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::ioctl_iowr_nr;

use crate::memory::RamLayout;

const KVMIO: u32 = 0xAE;
ioctl_iowr_nr!(KVM_PRE_FAULT_MEMORY, KVMIO, 0xd5, kvm_pre_fault_memory);

const PAGE: u64 = 4096;
/// Retries of one range that made no progress (KVM answers EINTR or EAGAIN then).
const MAX_RETRIES: u32 = 100;

/// What pre-faulting did, for `--stats` (`snapshot.prefault*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prefault {
    /// This host's KVM does not offer `KVM_PRE_FAULT_MEMORY` (before Linux 6.10).
    Unsupported,
    /// `bytes` of guest RAM mapped in `took`; `stopped` when KVM refused partway.
    Mapped {
        /// Bytes KVM mapped.
        bytes: u64,
        /// How long it took.
        took: Duration,
        /// The errno that stopped it before the last extent, if one did.
        stopped: Option<i32>,
    },
}

/// Maps the memory file's data pages into KVM's page tables through `vcpu` (any vCPU of the
/// VM: they share its guest-physical page tables), after the vCPU's state is restored.
pub fn map_ahead(vm: &VmFd, vcpu: &VcpuFd, memory: &File, layout: RamLayout) -> Prefault {
    if vm.check_extension_raw(libc::c_ulong::from(KVM_CAP_PRE_FAULT_MEMORY)) <= 0 {
        return Prefault::Unsupported;
    }
    let started = Instant::now();
    let mut bytes = 0;
    let mut stopped = None;
    let ranges = data_extents(memory).map(|extents| guest_ranges(&extents, layout));
    match ranges {
        Ok(ranges) => {
            for (gpa, len) in ranges {
                let (done, error) = map_range(vcpu, gpa, len);
                bytes += done;
                if let Some(error) = error {
                    stopped = error.raw_os_error();
                    break;
                }
            }
        }
        Err(error) => stopped = error.raw_os_error(),
    }
    Prefault::Mapped {
        bytes,
        took: started.elapsed(),
        stopped,
    }
}

/// Asks KVM to map `[gpa, gpa + len)`; returns the bytes it mapped and why it stopped early.
fn map_range(vcpu: &VcpuFd, gpa: u64, len: u64) -> (u64, Option<io::Error>) {
    let mut range = kvm_pre_fault_memory {
        gpa,
        size: len,
        ..Default::default()
    };
    let mut retries = 0;
    while range.size > 0 {
        // SAFETY: KVM_PRE_FAULT_MEMORY reads and updates exactly one `kvm_pre_fault_memory`,
        // which `range` is, on a vCPU fd this VMM owns; it touches no memory of ours besides.
        let ret = unsafe { ioctl_with_mut_ref(vcpu, KVM_PRE_FAULT_MEMORY(), &mut range) };
        if ret >= 0 {
            retries = 0;
            continue;
        }
        let error = io::Error::last_os_error();
        let transient = matches!(error.raw_os_error(), Some(libc::EINTR | libc::EAGAIN));
        if !transient || retries >= MAX_RETRIES {
            return (len - range.size, Some(error));
        }
        retries += 1;
    }
    (len, None)
}

/// The byte ranges of `file` that hold data (`SEEK_DATA`/`SEEK_HOLE`); a file system without
/// holes reports the whole file as one.
fn data_extents(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let seek = |offset: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: lseek on a descriptor `file` owns; it only moves the file offset, which
        // nothing else in this process uses on the memory file (it is read through mmap).
        let at = unsafe { libc::lseek(fd, offset, whence) };
        if at >= 0 {
            return Ok(Some(at as u64));
        }
        let error = io::Error::last_os_error();
        // ENXIO: no data (or hole) at or after `offset`.
        match error.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(error),
        }
    };
    let mut extents = Vec::new();
    let mut offset = 0;
    while let Some(start) = seek(offset, libc::SEEK_DATA)? {
        // Every file ends in a hole (its end), so SEEK_HOLE after data always answers.
        let Some(end) = seek(start, libc::SEEK_HOLE)? else {
            break;
        };
        if end <= start {
            break;
        }
        extents.push((start, end));
        offset = end;
    }
    Ok(extents)
}

/// The guest-physical ranges of the file's data extents: the memory file holds the RAM regions
/// one after the other (`GuestRam::from_file`). Ranges are widened to whole pages and clipped
/// to the regions, so nothing outside guest RAM is ever asked for.
fn guest_ranges(extents: &[(u64, u64)], layout: RamLayout) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut file_offset = 0;
    for (region_start, region_len) in layout.regions() {
        let region_end = file_offset + region_len;
        for &(start, end) in extents {
            let start = (start / PAGE * PAGE).max(file_offset);
            let end = end.div_ceil(PAGE).saturating_mul(PAGE).min(region_end);
            if start < end {
                ranges.push((region_start.0 + (start - file_offset), end - start));
            }
        }
        file_offset = region_end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};
    use std::os::unix::fs::FileExt;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_ioctl_number_matches_the_kernel_abi() {
        // _IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory), a 64-byte struct.
        assert_eq!(KVM_PRE_FAULT_MEMORY(), 0xc040_aed5);
    }

    #[test]
    fn data_extents_skip_the_holes_of_a_sparse_file() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(16 * MIB).unwrap();
        file.write_all_at(&[1; 4096], MIB).unwrap();
        file.write_all_at(&[2; 8192], 8 * MIB).unwrap();
        let extents = data_extents(&file).unwrap();
        let data: u64 = extents.iter().map(|(s, e)| e - s).sum();
        // A file system may round extents to its blocks, or have no holes at all.
        assert!(data >= 12288, "{extents:?}");
        for offset in [MIB, 8 * MIB, 8 * MIB + 4096] {
            assert!(
                extents.iter().any(|&(s, e)| s <= offset && offset < e),
                "{offset:#x} not in {extents:?}"
            );
        }
        let empty = tempfile::tempfile().unwrap();
        empty.set_len(MIB).unwrap();
        let extents = data_extents(&empty).unwrap();
        assert!(
            extents.is_empty() || extents == [(0, MIB)],
            "an all-hole file: {extents:?}"
        );
    }

    #[test]
    fn guest_ranges_follow_the_regions_and_stay_inside_them() {
        let small = RamLayout::new(128 * MIB);
        assert_eq!(
            guest_ranges(&[(0, 4096), (10, 20), (MIB + 1, MIB + 4097)], small),
            [(0, 4096), (0, 4096), (MIB, 8192)]
        );
        // An extent running past the end of RAM is clipped to it.
        assert_eq!(
            guest_ranges(&[(128 * MIB - 4096, 200 * MIB)], small),
            [(128 * MIB - 4096, 4096)]
        );
        assert!(guest_ranges(&[(128 * MIB, 129 * MIB)], small).is_empty());

        // Above the MMIO gap: file offsets past the low region land at 4 GiB.
        let large = RamLayout::new(MMIO_GAP_START + 64 * MIB);
        let ranges = guest_ranges(&[(MMIO_GAP_START - 4096, MMIO_GAP_START + 8192)], large);
        assert_eq!(
            ranges,
            [(MMIO_GAP_START - 4096, 4096), (MMIO_GAP_END, 8192)]
        );
    }
}
