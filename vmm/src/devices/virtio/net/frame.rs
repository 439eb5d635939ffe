//! Frames on their way through the device: every frame, in both directions, starts with the
//! 12-byte virtio-net header (`struct virtio_net_hdr_v1`), which the tap speaks too
//! (IFF_VNET_HDR), so frames are copied whole between descriptor chains and the tap.
//!
//! What is checked here, because the guest is untrusted and the guest's driver only accepted
//! some offloads:
//! - transmit chains are device-readable only, inside guest memory, at least a header plus an
//!   Ethernet header, at most [`MAX_FRAME_LEN`]; their header asks only for offloads the
//!   driver negotiated;
//! - receive chains are device-writable only, inside guest memory, and big enough for the
//!   frame; the host's header is cut down to what the driver negotiated (a frame needing an
//!   offload the driver refused is dropped; the tap is told not to send those anyway).

use std::io::{Read, Write};

use thiserror::Error;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
};
use virtio_queue::DescriptorChain;

use crate::memory::GuestMemory;

/// `struct virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers. With VIRTIO_F_VERSION_1 it is always this long.
pub const VNET_HEADER_LEN: usize = 12;
/// Offset of `num_buffers` (little-endian u16) in the header.
pub const NUM_BUFFERS_AT: usize = 10;
/// An Ethernet header: the shortest frame the tap accepts.
const ETHERNET_HEADER_LEN: usize = 14;
/// The longest frame with its header: a 64 KiB TSO segment (65535-byte IP packet) behind an
/// Ethernet and a VLAN header. Without TSO, frames are MTU-sized; nothing legitimate is longer.
pub const MAX_FRAME_LEN: usize = VNET_HEADER_LEN + 65535 + ETHERNET_HEADER_LEN + 4;

/// Why a frame or chain was dropped (and which counter it lands in).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// A transmit chain with a device-writable descriptor, or a receive chain with a
    /// device-readable one.
    #[error("descriptor chain mixes device-readable and device-writable buffers")]
    WrongDirection,
    /// A buffer outside guest memory, or lengths that overflow.
    #[error("descriptor chain is invalid or points outside guest memory")]
    BadChain,
    /// Shorter than a virtio-net header plus an Ethernet header.
    #[error("frame of {0} bytes is shorter than a virtio-net and an Ethernet header")]
    TooShort(usize),
    /// Longer than [`MAX_FRAME_LEN`], or than the receive buffer offered for it.
    #[error("frame of {len} bytes does not fit in {room}")]
    TooLong {
        /// The frame with its header (for a tap frame cut short: the buffer size).
        len: usize,
        /// The limit or the room in the chain.
        room: usize,
    },
    /// The header asks for an offload the driver did not negotiate.
    #[error("virtio-net header flags {flags:#x} / gso type {gso_type:#x} use an offload that was not negotiated")]
    OffloadNotNegotiated {
        /// The header's flags.
        flags: u8,
        /// The header's gso_type.
        gso_type: u8,
    },
    /// Guest memory could not be copied (it was checked, so the guest changed the chain).
    #[error("guest memory access failed")]
    Memory,
}

/// The offloads the driver negotiated, and what they allow in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    features: u64,
}

impl Offloads {
    /// From the negotiated feature bits.
    pub fn from_features(features: u64) -> Offloads {
        Offloads { features }
    }

    fn has(&self, bit: u32) -> bool {
        self.features & (1 << bit) != 0
    }

    /// Whether a frame may span several receive chains (VIRTIO_NET_F_MRG_RXBUF).
    pub fn mergeable_rx_buffers(&self) -> bool {
        self.has(VIRTIO_NET_F_MRG_RXBUF)
    }

    /// TUN_F_* bits for the tap: what the host may leave undone in frames for the guest. Only
    /// combinations the kernel accepts (TSO needs checksum offload, ECN needs TSO).
    pub fn tun_flags(&self) -> libc::c_uint {
        if !self.has(VIRTIO_NET_F_GUEST_CSUM) {
            return 0;
        }
        let mut flags = libc::TUN_F_CSUM;
        if self.has(VIRTIO_NET_F_GUEST_TSO4) {
            flags |= libc::TUN_F_TSO4;
        }
        if self.has(VIRTIO_NET_F_GUEST_TSO6) {
            flags |= libc::TUN_F_TSO6;
        }
        if self.has(VIRTIO_NET_F_GUEST_ECN) && flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0 {
            flags |= libc::TUN_F_TSO_ECN;
        }
        flags
    }

