//! The device's one worker thread: it waits in epoll on the receive and transmit queue
//! eventfds, the tap and the stop eventfd, and copies frames between the virtqueues and the tap.
//!
//! Each wake-up runs the same pass, whatever woke it: send what the guest queued for transmit
//! (until the tap would block, in which case the head frame waits for the tap to become
//! writable), then move frames from the tap into receive buffers while both exist, then tell
//! epoll what to watch. When the guest has no receive buffer left, the frame already read stays
//! here and the tap is not watched until the guest's next refill notifies the receive queue:
//! the worker sleeps instead of spinning, and further frames wait in the tap's own queue (the
//! host kernel drops and counts them there when it overflows). One interrupt per pass covers
//! both queues. Passes are bounded, so neither direction starves the other.
//!
//! Notification suppression (VIRTIO_RING_F_EVENT_IDX, when the driver takes it): the driver
//! notifies a queue only when we asked, which we do when we have drained it (transmit) or run
//! out of its buffers (receive); and we interrupt only when the driver's used_event says so.
//! Each notification or interrupt is a VM exit, the dominant cost of a small frame.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::frame::{
    read_tx_frame, rx_chain_room, write_rx_frame, FrameError, Offloads, MAX_FRAME_LEN,
    NUM_BUFFERS_AT, VNET_HEADER_LEN,
};
use super::tap::Tap;
use crate::devices::virtio::device::{ActiveQueue, Interrupt};
use crate::memory::GuestMemory;

const TOKEN_STOP: u64 = 0;
const TOKEN_RX: u64 = 1;
const TOKEN_TX: u64 = 2;
const TOKEN_TAP: u64 = 3;

/// Frames moved per direction per pass before the other direction gets its turn.
const FRAMES_PER_PASS: usize = 256;
/// The most mergeable receive buffers one frame may take. Linux posts buffers of at least
/// 1.5 KiB, so a 64 KiB frame takes about 44; a driver posting tiny buffers gets its frames
/// dropped instead of stalling the queue.
const MAX_CHAINS_PER_FRAME: usize = 128;

/// What became of the frame waiting for receive buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxOutcome {
    /// Written into the guest's buffers.
    Delivered,
    /// Too long for the buffers offered: dropped.
    Dropped,
    /// Not enough buffers yet: the frame waits for the refill.
    NoBuffers,
    /// The used ring cannot be written; the driver has to reset the device.
    RingBroken,
}

/// The outcome, and whether used-ring entries were added on the way.
struct RxDelivery {
    outcome: RxOutcome,
    used_buffers: bool,
}

impl RxDelivery {
    fn nothing_used(outcome: RxOutcome) -> RxDelivery {
        RxDelivery {
            outcome,
            used_buffers: false,
        }
    }
}

/// Whether the worker goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// The stop eventfd fired.
    Stop,
}

/// What the device did with frames, for diagnostics and tests; every dropped frame or refused
/// chain lands in exactly one counter. Shared with the device, which outlives workers.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames delivered from the tap into guest receive buffers.
    pub rx_frames: AtomicU64,
    /// Their bytes, virtio-net headers included.
    pub rx_bytes: AtomicU64,
    /// Frames sent from the guest to the tap.
    pub tx_frames: AtomicU64,
    /// Their bytes, virtio-net headers included.
    pub tx_bytes: AtomicU64,
    /// Times the guest had no receive buffer while a frame waited (not a drop: the frame is
    /// delivered after the guest's refill).
    pub rx_waits_for_buffers: AtomicU64,
    /// Host frames dropped: longer than the guest's receive buffer or our limit, shorter than
    /// a header, or needing an offload the guest did not accept.
    pub rx_dropped_frames: AtomicU64,
    /// Receive chains returned unused: device-readable buffers or outside guest memory.
    pub rx_bad_chains: AtomicU64,
    /// Guest frames dropped: too short, too long, or asking for an offload not negotiated.
    pub tx_dropped_frames: AtomicU64,
    /// Transmit chains dropped: device-writable buffers or outside guest memory.
    pub tx_bad_chains: AtomicU64,
    /// Guest frames the tap refused (write errors other than "would block").
    pub tx_tap_errors: AtomicU64,
    /// Reads from the tap that failed other than with "would block".
    pub rx_tap_errors: AtomicU64,
}

impl NetCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads one counter (tests and diagnostics).
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn count_tx_error(&self, error: &FrameError) {
        let counter = match error {
            FrameError::WrongDirection | FrameError::BadChain | FrameError::Memory => {
                &self.tx_bad_chains
            }
            _ => &self.tx_dropped_frames,
        };
        NetCounters::add(counter, 1);
    }
}

