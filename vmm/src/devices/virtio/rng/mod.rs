//! virtio-rng (device ID 4, spec 5.4): one queue of write-only buffers the device fills with
//! entropy from the host's getrandom, so the guest never waits for its own entropy pool.
//!
//! The worker is one thread per activated device, blocked in epoll on the queue's notify
//! eventfd (signalled by KVM through the ioeventfd) and on a stop eventfd. One thread per device
//! keeps the devices independent and the code linear; an entropy device is idle nearly always,
//! so the thread costs nothing but a stack.

mod request;
pub mod seccomp;

use std::os::fd::AsRawFd;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

pub use request::{fill_chain, RequestError, MAX_BYTES_PER_REQUEST};

use super::device::{ActivateError, ActiveQueue, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use super::read_config_space;
use super::worker_thread::WorkerThread;
use crate::memory::GuestMemory;

/// The virtio device ID of an entropy source.
pub const VIRTIO_ID_RNG: u32 = 4;
/// Largest request queue the driver may set up.
const QUEUE_SIZE: u16 = 256;

const TOKEN_NOTIFY: u64 = 0;
const TOKEN_STOP: u64 = 1;

/// The entropy device.
pub struct Rng {
    worker: Option<WorkerThread>,
}

impl Rng {
    /// A device that is not yet activated.
    pub fn new() -> Self {
        Rng { worker: None }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    /// virtio-rng has no configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&[], offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        memory: GuestMemory,
        _features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        self.reset();
        let active = queues
            .into_iter()
            .next()
            .ok_or(ActivateError::QueueMissing(0))?;
        let stop = WorkerThread::stop_event()?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            active.notify.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_NOTIFY),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_STOP),
        )?;
        self.worker = Some(WorkerThread::start(
            crate::sandbox::ThreadKind::Rng,
            stop,
            move || run_worker(epoll, active, memory, interrupt),
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops and joins it (also when the device itself is dropped).
        self.worker = None;
    }
}

/// Serves the queue until the stop eventfd fires.
fn run_worker(
    epoll: Epoll,
    mut active: ActiveQueue,
    memory: GuestMemory,
    interrupt: Arc<Interrupt>,
) {
    let mut events = [EpollEvent::default(); 2];
    loop {
        let ready = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // epoll_wait on a valid epoll fd does not fail otherwise; stop serving.
            Err(_) => return,
        };
        for event in &events[..ready] {
            match event.data() {
                TOKEN_STOP => return,
                _ => {
                    let _ = active.notify.read();
                    if process_queue(&mut active.queue, &memory) {
                        interrupt.signal_used_queue();
                    }
                }
            }
        }
    }
}

/// Answers every available request; returns whether any buffer was used. A failed request is
/// returned with length 0 (the driver sees no data and asks again); a queue whose rings cannot
/// be read stops being served until the driver notifies again.
pub fn process_queue(queue: &mut Queue, memory: &GuestMemory) -> bool {
    let mut used_any = false;
    // Bounded: the avail iterator yields at most queue-size chains per pass.
    let chains: Vec<_> = match queue.iter(memory) {
        Ok(iter) => iter.collect(),
        Err(_) => return false,
    };
    for chain in chains {
        let head = chain.head_index();
        let len = fill_chain(memory, chain).unwrap_or(0);
        if queue.add_used(memory, head, len).is_err() {
            return used_any;
        }
        used_any = true;
    }
    used_any
}

#[cfg(test)]
mod tests {
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
    }

    #[test]
    fn a_good_chain_is_filled() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, 64, VRING_DESC_F_WRITE),
                desc(0x11_0000, 32, VRING_DESC_F_WRITE),
            ])
            .unwrap();
        assert_eq!(fill_chain(&mem, chain), Ok(96));
        let mut a = [0u8; 64];
        mem.read_slice(&mut a, GuestAddress(0x10_0000)).unwrap();
        let mut b = [0u8; 32];
        mem.read_slice(&mut b, GuestAddress(0x11_0000)).unwrap();
        assert!(a.iter().any(|x| *x != 0) && b.iter().any(|x| *x != 0));
        assert_ne!(a[..32], b[..]);
    }

    #[test]
    fn requests_are_capped() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, 0x1_0000, VRING_DESC_F_WRITE),
                desc(0x18_0000, 0x1_0000, VRING_DESC_F_WRITE),
            ])
            .unwrap();
        assert_eq!(fill_chain(&mem, chain), Ok(MAX_BYTES_PER_REQUEST as u32));
        let mut after = [0u8; 16];
        mem.read_slice(&mut after, GuestAddress(0x18_0000)).unwrap();
        assert_eq!(after, [0; 16], "nothing written past the cap");
    }

    #[test]
    fn a_read_only_descriptor_is_refused() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq
            .build_desc_chain(&[
                desc(0x10_0000, 64, VRING_DESC_F_WRITE),
                desc(0x11_0000, 64, 0),
            ])
            .unwrap();
        assert_eq!(
            fill_chain(&mem, chain),
            Err(RequestError::ReadOnlyDescriptor(1))
        );
        let mut a = [0u8; 64];
        mem.read_slice(&mut a, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(a, [0; 64], "nothing written for a refused request");
    }

    #[test]
    fn out_of_range_buffers_fail_without_panicking() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        for (addr, len) in [
            (0x1f_fff0, 64),
            (0x4000_0000, 8),
            (u64::MAX - 4, 16),
            (0x10_0000, u32::MAX),
        ] {
            let chain = vq
                .build_desc_chain(&[desc(addr, len, VRING_DESC_F_WRITE)])
                .unwrap();
            assert!(
                matches!(
                    fill_chain(&mem, chain),
                    Err(RequestError::OutOfRange { .. })
                ),
                "{addr:#x}+{len:#x}"
            );
        }
    }

    #[test]
    fn the_queue_is_served_and_used_lengths_reported() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        vq.add_desc_chains(
            &[
                desc(0x10_0000, 48, VRING_DESC_F_WRITE),
                desc(0x11_0000, 48, 0),
            ],
            0,
        )
        .unwrap();
        let mut queue: Queue = vq.create_queue().unwrap();
        assert!(process_queue(&mut queue, &mem));
        let used = vq.used();
        assert_eq!(used.idx().load(), 2);
        let first = used.ring().ref_at(0).unwrap().load();
        let second = used.ring().ref_at(1).unwrap().load();
        assert_eq!((first.id(), first.len()), (0, 48));
        assert_eq!((second.id(), second.len()), (1, 0));
        // Nothing new: nothing used.
        assert!(!process_queue(&mut queue, &mem));
    }
}