    /// A guest frame may only ask for what the driver negotiated on the device side (the
    /// "host" offloads); the spec forbids DATA_VALID and every other flag from the driver.
    pub fn check_tx_header(&self, header: &[u8; VNET_HEADER_LEN]) -> Result<(), FrameError> {
        let (flags, gso_type) = (header[0], header[1]);
        let refused = FrameError::OffloadNotNegotiated { flags, gso_type };
        let flags_ok = match u32::from(flags) {
            0 => true,
            VIRTIO_NET_HDR_F_NEEDS_CSUM => self.has(VIRTIO_NET_F_CSUM),
            _ => false,
        };
        let ecn = u32::from(gso_type) & VIRTIO_NET_HDR_GSO_ECN != 0;
        let gso_ok = match u32::from(gso_type) & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE => !ecn,
            VIRTIO_NET_HDR_GSO_TCPV4 => self.has(VIRTIO_NET_F_HOST_TSO4),
            VIRTIO_NET_HDR_GSO_TCPV6 => self.has(VIRTIO_NET_F_HOST_TSO6),
            _ => false,
        } && (!ecn || self.has(VIRTIO_NET_F_HOST_ECN));
        if flags_ok && gso_ok {
            Ok(())
        } else {
            Err(refused)
        }
    }

    /// Cuts the tap's header for a frame to the guest down to what the driver negotiated:
    /// DATA_VALID is a hint and is dropped for a driver without GUEST_CSUM; a frame that still
    /// needs its checksum or segmentation done by a driver that cannot is refused. Sets
    /// `num_buffers` to 1 (the worker sets the real count when a frame spans several
    /// mergeable receive buffers).
    pub fn fix_rx_header(&self, header: &mut [u8; VNET_HEADER_LEN]) -> Result<(), FrameError> {
        let (flags, gso_type) = (header[0], header[1]);
        let refused = FrameError::OffloadNotNegotiated { flags, gso_type };
        let guest_csum = self.has(VIRTIO_NET_F_GUEST_CSUM);
        let needs_csum = u32::from(flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0;
        let known_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
        if u32::from(flags) & !known_flags != 0 || (needs_csum && !guest_csum) {
            return Err(refused);
        }
        if !guest_csum {
            header[0] = 0;
        }
        let ecn = u32::from(gso_type) & VIRTIO_NET_HDR_GSO_ECN != 0;
        let gso_ok = match u32::from(gso_type) & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE => !ecn,
            VIRTIO_NET_HDR_GSO_TCPV4 => self.has(VIRTIO_NET_F_GUEST_TSO4),
            VIRTIO_NET_HDR_GSO_TCPV6 => self.has(VIRTIO_NET_F_GUEST_TSO6),
            _ => false,
        } && (!ecn || self.has(VIRTIO_NET_F_GUEST_ECN));
        if !gso_ok {
            return Err(refused);
        }
        header[NUM_BUFFERS_AT..].copy_from_slice(&1u16.to_le_bytes());
        Ok(())
    }
}

/// Copies the guest frame in a transmit chain (header included) into `buf`, which must hold
/// [`MAX_FRAME_LEN`] bytes, and checks it; returns its length.
pub fn read_tx_frame(
    memory: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    offloads: &Offloads,
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    // Reader skips device-writable descriptors; one in a transmit chain is a driver bug we
    // refuse rather than silently ignore.
    if chain.clone().any(|desc| desc.is_write_only()) {
        return Err(FrameError::WrongDirection);
    }
    let mut reader = chain.reader(memory).map_err(|_| FrameError::BadChain)?;
    let len = reader.available_bytes();
    if len < VNET_HEADER_LEN + ETHERNET_HEADER_LEN {
        return Err(FrameError::TooShort(len));
    }
    let room = MAX_FRAME_LEN.min(buf.len());
    if len > room {
        return Err(FrameError::TooLong { len, room });
    }
    reader
        .read_exact(&mut buf[..len])
        .map_err(|_| FrameError::Memory)?;
    // The header is checked in our copy, so the guest cannot change it after the check.
    let mut header = [0u8; VNET_HEADER_LEN];
    header.copy_from_slice(&buf[..VNET_HEADER_LEN]);
    offloads.check_tx_header(&header)?;
    Ok(len)
}

