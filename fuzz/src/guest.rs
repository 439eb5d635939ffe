//! A fake guest: two RAM regions with a hole between them, and split virtqueues whose
//! descriptor tables and available rings the fuzzer input fills, as a (possibly malicious)
//! driver would before notifying the device.
//!
//! What the input chooses per descriptor: where its buffer is (a fresh buffer in RAM holding
//! input bytes, the end of the first region so that it runs into the hole, the second region,
//! the queue's own rings, or any 64-bit address), its length, whether it is device-writable,
//! and now and then raw flags (INDIRECT, garbage) and a raw `next` (loops, out of range). Per
//! queue it may also move the available index anywhere. The queues themselves are valid (the
//! transport checks size and ring addresses before a device sees them; `virtio_mmio` fuzzes
//! that part).

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm::memory::GuestMemory;

/// Entries per queue unless a target asks for more: small, so that the fuzzer fills and wraps
/// rings often.
pub const QUEUE_SIZE: u16 = 16;
/// The most entries a queue may have here (its rings must fit in 4 KiB).
pub const MAX_QUEUE_SIZE: u16 = 64;
/// The first RAM region.
pub const REGION0: (u64, usize) = (0, 0x4_0000);
/// The second RAM region, after a hole.
pub const REGION1: (u64, usize) = (0x8_0000, 0x4_0000);
/// Queue `n`'s descriptor table is at `QUEUES_AT + n * 0x1000`; its available ring 0x400 and
/// its used ring 0x600 further (room for 64 entries each).
pub const QUEUES_AT: u64 = 0x1000;
pub const AVAIL_OFFSET: u64 = 0x400;
pub const USED_OFFSET: u64 = 0x600;
/// Buffers holding input bytes are carved from here to the end of the first region.
const DATA_START: u64 = 0x1_0000;

struct FakeQueue {
    base: u64,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
    /// Descriptors written so far (beyond QUEUE_SIZE, older chains were overwritten).
    written: usize,
}

/// The guest's RAM and queues.
pub struct FakeGuest {
    /// Guest RAM, as the VMM maps it.
    pub memory: GuestMemory,
    queues: Vec<FakeQueue>,
    next_data: u64,
    /// Chains made available per queue (the used ring may not hold more).
    offered: Vec<u16>,
    /// The input moved an available index by hand: counts no longer mean anything.
    disturbed: bool,
}

impl FakeGuest {
    /// A guest with `queue_count` empty queues (at most 8) of [`QUEUE_SIZE`] entries.
    pub fn new(queue_count: usize) -> FakeGuest {
        FakeGuest::with_queue_size(queue_count, QUEUE_SIZE)
    }

    /// A guest with `queue_count` empty queues (at most 8) of `size` entries (a power of two,
    /// at most [`MAX_QUEUE_SIZE`]).
    pub fn with_queue_size(queue_count: usize, size: u16) -> FakeGuest {
        assert!(queue_count <= 8, "the rings live below DATA_START");
        assert!(size.is_power_of_two() && size <= MAX_QUEUE_SIZE);
        let memory = GuestMemory::from_ranges(&[
            (GuestAddress(REGION0.0), REGION0.1),
            (GuestAddress(REGION1.0), REGION1.1),
        ])
        .expect("anonymous guest RAM");
        let queues = (0..queue_count as u64)
            .map(|n| FakeQueue {
                base: QUEUES_AT + n * 0x1000,
                size,
                next_desc: 0,
                avail_idx: 0,
                written: 0,
            })
            .collect();
        FakeGuest {
            memory,
            queues,
            next_data: DATA_START,
            offered: vec![0; queue_count],
            disturbed: false,
        }
    }

    /// Queue `index` as the transport hands it to the device once the driver set it up.
    pub fn queue(&self, index: usize) -> Queue {
        let (base, size) = (self.queues[index].base, self.queues[index].size);
        let mut queue = Queue::new(size).expect("valid maximum size");
        queue.set_size(size);
        queue
            .try_set_desc_table_address(GuestAddress(base))
            .expect("aligned");
        queue
            .try_set_avail_ring_address(GuestAddress(base + AVAIL_OFFSET))
            .expect("aligned");
        queue
            .try_set_used_ring_address(GuestAddress(base + USED_OFFSET))
            .expect("aligned");
        queue.set_ready(true);
        assert!(queue.is_valid(&self.memory), "the fake rings are in RAM");
        queue
    }