/// The queues of an activated device, in the spec's order.
pub struct Queues {
    /// Device -> guest frames (receive buffers), queue 0.
    pub rx: ActiveQueue,
    /// Guest -> device frames, queue 1.
    pub tx: ActiveQueue,
}

/// Everything the worker thread owns.
pub struct Worker {
    epoll: Epoll,
    memory: GuestMemory,
    queues: Queues,
    interrupt: Arc<Interrupt>,
    tap: Arc<Tap>,
    offloads: Offloads,
    counters: Arc<NetCounters>,
    /// One frame from the tap; one byte longer than the longest we accept, to see truncation.
    rx_buf: Vec<u8>,
    /// The length of a frame in `rx_buf` that waits for a receive buffer.
    rx_pending: Option<usize>,
    /// The guest had no receive buffer: do not read the tap before it refills.
    rx_waiting_for_buffers: bool,
    tx_buf: Vec<u8>,
    /// The tap would block: the head transmit chain waits for it to become writable.
    tx_blocked: bool,
    /// A pass stopped at `FRAMES_PER_PASS` with work left: do not sleep before the next one.
    more_work: bool,
    /// The tap failed for good (its interface was deleted): no longer watched.
    tap_gone: bool,
    /// What epoll currently watches on the tap.
    tap_interest: EventSet,
}

