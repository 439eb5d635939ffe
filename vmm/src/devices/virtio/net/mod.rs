//! virtio-net (device ID 1, spec 5.1): the guest's Ethernet NIC, backed by an existing tap
//! device on the host.
//!
//! - Queues: receive (0) and transmit (1); no control queue, one queue pair.
//! - Features: VERSION_1, MAC (the configuration space holds the guest's address), MTU (the
//!   tap's MTU when the device is created: the guest's eth0 takes it over), indirect
//!   descriptors, notification suppression (EVENT_IDX), and the checksum and TCP segmentation
//!   offloads in both directions (CSUM/HOST_TSO4/HOST_TSO6/HOST_ECN for guest frames,
//!   GUEST_CSUM/GUEST_TSO4/GUEST_TSO6/GUEST_ECN for frames to the guest). Offloads pass through unchanged: the tap speaks the
//!   same virtio-net header, is told (TUNSETOFFLOAD) exactly which guest offloads the driver
//!   accepted, and every header is checked against the negotiated set in both directions.
//!   Mergeable receive buffers (MRG_RXBUF): a large frame spans several page-sized buffers.
//!   Without them a driver that takes guest TSO has to post 64 KiB per receive buffer (Linux:
//!   about 17 MiB for a 256-entry ring), a lot for a 128 MiB pod.
//!
//! Modules: `mac` is the address type, `tap` attaches to the tap, `frame` checks and copies
//! frames between descriptor chains and buffers, `worker` is the thread that moves them.
//!
//! Who makes the tap: not the VMM. The caller creates it in the network namespace the VMM runs
//! in (`ip tuntap add dev NAME mode tap`, or TUNSETIFF + TUNSETPERSIST), connects it to the
//! network and brings it up; the VMM attaches by name and never changes its addresses or
//! state. See the vmm README for the pod wiring.

mod frame;
mod mac;
pub mod seccomp;
mod tap;
mod worker;

use std::sync::Arc;

use thiserror::Error;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::QueueT;

pub use frame::{FrameError, Offloads, MAX_FRAME_LEN, VNET_HEADER_LEN};
pub use mac::{MacAddr, MacAddrError};
pub use tap::{Tap, TapError, MAX_TAP_NAME_LEN};
pub use worker::NetCounters;

/// Hook for the fuzz targets in `fuzz/` (not an API of the VMM): the checks and copies the
/// worker applies to every transmit and receive chain (the worker itself needs a tap).
#[doc(hidden)]
pub mod fuzzing {
    pub use super::frame::{read_tx_frame, rx_chain_room, write_rx_frame};
}

use super::device::{ActivateError, ActiveQueue, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use super::read_config_space;
use super::worker_thread::WorkerThread;
use crate::memory::GuestMemory;
use worker::{Queues, Worker};

/// The virtio device ID of a network card.
pub const VIRTIO_ID_NET: u32 = 1;
/// Largest size of each queue.
const QUEUE_SIZE: u16 = 256;
/// The smallest MTU IPv4 works with (RFC 791).
const MIN_MTU: u16 = 68;

/// The feature bits we offer.
pub const OFFERED_FEATURES: u64 = VIRTIO_F_VERSION_1
    | 1 << VIRTIO_RING_F_INDIRECT_DESC
    | 1 << VIRTIO_RING_F_EVENT_IDX
    | 1 << VIRTIO_NET_F_MAC
    | 1 << VIRTIO_NET_F_MTU
    | 1 << VIRTIO_NET_F_MRG_RXBUF
    | 1 << VIRTIO_NET_F_CSUM
    | 1 << VIRTIO_NET_F_HOST_TSO4
    | 1 << VIRTIO_NET_F_HOST_TSO6
    | 1 << VIRTIO_NET_F_HOST_ECN
    | 1 << VIRTIO_NET_F_GUEST_CSUM
    | 1 << VIRTIO_NET_F_GUEST_TSO4
    | 1 << VIRTIO_NET_F_GUEST_TSO6
    | 1 << VIRTIO_NET_F_GUEST_ECN;

/// One NIC of a VM: the host tap it is attached to and the guest's address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// The existing tap device, by name, in the VMM's network namespace.
    pub tap_name: String,
    /// The guest's Ethernet address (what `ip link` shows for eth0 in the guest).
    pub mac: MacAddr,
}

impl NetConfig {
    /// A NIC on `tap_name` with a random locally administered address.
    pub fn new(tap_name: &str) -> NetConfig {
        NetConfig {
            tap_name: tap_name.to_string(),
            mac: MacAddr::random_local(),
        }
    }
}

/// The network device could not be created.
#[derive(Debug, Error)]
pub enum NetError {
    /// The tap could not be attached.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The configured address is multicast.
    #[error("guest MAC address {0} is multicast: a NIC needs a unicast address (even first byte)")]
    MulticastMac(MacAddr),
}

/// The network device; attached to its tap from `new` until it is dropped.
pub struct Net {
    mac: MacAddr,
    mtu: u16,
    tap: Arc<Tap>,
    counters: Arc<NetCounters>,
    worker: Option<WorkerThread>,
}

impl Net {
    /// Attaches to the tap named in `config` (in the calling thread's network namespace).
    pub fn new(config: &NetConfig) -> Result<Net, NetError> {
        if config.mac.is_multicast() {
            return Err(NetError::MulticastMac(config.mac));
        }
        let tap = Tap::open(&config.tap_name, VNET_HEADER_LEN)?;
        // Below IPv4's minimum the guest could not use the link at all.
        let mtu = tap.mtu()?.max(MIN_MTU);
        Ok(Net {
            mac: config.mac,
            mtu,
            tap: Arc::new(tap),
            counters: Arc::new(NetCounters::default()),
            worker: None,
        })
    }

    /// The device's frame and drop counters (they survive resets).
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        OFFERED_FEATURES
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2]
    }

    /// The configuration space: `u8 mac[6]`, `le16 status`, `le16 max_virtqueue_pairs`,
    /// `le16 mtu`; status and queue pairs belong to features we do not offer and read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut space = [0u8; 12];
        space[..6].copy_from_slice(&self.mac.0);
        space[10..].copy_from_slice(&self.mtu.to_le_bytes());
        read_config_space(&space, offset, data);
    }

    /// Writing the MAC is legacy-only (spec 5.1.4.2); the space is read-only for us.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        memory: GuestMemory,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        self.reset();
        let count = queues.len();
        let mut queues = queues.into_iter();
        let (Some(mut rx), Some(mut tx)) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueMissing(count));
        };
        let event_idx = features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        rx.queue.set_event_idx(event_idx);
        tx.queue.set_event_idx(event_idx);
        let offloads = Offloads::from_features(features);
        // The tap must not hand the guest frames with offloads its driver refused.
        self.tap
            .set_offloads(offloads.tun_flags())
            .map_err(|e| ActivateError::Worker(std::io::Error::other(e)))?;
        let stop = WorkerThread::stop_event()?;
        let worker = Worker::new(
            memory,
            Queues { rx, tx },
            interrupt,
            self.tap.clone(),
            offloads,
            self.counters.clone(),
            &stop,
        )?;
        self.worker = Some(WorkerThread::start(
            crate::sandbox::ThreadKind::Net,
            stop,
            move || worker.run(),
        )?);
        Ok(())
    }

    /// Stops the worker. Frames the tap receives meanwhile wait in its queue (the host kernel
    /// drops the oldest when it is full), as on a NIC whose driver is reloading.
    fn reset(&mut self) {
        // Dropping the worker stops and joins it.
        self.worker = None;
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.reset();
    }
}

#[cfg(test)]
mod tests;
