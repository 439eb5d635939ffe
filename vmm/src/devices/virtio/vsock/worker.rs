//! The device's one worker thread: it waits in epoll on the three queue eventfds, the stop
//! eventfd, the VM's unix listener and every unix stream, and moves packets between the
//! virtqueues and the muxer.
//!
//! Each wake-up runs the same pass, whatever woke it: drain the transmit queue (unless the
//! head packet is blocked on a full connection, in which case it is retried on the next wake,
//! typically the unix stream becoming writable), then fill receive buffers while the muxer has
//! packets and the guest has buffers (when it has none, its next refill notifies us), then tell
//! epoll what to watch. One interrupt per pass covers both queues.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::{Muxer, TxOutcome, TOKEN_STREAM_BASE};
use super::packet::{RxBuffer, TxPacket};
use crate::devices::virtio::device::{ActiveQueue, Interrupt};
use crate::memory::GuestMemory;

const TOKEN_STOP: u64 = 0;
const TOKEN_RX: u64 = 1;
const TOKEN_TX: u64 = 2;
const TOKEN_EVENT: u64 = 3;
const TOKEN_LISTENER: u64 = 4;

/// Transmit chains handled per pass, so that a guest that keeps the queue full cannot starve
/// the other direction; the rest is handled on an immediate next pass.
const TX_CHAINS_PER_PASS: usize = 256;

/// Whether the worker goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// The stop eventfd fired.
    Stop,
}

/// The queues of an activated device, in the spec's order.
pub struct Queues {
    /// Device -> guest packets (receive buffers).
    pub rx: ActiveQueue,
    /// Guest -> device packets.
    pub tx: ActiveQueue,
    /// Transport events; we never send any (they are for migration), but hold the queue.
    pub event: ActiveQueue,
}

/// Everything the worker thread owns.
pub struct Worker {
    epoll: Epoll,
    memory: GuestMemory,
    queues: Queues,
    interrupt: Arc<Interrupt>,
    muxer: Muxer,
    /// The last pass stopped at `TX_CHAINS_PER_PASS`: do not sleep before the next one.
    tx_pending: bool,
}

impl Worker {
    /// Sets up epoll over the queues, `stop`, and the muxer's listener.
    pub fn new(
        memory: GuestMemory,
        queues: Queues,
        interrupt: Arc<Interrupt>,
        muxer: Muxer,
        stop: &EventFd,
    ) -> std::io::Result<Worker> {
        let epoll = Epoll::new()?;
        let sources = [
            (stop.as_raw_fd(), TOKEN_STOP),
            (queues.rx.notify.as_raw_fd(), TOKEN_RX),
            (queues.tx.notify.as_raw_fd(), TOKEN_TX),
            (queues.event.notify.as_raw_fd(), TOKEN_EVENT),
            (muxer.listener().as_raw_fd(), TOKEN_LISTENER),
        ];
        for (fd, token) in sources {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        Ok(Worker {
            epoll,
            memory,
            queues,
            interrupt,
            muxer,
            tx_pending: false,
        })
    }

    /// Unix streams open.
    #[cfg(test)]
    pub fn stream_count(&self) -> usize {
        self.muxer.stream_count()
    }

    /// Serves until stopped.
    pub fn run(mut self) {
        while self.step(None) == Flow::Continue {}
    }

    /// Waits for events (at most `max_wait`, when given, which tests use) and runs one pass.
    pub fn step(&mut self, max_wait: Option<Duration>) -> Flow {
        let mut events = [EpollEvent::default(); 32];
        let ready = match self.epoll.wait(self.timeout_ms(max_wait), &mut events) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            // epoll_wait on a valid epoll fd does not fail otherwise; stop serving.
            Err(_) => return Flow::Stop,
        };
        for event in &events[..ready] {
            match event.data() {
                TOKEN_STOP => return Flow::Stop,
                // Reading resets the counter; the pass below serves whatever is new.
                TOKEN_RX => drop(self.queues.rx.notify.read()),
                TOKEN_TX => drop(self.queues.tx.notify.read()),
                TOKEN_EVENT => drop(self.queues.event.notify.read()),
                TOKEN_LISTENER => self.muxer.accept(&self.epoll),
                token => {
                    let id = token.saturating_sub(TOKEN_STREAM_BASE);
                    self.muxer.stream_event(id, event.events(), &self.epoll);
                }
            }
        }
        self.muxer.expire(Instant::now());
        let mut used = self.process_tx();
        self.muxer.refresh(&self.epoll);
        used |= self.process_rx();
        self.muxer.refresh(&self.epoll);
        if used {
            self.interrupt.signal_used_queue();
        }
        Flow::Continue
    }

