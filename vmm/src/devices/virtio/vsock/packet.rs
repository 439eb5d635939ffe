//! The vsock packet on the wire (virtio spec 5.10.6): a 44-byte little-endian header followed
//! by `len` bytes of payload, spread over the descriptors of one chain in whatever layout the
//! driver chose (Linux 6.1 puts the header and the payload in separate descriptors).
//!
//! Chains come from the guest, so nothing here trusts them: virtio-queue's `Reader`/`Writer`
//! check every descriptor against guest memory before a byte moves, the header is copied out
//! once (later changes by the guest cannot affect what we decided), and a payload length that is
//! larger than our limit or than the chain is refused before anything is read.

use std::io::{Read, Write};

use thiserror::Error;
use virtio_queue::{DescriptorChain, Reader, Writer};

use crate::memory::GuestMemory;

/// The host's well-known context ID (spec 5.10.4: 2 is the host).
pub const HOST_CID: u64 = 2;
/// Size of `struct virtio_vsock_hdr`.
pub const HEADER_LEN: usize = 44;
/// The only socket type we serve (VIRTIO_VSOCK_TYPE_STREAM).
pub const TYPE_STREAM: u16 = 1;
/// The largest payload we accept in or put into one packet. Linux never sends more per packet
/// (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE), and it bounds what one packet can make us copy.
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// Packet operations (VIRTIO_VSOCK_OP_*).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or torn down.
    pub const RST: u16 = 3;
    /// One or both directions closed (flags say which).
    pub const SHUTDOWN: u16 = 4;
    /// Payload.
    pub const RW: u16 = 5;
    /// "Here is my buffer space" (buf_alloc, fwd_cnt).
    pub const CREDIT_UPDATE: u16 = 6;
    /// "Tell me your buffer space".
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// `struct virtio_vsock_hdr`, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Sender's context ID.
    pub src_cid: u64,
    /// Receiver's context ID.
    pub dst_cid: u64,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (1 = stream).
    pub type_: u16,
    /// One of [`op`].
    pub op: u16,
    /// SHUTDOWN flags.
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// How many bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes the wire layout.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the wire layout.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        out[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        out[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        out[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        out[24..28].copy_from_slice(&self.len.to_le_bytes());
        out[28..30].copy_from_slice(&self.type_.to_le_bytes());
        out[30..32].copy_from_slice(&self.op.to_le_bytes());
        out[32..36].copy_from_slice(&self.flags.to_le_bytes());
        out[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        out[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        out
    }
}

/// Why a descriptor chain could not be used as a packet.
#[derive(Debug, Error)]
pub enum PacketError {
    /// A transmit chain must be device-readable only.
    #[error("transmit chain has a device-writable descriptor")]
    WriteOnlyDescriptor,
    /// A buffer lies outside guest memory (or the chain's lengths overflow).
    #[error("descriptor chain is invalid or points outside guest memory: {0}")]
    BadChain(virtio_queue::Error),
    /// Fewer than 44 bytes in the chain.
    #[error("chain holds {0} bytes, less than a vsock header")]
    TruncatedHeader(usize),
    /// The header's `len` is above [`MAX_PAYLOAD`] or beyond the end of the chain; the header
    /// is kept so that the connection can be reset.
    #[error("payload length {} is above the limit or beyond the {available} bytes in the chain", .header.len)]
    BadLength {
        /// The (well-formed) header that announced the payload.
        header: Header,
        /// Payload bytes the chain really holds.
        available: usize,
    },
    /// A payload larger than the receive buffer (a bug on our side, refused rather than cut).
    #[error("payload of {len} bytes does not fit a receive buffer with room for {capacity}")]
    PayloadTooLarge {
        /// Payload bytes.
        len: usize,
        /// Room in the buffer.
        capacity: usize,
    },
    /// Guest memory could not be copied (it was checked, so this means the chain changed).
    #[error("guest memory access failed: {0}")]
    Memory(#[from] std::io::Error),
}

impl PacketError {
    /// The header of the packet, when it could be read.
    pub fn header(&self) -> Option<&Header> {
        match self {
            PacketError::BadLength { header, .. } => Some(header),
            _ => None,
        }
    }
}

/// A packet the guest sent on the transmit queue: the header, and a reader positioned at the
/// payload (not yet copied, so a packet that must wait costs nothing).
pub struct TxPacket<'a> {
    /// The header, copied out of guest memory once.
    pub header: Header,
    payload: Reader<'a>,
}