/// Checks a receive chain: device-writable only, inside guest memory. Returns its room.
pub fn rx_chain_room(
    memory: &GuestMemory,
    chain: &DescriptorChain<&GuestMemory>,
) -> Result<usize, FrameError> {
    if chain.clone().any(|desc| !desc.is_write_only()) {
        return Err(FrameError::WrongDirection);
    }
    let writer = chain
        .clone()
        .writer(memory)
        .map_err(|_| FrameError::BadChain)?;
    Ok(writer.available_bytes())
}

/// Writes `frame` (header included, already fixed by [`Offloads::fix_rx_header`]) into a
/// receive chain checked by [`rx_chain_room`]; returns the used length.
pub fn write_rx_frame(
    memory: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    frame: &[u8],
) -> Result<u32, FrameError> {
    let mut writer = chain.writer(memory).map_err(|_| FrameError::BadChain)?;
    let room = writer.available_bytes();
    if frame.len() > room {
        return Err(FrameError::TooLong {
            len: frame.len(),
            room,
        });
    }
    writer.write_all(frame).map_err(|_| FrameError::Memory)?;
    // At most MAX_FRAME_LEN, checked when the frame was read from the tap.
    u32::try_from(frame.len()).map_err(|_| FrameError::TooLong {
        len: frame.len(),
        room,
    })
}