    /// Milliseconds epoll may sleep: until the next connect deadline, or forever.
    fn timeout_ms(&self, max_wait: Option<Duration>) -> i32 {
        if self.tx_pending {
            return 0;
        }
        let until_deadline = self
            .muxer
            .next_deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let wait = match (until_deadline, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        epoll_timeout_ms(wait)
    }

    /// Hands every available transmit packet to the muxer; returns whether buffers were used.
    fn process_tx(&mut self) -> bool {
        let memory = &self.memory;
        let queue = &mut self.queues.tx.queue;
        let mut used = false;
        self.tx_pending = false;
        for _ in 0..TX_CHAINS_PER_PASS {
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                return used;
            };
            let head = chain.head_index();
            match TxPacket::parse(memory, chain) {
                Ok(mut packet) => {
                    if self.muxer.handle_guest_packet(&mut packet, &self.epoll)
                        == TxOutcome::Blocked
                    {
                        // Leave it for when its connection has room.
                        queue.go_to_previous_position();
                        return used;
                    }
                }
                Err(error) => self.muxer.handle_bad_packet(&error),
            }
            // Transmit buffers are only read: the used length is 0.
            if queue.add_used(memory, head, 0).is_err() {
                // The used ring is unusable; the driver has to reset the device.
                return used;
            }
            used = true;
        }
        self.tx_pending = true;
        used
    }

    /// Fills receive buffers while the muxer has packets; returns whether buffers were used.
    fn process_rx(&mut self) -> bool {
        let memory = &self.memory;
        let queue = &mut self.queues.rx.queue;
        let mut used = false;
        while self.muxer.has_rx_work() {
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                // No buffers: the guest's next refill notifies TOKEN_RX.
                return used;
            };
            let head = chain.head_index();
            let len = match RxBuffer::new(memory, chain) {
                // Unusable (too small, outside guest memory): returned empty, which the driver
                // discards.
                Err(_) => 0,
                Ok(buffer) => match self.muxer.next_rx_packet(buffer.payload_capacity()) {
                    Some((header, payload)) => buffer.write(&header, payload).unwrap_or(0),
                    None => {
                        queue.go_to_previous_position();
                        return used;
                    }
                },
            };
            if queue.add_used(memory, head, len).is_err() {
                return used;
            }
            used = true;
        }
        used
    }
}

/// epoll_wait's timeout for `wait` (None: forever). Rounded up, so that the worker does not wake
/// just before a deadline and then sleep 0 ms in a loop; a zero wait (a deadline already passed,
/// or a caller polling) stays 0 instead of costing a millisecond.
fn epoll_timeout_ms(wait: Option<Duration>) -> i32 {
    match wait {
        Some(wait) => i32::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
        None => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_timeouts_round_up_but_a_poll_stays_a_poll() {
        assert_eq!(epoll_timeout_ms(None), -1);
        assert_eq!(epoll_timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(epoll_timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(epoll_timeout_ms(Some(Duration::from_millis(1))), 1);
        assert_eq!(epoll_timeout_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(
            epoll_timeout_ms(Some(Duration::from_secs(u64::MAX))),
            i32::MAX
        );
    }
}
