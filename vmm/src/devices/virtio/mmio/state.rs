//! Saving and restoring a virtio-mmio transport for snapshots.
//!
//! Snapshots are taken only while every device is idle (see `crate::snapshot`), so what is kept
//! is the driver-visible register state (status, features, each queue's size and ring
//! addresses, interrupt status, config generation) plus, per queue, the ring indexes as they
//! stand in guest memory once the device's worker has stopped. A device's own state (its
//! worker, the muxer, the FUSE session) is not kept: it is created afresh on restore, which is
//! right only because the snapshot module refused any device that had used it.
//!
//! A state read back from a file is untrusted: queue sizes and ring addresses are checked as
//! the driver's own writes are (virtio-queue's `try_from` and `is_valid`), features against
//! what the device offers, and the queue count against the device.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{
    Interrupt, MmioTransport, VirtioDevice, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
};
use crate::memory::GuestMemory;

/// One queue as the driver set it up, and where its rings stood.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// The size the driver chose.
    pub size: u16,
    /// The driver set QueueReady.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Guest address of the available ring.
    pub avail_ring: u64,
    /// Guest address of the used ring.
    pub used_ring: u64,
    /// The available ring's `idx` (how many chains the driver has offered, mod 2^16); 0 for a
    /// queue that is not ready.
    pub avail_idx: u16,
    /// The used ring's `idx` (how many chains the device has returned); with the worker
    /// stopped it is also how many it has taken.
    pub used_idx: u16,
}

/// The transport's registers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// The virtio device ID behind the transport (checked against the device on restore).
    pub device_type: u32,
    /// Device status register.
    pub status: u32,
    /// The features the driver accepted.
    pub driver_features: u64,
    /// Selector registers.
    pub device_features_sel: u32,
    /// Selector registers.
    pub driver_features_sel: u32,
    /// Selected queue.
    pub queue_sel: u32,
    /// Config generation counter.
    pub config_generation: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// The device was activated (DRIVER_OK reached and accepted).
    pub activated: bool,
    /// One entry per device queue.
    pub queues: Vec<QueueSnapshot>,
}

/// A saved transport that cannot be restored in front of this device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportRestoreError {
    /// Another device type.
    #[error("the snapshot has virtio device type {saved} in this slot, the VM has {actual}")]
    DeviceType {
        /// In the file.
        saved: u32,
        /// Configured now.
        actual: u32,
    },
    /// Another number of queues.
    #[error("the snapshot has {saved} queues for this device, it has {actual}")]
    QueueCount {
        /// In the file.
        saved: usize,
        /// The device's.
        actual: usize,
    },
    /// A queue the file describes is impossible.
    #[error("queue {0}: size or ring addresses are invalid for this VM's memory")]
    BadQueue(usize),
    /// Features the device does not offer.
    #[error("negotiated features {0:#x} are not all offered by the device")]
    Features(u64),
    /// The device refused to start with the restored queues.
    #[error("the device could not be started again with its restored queues")]
    Activation,
}

fn ring_index(memory: &GuestMemory, ring: u64) -> u16 {
    // Both rings start with `le16 flags; le16 idx`. A ring outside memory (impossible for a
    // ready queue, whose rings were validated) reads as 0.
    ring.checked_add(2)
        .and_then(|at| memory.read_obj::<u16>(GuestAddress(at)).ok())
        .map(u16::from_le)
        .unwrap_or(0)
}

impl MmioTransport {
    /// Stops the device's worker (so that nothing touches guest memory any more) and returns
    /// the transport's state. The device is unusable afterwards: this is for a VM that is
    /// being saved and then discarded.
    pub fn quiesce_and_save(&mut self) -> TransportState {
        if self.activated {
            // Stops and joins the worker; the registers below are left as the driver set them.
            self.device.reset();
        }
        let queues = self
            .queues
            .iter()
            .map(|q| {
                let ready = q.ready();
                QueueSnapshot {
                    size: q.size(),
                    ready,
                    desc_table: q.desc_table(),
                    avail_ring: q.avail_ring(),
                    used_ring: q.used_ring(),
                    avail_idx: if ready {
                        ring_index(&self.memory, q.avail_ring())
                    } else {
                        0
                    },
                    used_idx: if ready {
                        ring_index(&self.memory, q.used_ring())
                    } else {
                        0
                    },
                }
            })
            .collect();
        let state = TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            driver_features: self.driver_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            activated: self.activated,
            queues,
        };
        // The device's worker is gone; Drop must not reset it again.
        self.activated = false;
        state
    }

    /// A transport in front of a fresh `device` with the registers of `state`; an activated
    /// device is started again with its queues continuing where the rings stood.
    pub fn from_state(
        device: Box<dyn VirtioDevice>,
        memory: GuestMemory,
        interrupt: Arc<Interrupt>,
        state: &TransportState,
    ) -> Result<Self, TransportRestoreError> {
        let mut transport = MmioTransport::new(device, memory, interrupt)
            .map_err(|_| TransportRestoreError::Activation)?;
        let actual = transport.device.device_type();
        if state.device_type != actual {
            return Err(TransportRestoreError::DeviceType {
                saved: state.device_type,
                actual,
            });
        }
        if state.queues.len() != transport.queues.len() {
            return Err(TransportRestoreError::QueueCount {
                saved: state.queues.len(),
                actual: transport.queues.len(),
            });
        }
        for (index, (queue, saved)) in transport.queues.iter_mut().zip(&state.queues).enumerate() {
            let restored = Queue::try_from(QueueState {
                max_size: queue.max_size(),
                next_avail: saved.used_idx,
                next_used: saved.used_idx,
                event_idx_enabled: false,
                size: saved.size,
                ready: saved.ready,
                desc_table: saved.desc_table,
                avail_ring: saved.avail_ring,
                used_ring: saved.used_ring,
            })
            .map_err(|_| TransportRestoreError::BadQueue(index))?;
            if restored.ready() && !restored.is_valid(&transport.memory) {
                return Err(TransportRestoreError::BadQueue(index));
            }
            *queue = restored;
        }
        transport.status = state.status;
        transport.driver_features = state.driver_features;
        transport.device_features_sel = state.device_features_sel;
        transport.driver_features_sel = state.driver_features_sel;
        transport.queue_sel = state.queue_sel;
        transport.config_generation = state.config_generation;
        if state.status & STATUS_FEATURES_OK != 0 && !transport.features_acceptable() {
            return Err(TransportRestoreError::Features(state.driver_features));
        }
        transport.interrupt.restore_status(state.interrupt_status);
        let runnable = STATUS_DRIVER_OK | STATUS_FEATURES_OK;
        if state.activated
            && state.status & runnable == runnable
            && state.status & (STATUS_FAILED | STATUS_NEEDS_RESET) == 0
        {
            transport.activate();
            if !transport.activated {
                return Err(TransportRestoreError::Activation);
            }
            // A chain the driver offered and notified just before the snapshot, which the old
            // worker had not taken yet, waits for a notification that will never come again:
            // notify every queue once (a device with nothing to do just goes back to sleep).
            for notify in &transport.notifiers {
                let _ = notify.write(1);
            }
        }
        Ok(transport)
    }
}