#[cfg(test)]
mod tests {
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
    }

    fn header(flags: u32, gso_type: u32) -> [u8; VNET_HEADER_LEN] {
        let mut h = [0u8; VNET_HEADER_LEN];
        h[0] = flags as u8;
        h[1] = gso_type as u8;
        h
    }

    fn bits(list: &[u32]) -> u64 {
        list.iter().fold(0, |acc, bit| acc | 1 << bit)
    }

    const ALL: &[u32] = &[
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
    ];

    #[test]
    fn tun_flags_follow_the_guest_offloads() {
        assert_eq!(Offloads::from_features(0).tun_flags(), 0);
        // TSO without checksum offload is not something the tap accepts: nothing.
        let tso_only = Offloads::from_features(bits(&[VIRTIO_NET_F_GUEST_TSO4]));
        assert_eq!(tso_only.tun_flags(), 0);
        let all = Offloads::from_features(bits(ALL));
        assert_eq!(
            all.tun_flags(),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
        );
        // Host-side (transmit) offloads do not change what the tap sends us.
        let host = Offloads::from_features(bits(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4]));
        assert_eq!(host.tun_flags(), 0);
    }

    #[test]
    fn transmit_headers_may_use_only_negotiated_offloads() {
        let none = Offloads::from_features(0);
        let all = Offloads::from_features(bits(ALL));
        let plain = header(0, VIRTIO_NET_HDR_GSO_NONE);
        let csum = header(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE);
        let tso4 = header(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4);
        let tso6_ecn = header(
            VIRTIO_NET_HDR_F_NEEDS_CSUM,
            VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN,
        );
        assert_eq!(none.check_tx_header(&plain), Ok(()));
        for h in [csum, tso4, tso6_ecn] {
            assert!(none.check_tx_header(&h).is_err(), "{h:?}");
            assert_eq!(all.check_tx_header(&h), Ok(()), "{h:?}");
        }
        // Never allowed from a driver: DATA_VALID, unknown flags, UFO, ECN without GSO.
        for h in [
            header(VIRTIO_NET_HDR_F_DATA_VALID, 0),
            header(0x80, 0),
            header(VIRTIO_NET_HDR_F_NEEDS_CSUM, 3),
            header(0, VIRTIO_NET_HDR_GSO_ECN),
        ] {
            assert!(all.check_tx_header(&h).is_err(), "{h:?}");
        }
        let no_ecn = Offloads::from_features(bits(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO6]));
        assert!(no_ecn.check_tx_header(&tso6_ecn).is_err());
    }

    #[test]
    fn receive_headers_are_cut_to_the_negotiated_offloads() {
        let none = Offloads::from_features(0);
        let all = Offloads::from_features(bits(ALL));
        let mut h = header(VIRTIO_NET_HDR_F_DATA_VALID, 0);
        h[NUM_BUFFERS_AT] = 0xaa;
        assert_eq!(none.fix_rx_header(&mut h), Ok(()));
        assert_eq!(
            h[0], 0,
            "DATA_VALID dropped for a driver without GUEST_CSUM"
        );
        assert_eq!(&h[NUM_BUFFERS_AT..], &[1, 0]);
        let mut h = header(VIRTIO_NET_HDR_F_DATA_VALID, 0);
        assert_eq!(all.fix_rx_header(&mut h), Ok(()));
        assert_eq!(h[0] as u32, VIRTIO_NET_HDR_F_DATA_VALID);
        let tso = header(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4);
        assert!(none.fix_rx_header(&mut tso.clone()).is_err());
        assert_eq!(all.fix_rx_header(&mut tso.clone()), Ok(()));
        let partial = header(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
        assert!(none.fix_rx_header(&mut partial.clone()).is_err());
        assert!(all.fix_rx_header(&mut header(0, 3)).is_err(), "UFO");
    }

    #[test]
    fn a_transmit_frame_split_over_descriptors_is_read_whole() {
        let mem = memory();
        let mut frame = vec![0u8; VNET_HEADER_LEN];
        frame.extend((0..100u8).collect::<Vec<_>>());
        mem.write_slice(&frame[..VNET_HEADER_LEN], GuestAddress(0x10_0000))
            .unwrap();
        mem.write_slice(&frame[VNET_HEADER_LEN..], GuestAddress(0x11_0000))
            .unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, VNET_HEADER_LEN as u32, 0),
                desc(0x11_0000, 100, 0),
            ])
            .unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let len = read_tx_frame(&mem, chain, &Offloads::default(), &mut buf).unwrap();
        assert_eq!(&buf[..len], &frame[..]);
    }

    #[test]
    fn malformed_transmit_chains_are_refused() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let none = Offloads::default();
        let cases: Vec<(Vec<RawDescriptor>, FrameError)> = vec![
            (vec![desc(0x10_0000, 25, 0)], FrameError::TooShort(25)),
            (
                vec![
                    desc(0x10_0000, 64, 0),
                    desc(0x11_0000, 64, VRING_DESC_F_WRITE),
                ],
                FrameError::WrongDirection,
            ),
            (vec![desc(0x3f_fff0, 64, 0)], FrameError::BadChain),
            (
                vec![desc(0x10_0000, 0x1_0000, 0), desc(0x20_0000, 0x1_0000, 0)],
                FrameError::TooLong {
                    len: 0x2_0000,
                    room: MAX_FRAME_LEN,
                },
            ),
            (vec![desc(u64::MAX - 8, 64, 0)], FrameError::BadChain),
        ];
        for (descs, expected) in cases {
            let chain = vq.build_desc_chain(&descs).unwrap();
            assert_eq!(
                read_tx_frame(&mem, chain, &none, &mut buf),
                Err(expected),
                "{descs:?}"
            );
        }
        // A header asking for checksum offload from a driver that did not negotiate it.
        mem.write_slice(
            &header(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0),
            GuestAddress(0x10_0000),
        )
        .unwrap();
        let chain = vq.build_desc_chain(&[desc(0x10_0000, 64, 0)]).unwrap();
        assert!(matches!(
            read_tx_frame(&mem, chain, &none, &mut buf),
            Err(FrameError::OffloadNotNegotiated { .. })
        ));
    }

    #[test]
    fn receive_chains_are_checked_and_filled() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, VNET_HEADER_LEN as u32, VRING_DESC_F_WRITE),
                desc(0x11_0000, 1514, VRING_DESC_F_WRITE),
            ])
            .unwrap();
        assert_eq!(rx_chain_room(&mem, &chain), Ok(VNET_HEADER_LEN + 1514));
        let frame: Vec<u8> = (0..60u8).collect();
        assert_eq!(write_rx_frame(&mem, chain, &frame), Ok(60));
        let mut head = [0u8; VNET_HEADER_LEN];
        mem.read_slice(&mut head, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&head[..], &frame[..VNET_HEADER_LEN]);
        let mut rest = [0u8; 48];
        mem.read_slice(&mut rest, GuestAddress(0x11_0000)).unwrap();
        assert_eq!(&rest[..], &frame[VNET_HEADER_LEN..]);

        let readable = vq.build_desc_chain(&[desc(0x10_0000, 2048, 0)]).unwrap();
        assert_eq!(
            rx_chain_room(&mem, &readable),
            Err(FrameError::WrongDirection)
        );
        let outside = vq
            .build_desc_chain(&[desc(0x40_0000, 2048, VRING_DESC_F_WRITE)])
            .unwrap();
        assert_eq!(rx_chain_room(&mem, &outside), Err(FrameError::BadChain));
        let small = vq
            .build_desc_chain(&[desc(0x10_0000, 32, VRING_DESC_F_WRITE)])
            .unwrap();
        assert_eq!(
            write_rx_frame(&mem, small, &frame),
            Err(FrameError::TooLong { len: 60, room: 32 })
        );
    }
}
