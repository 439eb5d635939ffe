//! Virtio devices over the virtio-mmio transport. What a device is (the [`VirtioDevice`] trait
//! and the queues and interrupt line it is handed) lives in `device.rs`; the transport
//! (`mmio.rs`) knows no device; each device lives in its own folder and implements the trait.
//!
//! Where devices sit (which page, which IOAPIC pin) is decided by the device manager
//! (`crate::device_manager::mmio`, [`MmioSlot`], re-exported here for the configuration), which
//! also creates the devices and attaches them.

pub mod device;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;
pub mod worker_thread;

pub use crate::device_manager::mmio::{MmioSlot, FIRST_VIRTIO_IRQ};
pub use device::{ActivateError, ActiveQueue, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
pub use mmio::{MmioTransport, TransportState};

/// Copies the part of a device's configuration `space` at `offset` into `data`, zero-filled
/// where the driver reads past its end (the transport passes guest-chosen offsets unchecked).
pub fn read_config_space(space: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|offset| offset.checked_add(i))
            .and_then(|at| space.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// The kinds of virtio device a VM can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioKind {
    /// virtio-rng, fed from the host's getrandom.
    Rng,
    /// virtio-fs serving `VmConfig::shares[n]`.
    Fs(usize),
    /// virtio-vsock bridged to `VmConfig::vsock`.
    Vsock,
    /// virtio-net on the tap of `VmConfig::nets[n]`.
    Net(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded_and_zero_filled() {
        let space = [1u8, 2, 3, 4];
        let mut data = [9u8; 3];
        read_config_space(&space, 2, &mut data);
        assert_eq!(data, [3, 4, 0]);
        read_config_space(&space, u64::MAX, &mut data);
        assert_eq!(data, [0, 0, 0]);
    }
}
