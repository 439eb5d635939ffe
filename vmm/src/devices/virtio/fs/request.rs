//! One FUSE request: a descriptor chain whose device-readable buffers hold the request and whose
//! device-writable buffers receive the reply. fuse-backend-rs's Reader/Writer check every buffer
//! against guest RAM; this module adds what its server does not check before trusting the
//! request: the header must be complete, its length consistent with the chain and bounded, and
//! the opcode one we serve. A request failing these checks gets an error reply (or, when there
//! is no room or no header to answer, the chain comes back with nothing written), so the guest
//! never waits forever and the server never sees it.

use std::mem::size_of;
use std::ops::Deref;

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::{Server, MAX_BUFFER_SIZE};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use fuse_virtio_queue::DescriptorChain;

use super::compat::FuseGuestMemory;

/// Largest request the guest may send: a 1 MiB WRITE (max_write, see `GuardedFs::init`) plus
/// its headers fits; the Linux client never sends more. Also bounds what the server copies out
/// of guest memory for one request.
pub const MAX_REQUEST_BYTES: usize = MAX_BUFFER_SIZE as usize + 4096;

/// Opcodes we pass to the server. Anything else is answered ENOSYS here: unassigned numbers
/// (the library converts opcodes with a transmute that is undefined for them), and operations
/// we do not offer (locks, ioctl, poll, bmap, DAX mappings, copy_file_range, notify replies).
const SERVED_OPCODES: [Opcode; 37] = [
    Opcode::Lookup,
    Opcode::Forget,
    Opcode::Getattr,
    Opcode::Setattr,
    Opcode::Readlink,
    Opcode::Symlink,
    Opcode::Mknod,
    Opcode::Mkdir,
    Opcode::Unlink,
    Opcode::Rmdir,
    Opcode::Rename,
    Opcode::Link,
    Opcode::Open,
    Opcode::Read,
    Opcode::Write,
    Opcode::Statfs,
    Opcode::Release,
    Opcode::Fsync,
    Opcode::Setxattr,
    Opcode::Getxattr,
    Opcode::Listxattr,
    Opcode::Removexattr,
    Opcode::Flush,
    Opcode::Init,
    Opcode::Opendir,
    Opcode::Readdir,
    Opcode::Releasedir,
    Opcode::Fsyncdir,
    Opcode::Access,
    Opcode::Create,
    Opcode::Interrupt,
    Opcode::Destroy,
    Opcode::BatchForget,
    Opcode::Fallocate,
    Opcode::Readdirplus,
    Opcode::Rename2,
    Opcode::Lseek,
];

/// Requests the FUSE protocol never answers.
const UNANSWERED_OPCODES: [Opcode; 3] = [Opcode::Forget, Opcode::BatchForget, Opcode::Interrupt];

fn is_served(opcode: u32) -> bool {
    SERVED_OPCODES.iter().any(|op| *op as u32 == opcode)
}

fn expects_reply(opcode: u32) -> bool {
    !UNANSWERED_OPCODES.iter().any(|op| *op as u32 == opcode)
}

/// Serves one descriptor chain and returns the number of bytes written into it (the used
/// length).
pub fn handle_chain<F, M>(
    server: &Server<F>,
    memory: &FuseGuestMemory,
    chain: DescriptorChain<M>,
) -> u32
where
    F: FileSystem + Sync,
    M: Deref<Target = FuseGuestMemory> + Clone,
{
    // A buffer outside guest RAM, overflowing lengths or fewer bytes than a header: there is
    // nothing to answer to (no `unique`), so the chain goes back with nothing written.
    let Some((reader, header)) = read_header(memory, &chain) else {
        return 0;
    };
    let refusal = if !is_served(header.opcode) {
        Some(libc::ENOSYS)
    } else if !length_is_consistent(&header, reader.available_bytes()) {
        Some(libc::EINVAL)
    } else {
        None
    };
    if let Some(errno) = refusal {
        return reply_error(memory, &chain, &header, errno);
    }
    let Ok(writer) = VirtioFsWriter::new(memory, chain.clone()) else {
        return 0;
    };
    match server.handle_message(reader, Writer::VirtioFs(writer), None, None) {
        // At most the chain's writable bytes; saturate rather than wrap if they exceed u32.
        Ok(written) => u32::try_from(written).unwrap_or(u32::MAX),
        // The server gave up on a request it could not decode; answer EIO so the guest's
        // request completes instead of hanging.
        Err(_) => reply_error(memory, &chain, &header, libc::EIO),
    }
}

/// The request's readable part and its FUSE header (read from a copy, so the server still
/// reads the request from its start).
fn read_header<'a, M>(
    memory: &'a FuseGuestMemory,
    chain: &DescriptorChain<M>,
) -> Option<(Reader<'a>, InHeader)>
where
    M: Deref<Target = FuseGuestMemory> + Clone,
{
    let reader = Reader::from_descriptor_chain(memory, chain.clone()).ok()?;
    let header = reader.clone().read_obj::<InHeader>().ok()?;
    Some((reader, header))
}

/// The header's length covers at least itself, at most what the chain holds, and at most
/// [`MAX_REQUEST_BYTES`]; the readable part is bounded too (the server copies bodies out of
/// it for some opcodes).
fn length_is_consistent(header: &InHeader, readable: usize) -> bool {
    let len = header.len as usize;
    len >= size_of::<InHeader>() && len <= readable && readable <= MAX_REQUEST_BYTES
}

/// Writes a bare error reply for `header` if its opcode expects one and the chain has room;
/// returns the used length.
fn reply_error<M>(
    memory: &FuseGuestMemory,
    chain: &DescriptorChain<M>,
    header: &InHeader,
    errno: i32,
) -> u32
where
    M: Deref<Target = FuseGuestMemory> + Clone,
{
    if !expects_reply(header.opcode) {
        return 0;
    }
    let Ok(mut writer) = VirtioFsWriter::new(memory, chain.clone()) else {
        return 0;
    };
    let reply = OutHeader {
        len: size_of::<OutHeader>() as u32,
        error: -errno,
        unique: header.unique,
    };
    match writer.write_obj(reply) {
        Ok(()) => reply.len,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_lists() {
        assert!(is_served(Opcode::Lookup as u32));
        assert!(is_served(Opcode::Init as u32));
        for unassigned in [0, 7, 19, 50, 51, 1 << 20, u32::MAX] {
            assert!(!is_served(unassigned), "{unassigned}");
        }
        for refused in [
            Opcode::Getlk,
            Opcode::Setlkw,
            Opcode::Ioctl,
            Opcode::CopyFileRange,
        ] {
            assert!(!is_served(refused as u32));
        }
        assert!(!expects_reply(Opcode::Forget as u32));
        assert!(expects_reply(Opcode::Lookup as u32));
        assert!(expects_reply(12345));
    }

    #[test]
    fn header_lengths() {
        let header = |len| InHeader {
            len,
            ..Default::default()
        };
        assert!(length_is_consistent(&header(40), 40));
        assert!(length_is_consistent(&header(48), 64));
        assert!(
            !length_is_consistent(&header(39), 64),
            "shorter than itself"
        );
        assert!(
            !length_is_consistent(&header(65), 64),
            "longer than the chain"
        );
        assert!(!length_is_consistent(&header(40), MAX_REQUEST_BYTES + 1));
        assert!(!length_is_consistent(&header(u32::MAX), usize::MAX));
    }
}
