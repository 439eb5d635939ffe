//! virtio-net: transmit chains (guest frames with their virtio-net header) and receive chains
//! (room for host frames), checked and copied by the functions the device's worker runs on
//! them, in the order it runs them; the host frames come from the input too (the tap is the
//! host kernel, but a frame's contents are the peer's choice).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::guest::FakeGuest;
use rkt_fuzz::Unstructured;
use virtio_queue::QueueT;
use vmm::devices::virtio::net::fuzzing::{read_tx_frame, rx_chain_room, write_rx_frame};
use vmm::devices::virtio::net::{Offloads, MAX_FRAME_LEN, OFFERED_FEATURES, VNET_HEADER_LEN};

const TX: usize = 0;
const RX: usize = 1;
/// The worker's limit of chains per frame with mergeable receive buffers.
const MAX_CHAINS_PER_FRAME: usize = 8;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(features) = u.arbitrary::<u64>() else {
        return;
    };
    let offloads = Offloads::from_features(features & OFFERED_FEATURES);
    let mut guest = FakeGuest::new(2);
    let _ = guest.add_chains(&mut u, TX, 6);
    let _ = guest.add_chains(&mut u, RX, 6);
    let memory = &guest.memory;

    // Transmit: every frame is read and checked; the buffer is returned with length 0.
    let mut tx = guest.queue(TX);
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    while let Some(chain) = tx.pop_descriptor_chain(memory) {
        let head = chain.head_index();
        if let Ok(len) = read_tx_frame(memory, chain, &offloads, &mut buf) {
            assert!((VNET_HEADER_LEN..=MAX_FRAME_LEN).contains(&len));
        }
        if tx.add_used(memory, head, 0).is_err() {
            break;
        }
    }

    // Receive: frames from the input, header fixed for the driver, spread over one chain or
    // (mergeable buffers) several.
    let mut rx = guest.queue(RX);
    let max_chains = if offloads.mergeable_rx_buffers() {
        MAX_CHAINS_PER_FRAME
    } else {
        1
    };
    'frames: for _ in 0..4 {
        let Ok(len) = u.int_in_range(0..=4096usize) else {
            break;
        };
        let Ok(bytes) = u.bytes(len.min(u.len())) else {
            break;
        };
        let mut frame = bytes.to_vec();
        if frame.len() < VNET_HEADER_LEN {
            continue;
        }
        let mut header = [0u8; VNET_HEADER_LEN];
        header.copy_from_slice(&frame[..VNET_HEADER_LEN]);
        if offloads.fix_rx_header(&mut header).is_err() {
            continue;
        }
        frame[..VNET_HEADER_LEN].copy_from_slice(&header);
        let mut good = Vec::new();
        let mut room = 0usize;
        while room < frame.len() && good.len() < max_chains {
            let Some(chain) = rx.pop_descriptor_chain(memory) else {
                break 'frames;
            };
            match rx_chain_room(memory, &chain) {
                Ok(chain_room) => {
                    room = room.saturating_add(chain_room);
                    good.push((chain, chain_room));
                }
                Err(_) => {
                    if rx.add_used(memory, chain.head_index(), 0).is_err() {
                        break 'frames;
                    }
                }
            }
        }
        let mut offset = 0;
        for (chain, chain_room) in good {
            let head = chain.head_index();
            let part = chain_room.min(frame.len() - offset);
            let written = write_rx_frame(memory, chain, &frame[offset..offset + part]).unwrap_or(0);
            assert!(written as usize <= part);
            offset += part;
            if rx.add_used(memory, head, written).is_err() {
                break 'frames;
            }
        }
    }
    guest.check_used(TX);
    guest.check_used(RX);
});