impl Worker {
    /// Sets up epoll over the queues, the tap and `stop`.
    pub fn new(
        memory: GuestMemory,
        queues: Queues,
        interrupt: Arc<Interrupt>,
        tap: Arc<Tap>,
        offloads: Offloads,
        counters: Arc<NetCounters>,
        stop: &EventFd,
    ) -> std::io::Result<Worker> {
        let epoll = Epoll::new()?;
        let sources = [
            (stop.as_raw_fd(), TOKEN_STOP, EventSet::IN),
            (queues.rx.notify.as_raw_fd(), TOKEN_RX, EventSet::IN),
            (queues.tx.notify.as_raw_fd(), TOKEN_TX, EventSet::IN),
            (tap.as_raw_fd(), TOKEN_TAP, EventSet::IN),
        ];
        for (fd, token, events) in sources {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))?;
        }
        Ok(Worker {
            epoll,
            memory,
            queues,
            interrupt,
            tap,
            offloads,
            counters,
            rx_buf: vec![0; MAX_FRAME_LEN + 1],
            rx_pending: None,
            rx_waiting_for_buffers: false,
            tx_buf: vec![0; MAX_FRAME_LEN],
            tx_blocked: false,
            more_work: false,
            tap_gone: false,
            tap_interest: EventSet::IN,
        })
    }

    /// Serves until stopped.
    pub fn run(mut self) {
        while self.step(None) == Flow::Continue {}
    }

    /// Waits for events (at most `max_wait`, when given, which tests use) and runs one pass.
    pub fn step(&mut self, max_wait: Option<Duration>) -> Flow {
        let mut events = [EpollEvent::default(); 8];
        let timeout = if self.more_work {
            0
        } else {
            max_wait.map_or(-1, |wait| {
                i32::try_from(wait.as_millis()).unwrap_or(i32::MAX)
            })
        };
        let ready = match self.epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            // epoll_wait on a valid epoll fd does not fail otherwise; stop serving.
            Err(_) => return Flow::Stop,
        };
        for event in &events[..ready] {
            match event.data() {
                TOKEN_STOP => return Flow::Stop,
                TOKEN_RX => {
                    // Reading resets the counter; new buffers mean the tap is worth reading.
                    let _ = self.queues.rx.notify.read();
                    self.rx_waiting_for_buffers = false;
                }
                TOKEN_TX => drop(self.queues.tx.notify.read()),
                TOKEN_TAP => {
                    let set = event.event_set();
                    if set.contains(EventSet::OUT) {
                        self.tx_blocked = false;
                    }
                    // A tap whose interface was deleted reports an error forever, even while
                    // not watched for anything: stop watching it (watch_tap).
                    if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                        NetCounters::add(&self.counters.rx_tap_errors, 1);
                        self.tap_gone = true;
                    }
                }
                _ => {}
            }
        }
        self.more_work = false;
        let tx_used = self.process_tx();
        let rx_used = self.process_rx();
        self.watch_tap();
        // Both queues are asked (each call also resets its "added since" count); with
        // EVENT_IDX the driver says how far we may go before it wants an interrupt.
        let memory = &self.memory;
        let wants = |queue: &mut Queue, used: bool| {
            used && queue.needs_notification(memory).unwrap_or(true)
        };
        let tx_wants = wants(&mut self.queues.tx.queue, tx_used);
        let rx_wants = wants(&mut self.queues.rx.queue, rx_used);
        if tx_wants || rx_wants {
            self.interrupt.signal_used_queue();
        }
        Flow::Continue
    }

    /// Sends queued guest frames to the tap; returns whether transmit buffers were used.
    fn process_tx(&mut self) -> bool {
        if self.tx_blocked {
            return false;
        }
        let memory = &self.memory;
        let queue = &mut self.queues.tx.queue;
        let mut used = false;
        for _ in 0..FRAMES_PER_PASS {
            let Some(chain) = pop_or_ask_for_notification(queue, memory) else {
                return used;
            };
            let head = chain.head_index();
            match read_tx_frame(memory, chain, &self.offloads, &mut self.tx_buf) {
                Ok(len) => match write_retrying(&self.tap, &self.tx_buf[..len]) {
                    Ok(()) => {
                        NetCounters::add(&self.counters.tx_frames, 1);
                        NetCounters::add(&self.counters.tx_bytes, len as u64);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock && !self.tap_gone => {
                        // Retried when the tap is writable again (watch_tap asks for that).
                        queue.go_to_previous_position();
                        self.tx_blocked = true;
                        return used;
                    }
                    Err(_) => NetCounters::add(&self.counters.tx_tap_errors, 1),
                },
                Err(error) => self.counters.count_tx_error(&error),
            }
            // Transmit buffers are only read: the used length is 0.
            if queue.add_used(memory, head, 0).is_err() {
                // The used ring is unusable; the driver has to reset the device.
                return used;
            }
            used = true;
        }
        self.more_work = true;
        used
    }

    /// Moves frames from the tap into receive buffers; returns whether any buffer was used.
    fn process_rx(&mut self) -> bool {
        let mut used = false;
        for _ in 0..FRAMES_PER_PASS {
            if self.rx_waiting_for_buffers || self.tap_gone {
                return used;
            }
            let len = match self.rx_pending {
                Some(len) => len,
                None => match self.read_tap_frame() {
                    Some(len) => len,
                    None => return used,
                },
            };
            self.rx_pending = Some(len);
            let delivery = self.deliver_pending(len);
            used |= delivery.used_buffers;
            match delivery.outcome {
                RxOutcome::Delivered => {
                    NetCounters::add(&self.counters.rx_frames, 1);
                    NetCounters::add(&self.counters.rx_bytes, len as u64);
                    self.rx_pending = None;
                }
                RxOutcome::Dropped => {
                    NetCounters::add(&self.counters.rx_dropped_frames, 1);
                    self.rx_pending = None;
                }
                RxOutcome::NoBuffers => {
                    // The refill notifies TOKEN_RX; until then the tap is not read.
                    self.rx_waiting_for_buffers = true;
                    NetCounters::add(&self.counters.rx_waits_for_buffers, 1);
                    return used;
                }
                RxOutcome::RingBroken => return used,
            }
        }
        self.more_work = true;
        used
    }

    /// Puts the frame waiting in `rx_buf` into receive buffers: one chain, or with mergeable
    /// receive buffers as many consecutive chains as it takes (their number goes into the
    /// header's `num_buffers`). Chains that are not usable receive buffers are returned empty
    /// on the way.
    fn deliver_pending(&mut self, len: usize) -> RxDelivery {
        let memory = &self.memory;
        let queue = &mut self.queues.rx.queue;
        let max_chains = if self.offloads.mergeable_rx_buffers() {
            MAX_CHAINS_PER_FRAME
        } else {
            1
        };
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut room = 0usize;
        while room < len && good.len() < max_chains {
            let Some(chain) = pop_or_ask_for_notification(queue, memory) else {
                // The driver notifies its next refill. Nothing was used yet: give every chain
                // back, to be taken again after the refill, so the frame's buffers stay
                // consecutive in the used ring.
                for _ in 0..good.len() + bad.len() {
                    queue.go_to_previous_position();
                }
                return RxDelivery::nothing_used(RxOutcome::NoBuffers);
            };
            match rx_chain_room(memory, &chain) {
                Ok(chain_room) => {
                    room = room.saturating_add(chain_room);
                    good.push((chain, chain_room));
                }
                // Returned empty below (the driver drops it).
                Err(_) => bad.push(chain.head_index()),
            }
        }
        let mut delivery = RxDelivery::nothing_used(RxOutcome::Delivered);
        for head in bad {
            NetCounters::add(&self.counters.rx_bad_chains, 1);
            if queue.add_used(memory, head, 0).is_err() {
                delivery.outcome = RxOutcome::RingBroken;
                return delivery;
            }
            delivery.used_buffers = true;
        }
        if room < len {
            if max_chains == 1 {
                // A single buffer too small for this frame: the frame is dropped, the buffer
                // (the last chain taken) waits for the next frame.
                queue.go_to_previous_position();
                delivery.outcome = RxOutcome::Dropped;
                return delivery;
            }
            // Tiny mergeable buffers that cannot hold a frame even together: returned empty.
            delivery.outcome = RxOutcome::Dropped;
            for (chain, _) in good {
                if queue.add_used(memory, chain.head_index(), 0).is_err() {
                    delivery.outcome = RxOutcome::RingBroken;
                    return delivery;
                }
            }
            return delivery;
        }
        if max_chains > 1 {
            // Fits in u16: at most MAX_CHAINS_PER_FRAME.
            let count = good.len() as u16;
            self.rx_buf[NUM_BUFFERS_AT..VNET_HEADER_LEN].copy_from_slice(&count.to_le_bytes());
        }
        let mut offset = 0;
        for (chain, chain_room) in good {
            let head = chain.head_index();
            let part = chain_room.min(len - offset);
            let written = match write_rx_frame(memory, chain, &self.rx_buf[offset..offset + part]) {
                Ok(written) => written,
                Err(_) => {
                    // Checked a moment ago, so the guest changed its chain meanwhile.
                    NetCounters::add(&self.counters.rx_bad_chains, 1);
                    0
                }
            };
            offset += part;
            if queue.add_used(memory, head, written).is_err() {
                delivery.outcome = RxOutcome::RingBroken;
                return delivery;
            }
            delivery.used_buffers = true;
        }
        delivery
    }

    /// Reads the next acceptable frame from the tap into `rx_buf`, dropping (and counting)
    /// unacceptable ones; None when the tap has nothing more now.
    fn read_tap_frame(&mut self) -> Option<usize> {
        loop {
            let len = match self.tap.read_frame(&mut self.rx_buf) {
                Ok(len) => len,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(_) => {
                    // The tap's interface was deleted (EBADFD) or worse: stop watching it, or
                    // its error condition would wake us forever.
                    NetCounters::add(&self.counters.rx_tap_errors, 1);
                    self.tap_gone = true;
                    return None;
                }
            };
            if !(VNET_HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
                NetCounters::add(&self.counters.rx_dropped_frames, 1);
                continue;
            }
            let mut header = [0u8; VNET_HEADER_LEN];
            header.copy_from_slice(&self.rx_buf[..VNET_HEADER_LEN]);
            if self.offloads.fix_rx_header(&mut header).is_err() {
                NetCounters::add(&self.counters.rx_dropped_frames, 1);
                continue;
            }
            self.rx_buf[..VNET_HEADER_LEN].copy_from_slice(&header);
            return Some(len);
        }
    }

    /// Watches the tap for frames unless the guest has no buffers, and for room while a guest
    /// frame waits for it.
    fn watch_tap(&mut self) {
        if self.tap_gone {
            if !self.tap_interest.is_empty() {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    self.tap.as_raw_fd(),
                    EpollEvent::default(),
                );
                self.tap_interest = EventSet::empty();
            }
            return;
        }
        let mut wanted = EventSet::empty();
        if !self.rx_waiting_for_buffers {
            wanted |= EventSet::IN;
        }
        if self.tx_blocked {
            wanted |= EventSet::OUT;
        }
        if wanted != self.tap_interest {
            let event = EpollEvent::new(wanted, TOKEN_TAP);
            if self
                .epoll
                .ctl(ControlOperation::Modify, self.tap.as_raw_fd(), event)
                .is_ok()
            {
                self.tap_interest = wanted;
            }
        }
    }
}