impl<'a> TxPacket<'a> {
    /// Checks the chain and reads the header.
    pub fn parse(
        memory: &'a GuestMemory,
        chain: DescriptorChain<&'a GuestMemory>,
    ) -> Result<TxPacket<'a>, PacketError> {
        // Reader only looks at device-readable descriptors; a writable one in a transmit chain
        // is a driver bug we refuse rather than silently skip.
        if chain.clone().any(|desc| desc.is_write_only()) {
            return Err(PacketError::WriteOnlyDescriptor);
        }
        let mut reader = chain.reader(memory).map_err(PacketError::BadChain)?;
        let total = reader.available_bytes();
        let mut raw = [0u8; HEADER_LEN];
        if total < HEADER_LEN {
            return Err(PacketError::TruncatedHeader(total));
        }
        reader.read_exact(&mut raw)?;
        let header = Header::decode(&raw);
        let available = reader.available_bytes();
        if header.len > MAX_PAYLOAD || header.len as usize > available {
            return Err(PacketError::BadLength { header, available });
        }
        Ok(TxPacket {
            header,
            payload: reader,
        })
    }

    /// Copies the payload (exactly `header.len` bytes, checked by `parse`) into `out`.
    pub fn read_payload(&mut self, out: &mut Vec<u8>) -> Result<(), PacketError> {
        out.resize(self.header.len as usize, 0);
        self.payload.read_exact(out)?;
        Ok(())
    }
}

/// A receive buffer the guest made available: device-writable space for one packet.
pub struct RxBuffer<'a> {
    writer: Writer<'a>,
}

impl<'a> RxBuffer<'a> {
    /// Checks the chain; it must hold at least a header.
    pub fn new(
        memory: &'a GuestMemory,
        chain: DescriptorChain<&'a GuestMemory>,
    ) -> Result<RxBuffer<'a>, PacketError> {
        let writer = chain.writer(memory).map_err(PacketError::BadChain)?;
        let total = writer.available_bytes();
        if total < HEADER_LEN {
            return Err(PacketError::TruncatedHeader(total));
        }
        Ok(RxBuffer { writer })
    }

    /// How many payload bytes fit after the header (at most [`MAX_PAYLOAD`]).
    pub fn payload_capacity(&self) -> usize {
        (self.writer.available_bytes().saturating_sub(HEADER_LEN)).min(MAX_PAYLOAD as usize)
    }

    /// Writes `header` (with `len` set to the payload's length) and the payload, which must fit
    /// [`payload_capacity`](Self::payload_capacity); returns the bytes written, the used length.
    pub fn write(mut self, header: &Header, payload: &[u8]) -> Result<u32, PacketError> {
        let capacity = self.payload_capacity();
        if payload.len() > capacity {
            return Err(PacketError::PayloadTooLarge {
                len: payload.len(),
                capacity,
            });
        }
        let mut header = *header;
        // Both fit in u32: the payload is at most MAX_PAYLOAD.
        header.len = payload.len() as u32;
        self.writer.write_all(&header.encode())?;
        self.writer.write_all(payload)?;
        Ok((HEADER_LEN + payload.len()) as u32)
    }
}

