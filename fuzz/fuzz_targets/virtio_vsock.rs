//! virtio-vsock: packets on the transmit queue and buffers on the receive queue, served by the
//! device's worker (packet parsing, the muxer, connections and their credit accounting) against
//! real unix sockets in a temporary directory playing the host, over a few notifications.
//!
//! Packets are either raw chains or headers built from the input's choices (op, ports, CIDs,
//! lengths that lie, credit fields) followed by input bytes, so that connections get set up and
//! the later states are reached too.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::guest::FakeGuest;
use rkt_fuzz::{arbitrary, Unstructured};
use vmm::devices::virtio::vsock::fuzzing::{
    Header, VsockHarness, HEADER_LEN, HOST_CID, TYPE_STREAM,
};

const RX: usize = 0;
const TX: usize = 1;
const GUEST_CID: u64 = 3;
/// A host port with a listener behind it, and one without.
const LISTENING_PORT: u32 = 1024;
const DEAD_PORT: u32 = 1025;

/// The host's side, made once per process: the VM's socket and one port socket.
struct Host {
    uds_path: PathBuf,
    listener: Arc<UnixListener>,
    port: UnixListener,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rkt-fuzz-vsock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let uds_path = dir.join("vm.sock");
        let listener = UnixListener::bind(&uds_path).expect("bind the VM socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = UnixListener::bind(dir.join(format!("vm.sock_{LISTENING_PORT}")))
            .expect("bind the port socket");
        port.set_nonblocking(true).expect("nonblocking");
        Host {
            uds_path,
            listener: Arc::new(listener),
            port,
        }
    })
}

fn port(u: &mut Unstructured) -> arbitrary::Result<u32> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 | 1 => LISTENING_PORT,
        2 => DEAD_PORT,
        _ => u.arbitrary()?,
    })
}

/// A packet whose header is built from the input's choices.
fn packet(u: &mut Unstructured) -> arbitrary::Result<Vec<(Vec<u8>, bool)>> {
    let payload_len = u.int_in_range(0usize..=256)?;
    let payload = u.bytes(payload_len.min(u.len()))?.to_vec();
    let header = Header {
        src_cid: if u.ratio(15u8, 16)? {
            GUEST_CID
        } else {
            u.arbitrary()?
        },
        dst_cid: if u.ratio(15u8, 16)? {
            HOST_CID
        } else {
            u.arbitrary()?
        },
        src_port: u.int_in_range(5000u32..=5003)?,
        dst_port: port(u)?,
        len: if u.ratio(15u8, 16)? {
            payload.len() as u32
        } else {
            u.arbitrary()?
        },
        type_: if u.ratio(15u8, 16)? {
            TYPE_STREAM
        } else {
            u.arbitrary()?
        },
        op: u.int_in_range(0u16..=8)?,
        flags: u.int_in_range(0u32..=4)?,
        buf_alloc: u.arbitrary()?,
        fwd_cnt: u.arbitrary()?,
    };
    let mut parts = vec![(header.encode().to_vec(), false)];
    if u.arbitrary()? {
        parts.push((payload, false));
    } else {
        parts[0].0.extend_from_slice(&payload);
    }
    Ok(parts)
}

fn round(
    u: &mut Unstructured,
    guest: &mut FakeGuest,
    streams: &mut Vec<UnixStream>,
) -> arbitrary::Result<()> {
    for _ in 0..u.int_in_range(0u8..=3)? {
        if u.ratio(3u8, 4)? {
            // What Linux offers: a header buffer and a data buffer, both writable.
            guest.add_buffers(RX, &[(vec![0; HEADER_LEN], true), (vec![0; 4096], true)]);
        } else {
            guest.add_chain(u, RX)?;
        }
    }
    for _ in 0..u.int_in_range(0u8..=3)? {
        if u.ratio(3u8, 4)? {
            let parts = packet(u)?;
            guest.add_buffers(TX, &parts);
        } else {
            guest.add_chain(u, TX)?;
        }
    }
    // The host's side: accept what the guest connected, write to or close a stream.
    while let Ok((stream, _)) = host().port.accept() {
        let _ = stream.set_nonblocking(true);
        streams.push(stream);
    }
    match u.int_in_range(0u8..=3)? {
        0 if !streams.is_empty() => {
            let len = u.int_in_range(0usize..=512)?;
            let bytes = u.bytes(len.min(u.len()))?;
            let _ = streams[0].write_all(bytes);
        }
        1 if !streams.is_empty() => drop(streams.remove(0)),
        2 if !streams.is_empty() => {
            let mut sink = [0u8; 4096];
            let _ = streams[0].read(&mut sink);
        }
        _ => {}
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let host = host();
    let mut u = Unstructured::new(data);
    let mut guest = FakeGuest::new(3);
    let queues = [guest.queue(0), guest.queue(1), guest.queue(2)];
    let mut streams = Vec::new();
    // A host process connecting to a guest port (the guest answers on the transmit queue).
    if u.ratio(1u8, 4).unwrap_or(false) {
        if let Ok(mut stream) = UnixStream::connect(&host.uds_path) {
            let port: u32 = u.int_in_range(0..=3).unwrap_or(0);
            let _ = stream.write_all(format!("CONNECT {port}\n").as_bytes());
            let _ = stream.set_nonblocking(true);
            streams.push(stream);
        }
    }
    let Ok(mut device) = VsockHarness::new(
        guest.memory.clone(),
        queues,
        GUEST_CID,
        host.listener.clone(),
        &host.uds_path,
        &[LISTENING_PORT, DEAD_PORT],
    ) else {
        return;
    };
    for _ in 0..4 {
        if round(&mut u, &mut guest, &mut streams).is_err() {
            break;
        }
        device.step();
    }
    device.step();
    guest.check_used(RX);
    guest.check_used(TX);
    drop(device);
    // Connections the harness never accepted must not pile up in the backlog.
    while let Ok((stream, _)) = host.port.accept() {
        drop(stream);
    }
    while let Ok((stream, _)) = host.listener.accept() {
        drop(stream);
    }
});