    /// Where queue `index`'s rings are: (descriptor table, available ring, used ring).
    pub fn rings(&self, index: usize) -> (u64, u64, u64) {
        let base = self.queues[index].base;
        (base, base + AVAIL_OFFSET, base + USED_OFFSET)
    }

    /// RAM for a buffer of `len` bytes, holding as many input bytes as are left.
    fn buffer(&mut self, u: &mut Unstructured, len: u32) -> Result<u64> {
        let end = REGION0.0 + REGION0.1 as u64;
        let len64 = u64::from(len);
        if self.next_data + len64 > end {
            self.next_data = DATA_START;
        }
        let addr = self.next_data;
        self.next_data = (addr + len64).next_multiple_of(16).min(end);
        let take = (len as usize).min(u.len());
        let bytes = u.bytes(take)?;
        let _ = self.memory.write_slice(bytes, GuestAddress(addr));
        Ok(addr)
    }

    /// Puts `contents` into a fresh buffer (for requests the target builds itself).
    pub fn buffer_with(&mut self, contents: &[u8]) -> u64 {
        let end = REGION0.0 + REGION0.1 as u64;
        let len = contents.len() as u64;
        if self.next_data + len > end {
            self.next_data = DATA_START;
        }
        let addr = self.next_data;
        self.next_data = (addr + len).next_multiple_of(16).min(end);
        self.memory
            .write_slice(contents, GuestAddress(addr))
            .expect("buffer inside RAM");
        addr
    }

    /// One descriptor's (address, length) as the input chooses.
    fn placement(&mut self, u: &mut Unstructured, queue: usize) -> Result<(u64, u32)> {
        Ok(match u.int_in_range(0u8..=11)? {
            // Most buffers are ordinary: input bytes in RAM, small or up to 64 KiB.
            0..=5 => {
                let len = u.int_in_range(0u32..=512)?;
                (self.buffer(u, len)?, len)
            }
            6 => {
                let len = u.int_in_range(0u32..=0x1_0000)?;
                (self.buffer(u, len)?, len)
            }
            // Runs off the end of the first region into the hole.
            7 => {
                let end = REGION0.0 + REGION0.1 as u64;
                (
                    end - u.int_in_range(0u64..=64)?,
                    u.int_in_range(0u32..=256)?,
                )
            }
            // Inside (or off the end of) the second region.
            8 => (
                REGION1.0 + u.int_in_range(0u64..=REGION1.1 as u64)?,
                u.int_in_range(0u32..=0x1000)?,
            ),
            // The queue's own rings: the device must cope with buffers aliasing them (and
            // may then scribble over the used ring, so the counts are not checked).
            9 => {
                self.disturbed = true;
                (
                    self.queues[queue].base + u.int_in_range(0u64..=0x800)?,
                    u.int_in_range(0u32..=0x400)?,
                )
            }
            // Anything at all.
            _ => {
                self.disturbed = true;
                (u.arbitrary()?, u.arbitrary()?)
            }
        })
    }

    /// Writes one descriptor chain chosen by the input into queue `queue`'s table and makes it
    /// available.
    pub fn add_chain(&mut self, u: &mut Unstructured, queue: usize) -> Result<()> {
        let count = u.int_in_range(1u16..=6)?;
        let mut descriptors = Vec::with_capacity(usize::from(count));
        for i in 0..count {
            let (addr, len) = self.placement(u, queue)?;
            let writable = u.arbitrary::<bool>()?;
            descriptors.push((addr, len, writable, i + 1 == count));
        }
        let (head, size) = (self.queues[queue].next_desc, self.queues[queue].size);
        for (i, (addr, len, writable, last)) in descriptors.into_iter().enumerate() {
            let index = (head + i as u16) % size;
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let mut next = (index + 1) % size;
            // Now and then a driver bug or an attack: any flags (INDIRECT, unknown bits, a
            // missing or extra NEXT) and any `next` (a loop, out of the table).
            if u.ratio(1u8, 16)? {
                self.disturbed = true;
                flags = u.arbitrary()?;
                next = u.arbitrary()?;
            }
            self.write_descriptor(queue, index, addr, len, flags, next);
        }
        self.queues[queue].next_desc = (head + count) % size;
        self.queues[queue].written += usize::from(count);
        self.make_available(queue, head);
        Ok(())
    }

