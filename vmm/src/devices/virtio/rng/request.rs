//! One entropy request: a descriptor chain of write-only buffers, filled from the host's
//! getrandom. The chain comes from the guest, so every buffer is checked before it is touched
//! and the total is capped, so a guest cannot make the VMM allocate or copy without bound.

use std::ops::Deref;

use thiserror::Error;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemory, Permissions};

/// At most this many bytes are written per chain; the rest of a larger chain stays unwritten
/// and the used length says how much was filled (the driver asks again).
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// Why a request was failed (returned to the guest with a used length of 0).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// An entropy request must consist of device-writable buffers only.
    #[error("descriptor {0} of the chain is read-only")]
    ReadOnlyDescriptor(usize),
    /// A buffer lies (partly) outside guest memory.
    #[error("buffer at {addr:#x}+{len:#x} is outside guest memory")]
    OutOfRange {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The host's getrandom failed (it does not, once the pool is initialised).
    #[error("getrandom failed: {0}")]
    Getrandom(i32),
}

/// Fills `buf` from the host's entropy pool.
fn getrandom(buf: &mut [u8]) -> Result<(), RequestError> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the duration of
        // the call, and getrandom writes at most that many bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno == libc::EINTR {
                continue;
            }
            return Err(RequestError::Getrandom(errno));
        }
        filled += n as usize;
    }
    Ok(())
}

/// Fills every buffer of `chain` with random bytes (up to [`MAX_BYTES_PER_REQUEST`] in total)
/// and returns how many bytes were written.
pub fn fill_chain<G, M>(memory: &G, chain: DescriptorChain<M>) -> Result<u32, RequestError>
where
    G: GuestMemory,
    M: Deref,
    M::Target: GuestMemory,
{
    // The iterator stops after queue-size descriptors, so a looping chain ends; collect first
    // so that a read-only buffer anywhere fails the request before anything is written.
    let descriptors: Vec<_> = chain.collect();
    for (index, desc) in descriptors.iter().enumerate() {
        if !desc.is_write_only() {
            return Err(RequestError::ReadOnlyDescriptor(index));
        }
        let in_range = memory.check_range(desc.addr(), desc.len() as usize, Permissions::Write);
        if desc.len() != 0 && !in_range {
            return Err(RequestError::OutOfRange {
                addr: desc.addr().0,
                len: desc.len(),
            });
        }
    }
    let mut written = 0usize;
    let mut buf = Vec::new();
    for desc in &descriptors {
        let len = (desc.len() as usize).min(MAX_BYTES_PER_REQUEST - written);
        if len == 0 {
            continue;
        }
        buf.resize(len, 0);
        getrandom(&mut buf)?;
        memory
            .write_slice(&buf, desc.addr())
            .map_err(|_| RequestError::OutOfRange {
                addr: desc.addr().0,
                len: desc.len(),
            })?;
        written += len;
        if written == MAX_BYTES_PER_REQUEST {
            break;
        }
    }
    // Bounded by MAX_BYTES_PER_REQUEST, so it fits.
    Ok(written as u32)
}
