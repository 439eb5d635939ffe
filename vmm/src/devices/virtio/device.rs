//! What a virtio device is, independent of how the guest reaches it: the [`VirtioDevice`] trait
//! a transport drives, the queues and interrupt line it hands a device on activation, and the
//! error a device may refuse activation with.
//!
//! Kept apart from the transport (`mmio.rs`) so that a device depends on this interface only,
//! never on the register layout of the transport in front of it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use thiserror::Error;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// InterruptStatus bit: used buffers are waiting.
pub(super) const INT_USED_RING: u32 = 1;
/// InterruptStatus bit: the device configuration space changed.
const INT_CONFIG_CHANGE: u32 = 2;
/// Every InterruptStatus bit the virtio 1.x spec defines.
const INT_ALL: u32 = INT_USED_RING | INT_CONFIG_CHANGE;

/// Feature bit every modern device offers and every driver must accept.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// A device could not start with the queues the driver set up.
#[derive(Debug, Error)]
pub enum ActivateError {
    /// The device needs a queue the driver did not make ready.
    #[error("queue {0} was not set up by the driver")]
    QueueMissing(usize),
    /// The worker thread or its epoll could not be created.
    #[error("cannot start the device worker: {0}")]
    Worker(#[from] std::io::Error),
}

/// The device's interrupt line: the InterruptStatus register plus the irqfd KVM injects from.
/// Shared between the transport (which reads and acknowledges it) and the device's worker.
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// An interrupt line that signals `irqfd` (registered with KVM_IRQFD by the caller).
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    /// Tells the driver that used buffers are waiting.
    pub fn signal_used_queue(&self) {
        self.signal(INT_USED_RING);
    }

    /// Tells the driver that the configuration space changed (the transport does this when
    /// it must ask the driver for a reset).
    pub(super) fn signal_config_change(&self) {
        self.signal(INT_CONFIG_CHANGE);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::AcqRel);
        // A full eventfd counter (2^64 - 2 pending writes) still means "interrupt pending".
        let _ = self.irqfd.write(1);
    }

    /// The InterruptStatus register.
    pub(super) fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// InterruptACK: the driver handled `bits`.
    pub(super) fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Device reset: nothing is pending any more.
    pub(super) fn clear(&self) {
        self.status.store(0, Ordering::Release);
    }

    /// Puts back a saved InterruptStatus; bits the spec does not define are dropped (the value
    /// comes from a snapshot file, which is untrusted).
    pub(super) fn restore_status(&self, bits: u32) {
        self.status.store(bits & INT_ALL, Ordering::Release);
    }
}

/// A queue the driver made ready, handed to the device on activation, with the eventfd that
/// fires when the driver notifies it.
pub struct ActiveQueue {
    /// The validated queue.
    pub queue: Queue,
    /// Signalled on every QueueNotify for this queue.
    pub notify: EventFd,
}

/// What a virtio device provides to the transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (e.g. 4 for an entropy source).
    fn device_type(&self) -> u32;
    /// The feature bits offered, including [`VIRTIO_F_VERSION_1`].
    fn features(&self) -> u64;
    /// The largest size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device configuration space at `offset` (zero-filled past its end).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (devices with a read-only space ignore it).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device: the driver set DRIVER_OK with `features` negotiated.
    fn activate(
        &mut self,
        memory: GuestMemory,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError>;
    /// Stops the device and drops every queue (the driver wrote 0 to Status). Must not return
    /// before the device has stopped touching guest memory.
    fn reset(&mut self);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> (Interrupt, EventFd) {
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let observer = irqfd.try_clone().unwrap();
        (Interrupt::new(irqfd), observer)
    }

    #[test]
    fn signals_set_status_bits_and_write_the_irqfd() {
        let (interrupt, irqfd) = line();
        interrupt.signal_used_queue();
        assert_eq!(interrupt.status(), INT_USED_RING);
        interrupt.signal_config_change();
        assert_eq!(interrupt.status(), INT_ALL);
        assert_eq!(irqfd.read().unwrap(), 2);
        interrupt.acknowledge(INT_USED_RING);
        assert_eq!(interrupt.status(), INT_CONFIG_CHANGE);
        interrupt.clear();
        assert_eq!(interrupt.status(), 0);
    }

    #[test]
    fn restored_status_keeps_only_defined_bits() {
        let (interrupt, irqfd) = line();
        interrupt.restore_status(u32::MAX);
        assert_eq!(interrupt.status(), INT_ALL);
        // Restoring is not a new interrupt: the irqfd stays quiet.
        assert!(irqfd.read().is_err());
    }
}