    /// A chain of the given (contents or room, device-writable) buffers, laid out by the caller.
    pub fn add_buffers(&mut self, queue: usize, buffers: &[(Vec<u8>, bool)]) {
        let (head, size) = (self.queues[queue].next_desc, self.queues[queue].size);
        let count = buffers.len() as u16;
        for (i, (contents, writable)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % size;
            let addr = self.buffer_with(contents);
            let mut flags = if *writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            if i + 1 != buffers.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let len = contents.len() as u32;
            self.write_descriptor(queue, index, addr, len, flags, (index + 1) % size);
        }
        self.queues[queue].next_desc = (head + count) % size;
        self.queues[queue].written += buffers.len();
        self.make_available(queue, head);
    }

    /// Descriptors written into queue `queue`'s table so far; past the queue's size the newest
    /// chains overwrote older ones.
    pub fn descriptors_written(&self, queue: usize) -> usize {
        self.queues[queue].written
    }

    fn write_descriptor(
        &self,
        queue: usize,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = self.queues[queue].base + u64::from(index) * 16;
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.memory
            .write_slice(&raw, GuestAddress(at))
            .expect("descriptor table inside RAM");
    }

    fn make_available(&mut self, queue: usize, head: u16) {
        let q = &mut self.queues[queue];
        let avail = q.base + AVAIL_OFFSET;
        let slot = avail + 4 + u64::from(q.avail_idx % q.size) * 2;
        q.avail_idx = q.avail_idx.wrapping_add(1);
        let idx = q.avail_idx;
        self.memory
            .write_obj(head.to_le(), GuestAddress(slot))
            .expect("available ring inside RAM");
        self.memory
            .write_obj(idx.to_le(), GuestAddress(avail + 2))
            .expect("available ring inside RAM");
        self.offered[queue] = self.offered[queue].wrapping_add(1);
    }

    /// Adds up to `max` chains chosen by the input to queue `queue`, and maybe moves its
    /// available index anywhere (a driver claiming more chains than the ring holds).
    pub fn add_chains(&mut self, u: &mut Unstructured, queue: usize, max: usize) -> Result<()> {
        let count = u.int_in_range(0..=max)?;
        for _ in 0..count {
            self.add_chain(u, queue)?;
        }
        if u.ratio(1u8, 32)? {
            let idx: u16 = u.arbitrary()?;
            let avail = self.queues[queue].base + AVAIL_OFFSET;
            self.memory
                .write_obj(idx.to_le(), GuestAddress(avail + 2))
                .expect("available ring inside RAM");
            self.queues[queue].avail_idx = idx;
            self.disturbed = true;
        }
        Ok(())
    }

    /// The used ring's index of queue `queue`.
    pub fn used_idx(&self, queue: usize) -> u16 {
        let used = self.queues[queue].base + USED_OFFSET;
        u16::from_le(
            self.memory
                .read_obj(GuestAddress(used + 2))
                .expect("used ring in RAM"),
        )
    }

    /// The device never returns more chains than were offered, and only heads inside the
    /// table (checked unless the input moved an available index by hand).
    pub fn check_used(&self, queue: usize) {
        if self.disturbed {
            return;
        }
        let used = self.used_idx(queue);
        assert!(
            used <= self.offered[queue],
            "queue {queue}: {used} chains used, {} offered",
            self.offered[queue]
        );
        let size = self.queues[queue].size;
        let ring = self.queues[queue].base + USED_OFFSET + 4;
        for i in 0..used.min(size) {
            let id: u32 = self
                .memory
                .read_obj(GuestAddress(ring + u64::from(i) * 8))
                .expect("used ring in RAM");
            assert!(id < u32::from(size), "queue {queue}: used head {id}");
        }
    }
}