#[cfg(test)]
mod tests {
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    const MEM_SIZE: usize = 0x20_0000;

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
    }

    fn sample() -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 52,
            len: 5,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 0,
            buf_alloc: 0x4_0000,
            fwd_cnt: 77,
        }
    }

    #[test]
    fn header_round_trips_in_the_spec_layout() {
        let h = sample();
        let raw = h.encode();
        assert_eq!(&raw[0..8], &3u64.to_le_bytes());
        assert_eq!(&raw[24..28], &5u32.to_le_bytes());
        assert_eq!(&raw[30..32], &op::RW.to_le_bytes());
        assert_eq!(&raw[40..44], &77u32.to_le_bytes());
        assert_eq!(Header::decode(&raw), h);
    }

    #[test]
    fn header_and_payload_split_over_descriptors_are_read() {
        let mem = memory();
        let raw = sample().encode();
        // Header split 10 + 34, payload in a third descriptor.
        mem.write_slice(&raw[..10], GuestAddress(0x10_0000))
            .unwrap();
        mem.write_slice(&raw[10..], GuestAddress(0x11_0000))
            .unwrap();
        mem.write_slice(b"hello", GuestAddress(0x12_0000)).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, 10, 0),
                desc(0x11_0000, 34, 0),
                desc(0x12_0000, 5, 0),
            ])
            .unwrap();
        let mut packet = TxPacket::parse(&mem, chain).unwrap();
        assert_eq!(packet.header, sample());
        let mut data = Vec::new();
        packet.read_payload(&mut data).unwrap();
        assert_eq!(data, b"hello");
    }

    #[test]
    fn truncated_headers_and_zero_length_descriptors_are_refused() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        for descs in [
            vec![desc(0x10_0000, 43, 0)],
            vec![desc(0x10_0000, 0, 0)],
            vec![desc(0x10_0000, 0, 0), desc(0x11_0000, 0, 0)],
        ] {
            let chain = vq.build_desc_chain(&descs).unwrap();
            assert!(matches!(
                TxPacket::parse(&mem, chain),
                Err(PacketError::TruncatedHeader(_))
            ));
        }
        // A zero-length descriptor between valid ones is harmless.
        mem.write_slice(&sample().encode(), GuestAddress(0x10_0000))
            .unwrap();
        mem.write_slice(b"hello", GuestAddress(0x12_0000)).unwrap();
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, 44, 0),
                desc(0x11_0000, 0, 0),
                desc(0x12_0000, 5, 0),
            ])
            .unwrap();
        let mut packet = TxPacket::parse(&mem, chain).unwrap();
        let mut data = Vec::new();
        packet.read_payload(&mut data).unwrap();
        assert_eq!(data, b"hello");
    }

    #[test]
    fn out_of_range_buffers_are_refused() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        for (addr, len) in [
            (MEM_SIZE as u64 - 20, 44),
            (0x4000_0000, 44),
            (u64::MAX - 10, 44),
            (0x10_0000, u32::MAX),
        ] {
            let chain = vq.build_desc_chain(&[desc(addr, len, 0)]).unwrap();
            assert!(
                matches!(TxPacket::parse(&mem, chain), Err(PacketError::BadChain(_))),
                "{addr:#x}+{len:#x}"
            );
            let chain = vq
                .build_desc_chain(&[desc(addr, len, VRING_DESC_F_WRITE)])
                .unwrap();
            assert!(
                matches!(RxBuffer::new(&mem, chain), Err(PacketError::BadChain(_))),
                "{addr:#x}+{len:#x}"
            );
        }
    }

    #[test]
    fn huge_or_overlong_payload_lengths_keep_the_header_for_a_reset() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        for (len, chain_payload) in [(MAX_PAYLOAD + 1, 0x2_0000), (u32::MAX, 16), (17, 16)] {
            let header = Header { len, ..sample() };
            mem.write_slice(&header.encode(), GuestAddress(0x10_0000))
                .unwrap();
            let chain = vq
                .build_desc_chain(&[desc(0x10_0000, 44, 0), desc(0x11_0000, chain_payload, 0)])
                .unwrap();
            let err = TxPacket::parse(&mem, chain).err().unwrap();
            assert_eq!(err.header(), Some(&header), "len {len}");
        }
    }

    #[test]
    fn a_writable_descriptor_in_a_transmit_chain_is_refused() {
        let mem = memory();
        mem.write_slice(&sample().encode(), GuestAddress(0x10_0000))
            .unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, 44, 0),
                desc(0x11_0000, 5, VRING_DESC_F_WRITE),
            ])
            .unwrap();
        assert!(matches!(
            TxPacket::parse(&mem, chain),
            Err(PacketError::WriteOnlyDescriptor)
        ));
    }

    #[test]
    fn receive_buffers_are_filled_across_descriptors() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, 44, VRING_DESC_F_WRITE),
                desc(0x11_0000, 3, VRING_DESC_F_WRITE),
                desc(0x12_0000, 4096, VRING_DESC_F_WRITE),
            ])
            .unwrap();
        let buffer = RxBuffer::new(&mem, chain).unwrap();
        assert_eq!(buffer.payload_capacity(), 4099);
        let chain = vq
            .build_desc_chain(&[desc(0x13_0000, 50, VRING_DESC_F_WRITE)])
            .unwrap();
        let small = RxBuffer::new(&mem, chain).unwrap();
        assert!(matches!(
            small.write(&sample(), &[0; 7]),
            Err(PacketError::PayloadTooLarge {
                len: 7,
                capacity: 6
            })
        ));
        let header = Header {
            len: 999,
            ..sample()
        };
        assert_eq!(buffer.write(&header, b"abcdef").unwrap(), 50);
        let mut raw = [0u8; HEADER_LEN];
        mem.read_slice(&mut raw, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(Header::decode(&raw), Header { len: 6, ..header });
        let mut a = [0u8; 3];
        mem.read_slice(&mut a, GuestAddress(0x11_0000)).unwrap();
        let mut b = [0u8; 3];
        mem.read_slice(&mut b, GuestAddress(0x12_0000)).unwrap();
        assert_eq!((&a, &b), (b"abc", b"def"));
    }

    #[test]
    fn receive_buffers_too_small_for_a_header_are_refused() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[desc(0x10_0000, 43, VRING_DESC_F_WRITE)])
            .unwrap();
        assert!(matches!(
            RxBuffer::new(&mem, chain),
            Err(PacketError::TruncatedHeader(43))
        ));
        // Read-only descriptors do not count as receive space.
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, 4096, 0),
                desc(0x11_0000, 8, VRING_DESC_F_WRITE),
            ])
            .unwrap();
        assert!(RxBuffer::new(&mem, chain).is_err());
    }
}
