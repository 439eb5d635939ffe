//! The memory file: guest RAM regions one after the other, written sparse (all-zero pages are
//! holes, so a 128 MiB guest that touched 20 MiB takes about 20 MiB of disk and page cache).
//! Restored VMs map it private and copy-on-write (`GuestRam::from_file`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::SnapshotError;
use crate::memory::GuestMemory;

const PAGE: usize = 4096;

/// Writes guest memory to `path` (through a temporary file renamed into place); returns the
/// number of bytes actually written (the non-zero pages).
pub fn write_memory(path: &Path, memory: &GuestMemory) -> Result<u64, SnapshotError> {
    let io_err = SnapshotError::io(path);
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io_err)?;
    let mut offset = 0u64;
    let mut written = 0u64;
    for region in memory.iter() {
        let len = region.len() as usize;
        let host = memory
            .get_host_address(region.start_addr())
            .map_err(|_| SnapshotError::Corrupt("guest region without host mapping".into()))?;
        // SAFETY: the region is `len` bytes of live guest RAM mapped by this VMM; the vCPUs
        // and device workers are stopped, so nobody writes it while we read.
        let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, len) };
        for (n, page) in bytes.chunks(PAGE).enumerate() {
            if page.iter().any(|&b| b != 0) {
                file.write_all_at(page, offset + (n * PAGE) as u64)
                    .map_err(io_err)?;
                written += page.len() as u64;
            }
        }
        offset += len as u64;
    }
    file.set_len(offset).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)?;
    Ok(written)
}

/// Opens the memory file, which must be exactly `expected` bytes long.
pub fn open_memory(path: &Path, expected: u64) -> Result<File, SnapshotError> {
    let io_err = SnapshotError::io(path);
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    if len != expected {
        return Err(SnapshotError::MemorySize {
            path: path.to_path_buf(),
            len,
            expected,
        });
    }
    Ok(file)
}
