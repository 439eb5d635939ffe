//! virtio-fs: FUSE requests in descriptor chains, served by the device's request path
//! (`handle_chain`'s checks, fuse-backend-rs's server, `GuardedFs`, the passthrough) over a
//! small real directory tree that is laid out afresh for every input.
//!
//! Every input starts with the FUSE_INIT the Linux driver sends (so requests reach the file
//! system rather than "not initialised"), then up to 63 chains: requests whose header is built
//! from the input's choices (opcode, node, a length that may lie) followed by input bytes and
//! a reply buffer, or raw chains.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::guest::{FakeGuest, MAX_QUEUE_SIZE};
use rkt_fuzz::{arbitrary, Unstructured};
use vmm::devices::virtio::fs::fuzzing::FsHarness;

const FUSE_INIT: u32 = 26;
const IN_HEADER_LEN: usize = 40;
/// Room for a few dozen requests per input: enough for sequences (LOOKUP, OPEN, READ, ...).
const QUEUE_SIZE: u16 = MAX_QUEUE_SIZE;
/// The highest FUSE opcode number (FUSE_SETUPMAPPING and friends are around 48-52).
const MAX_OPCODE: u32 = 52;

fn share() -> &'static Path {
    static SHARE: OnceLock<PathBuf> = OnceLock::new();
    SHARE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rkt-fuzz-fs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        dir
    })
}

/// The tree every input starts from: a file, a directory with a file, a symlink pointing out
/// of the share, and a fifo.
fn lay_out(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let _ = std::fs::write(dir.join("hello.txt"), b"hello, guest\n");
    let _ = std::fs::create_dir(dir.join("sub"));
    let _ = std::fs::write(dir.join("sub/inner"), b"inner");
    let _ = std::os::unix::fs::symlink("/etc", dir.join("escape"));
}

fn request(opcode: u32, unique: u64, nodeid: u64, len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(IN_HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&opcode.to_le_bytes());
    out.extend_from_slice(&unique.to_le_bytes());
    out.extend_from_slice(&nodeid.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // uid
    out.extend_from_slice(&0u32.to_le_bytes()); // gid
    out.extend_from_slice(&1u32.to_le_bytes()); // pid
    out.extend_from_slice(&0u32.to_le_bytes()); // padding
    out.extend_from_slice(body);
    out
}

fn init() -> Vec<u8> {
    // major 7, minor 31, 128 KiB readahead, ASYNC_READ | BIG_WRITES | MAX_PAGES.
    let mut body = Vec::new();
    for value in [7u32, 31, 128 * 1024, 1 | 1 << 5 | 1 << 22] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    request(FUSE_INIT, 1, 0, (IN_HEADER_LEN + body.len()) as u32, &body)
}

/// One request from the input's choices: header, body, and a reply buffer.
fn structured(u: &mut Unstructured, unique: u64) -> arbitrary::Result<Vec<(Vec<u8>, bool)>> {
    let opcode = if u.ratio(15u8, 16)? {
        u.int_in_range(1..=MAX_OPCODE)?
    } else {
        u.arbitrary()?
    };
    // The root, the first few inodes the guest may have looked up, or anything.
    let nodeid = match u.int_in_range(0u8..=7)? {
        0..=3 => 1,
        4..=6 => u.int_in_range(2u64..=8)?,
        _ => u.arbitrary()?,
    };
    let body_len = u.int_in_range(0usize..=300)?;
    let body = u.bytes(body_len.min(u.len()))?.to_vec();
    let len = if u.ratio(15u8, 16)? {
        (IN_HEADER_LEN + body.len()) as u32
    } else {
        u.arbitrary()?
    };
    // Mostly room for any reply; 63 requests of this kind still fit the fake guest's buffer
    // space without reusing it.
    let reply_room = match u.int_in_range(0u8..=3)? {
        0 => 0,
        1 => u.int_in_range(0usize..=64)?,
        2 => 1024,
        _ => 4096,
    };
    let mut parts = vec![(request(opcode, unique, nodeid, len, &body), false)];
    if reply_room > 0 {
        parts.push((vec![0; reply_room], true));
    }
    Ok(parts)
}

fuzz_target!(|data: &[u8]| {
    let dir = share();
    lay_out(dir);
    let mut u = Unstructured::new(data);
    let read_only = u.ratio(1u8, 8).unwrap_or(false);
    let Ok(fs) = FsHarness::new(dir, read_only) else {
        return;
    };
    let mut guest = FakeGuest::with_queue_size(1, QUEUE_SIZE);
    guest.add_buffers(0, &[(init(), false), (vec![0; 256], true)]);
    for unique in 2..u64::from(QUEUE_SIZE) + 1 {
        // Keep FUSE_INIT's descriptors from being overwritten by a wrapped table.
        if u.is_empty() || guest.descriptors_written(0) + 6 > usize::from(QUEUE_SIZE) {
            break;
        }
        let added = if u.ratio(7u8, 8).unwrap_or(true) {
            structured(&mut u, unique).map(|parts| guest.add_buffers(0, &parts))
        } else {
            guest.add_chain(&mut u, 0)
        };
        if added.is_err() {
            break;
        }
    }
    let queue = guest.queue(0);
    let pass = fs
        .serve(&guest.memory, &queue)
        .expect("the fake guest's RAM and queue are valid");
    assert!(pass.used_any, "FUSE_INIT was not answered");
    guest.check_used(0);
});