/// The next available chain; when there is none, asks the driver to notify the next one and
/// takes one added in between. None means the driver will notify.
///
/// With EVENT_IDX the request is "notify when the available index passes N" (`avail_event`),
/// and N is our position at the time of asking. So asking must be the last thing before a
/// queue is left drained: a chain popped after the request moves our position past N, the
/// driver's later additions never cross N again, and it stops notifying (it did, once: guest
/// transmits then only went out when something else woke the worker, e.g. the peer's ACKs,
/// and TCP from the guest fell to 0.1 Mbit/s, waiting for the peer's delayed ACKs). Each None
/// here therefore comes straight after a request made at the current position.
fn pop_or_ask_for_notification<'m>(
    queue: &mut Queue,
    memory: &'m GuestMemory,
) -> Option<DescriptorChain<&'m GuestMemory>> {
    if let Some(chain) = queue.pop_descriptor_chain(memory) {
        return Some(chain);
    }
    match queue.enable_notification(memory) {
        // Added between the pop and the request. If it cannot be popped (a ring the driver
        // broke), None still follows a request at the current position.
        Ok(true) => queue.pop_descriptor_chain(memory),
        // The driver notifies the next chain; or the ring cannot be read, and the driver
        // has to reset the device.
        Ok(false) | Err(_) => None,
    }
}

/// Writes one frame, retrying when a signal interrupted the write.
fn write_retrying(tap: &Tap, frame: &[u8]) -> std::io::Result<()> {
    loop {
        match tap.write_frame(frame) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
