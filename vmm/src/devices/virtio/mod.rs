//! Virtio devices over the virtio-mmio transport. The transport (`mmio.rs`) knows no device;
//! each device lives in its own folder and implements [`VirtioDevice`].
//!
//! Where devices sit: device `n` (in the order the builder creates them) owns the 4 KiB page
//! `VIRTIO_MMIO_START + n * 4 KiB` and IOAPIC pin `FIRST_VIRTIO_IRQ + n`. The guest learns about
//! them from `virtio_mmio.device=4K@0xADDR:IRQ` on its command line (the MP table already lists
//! every IOAPIC pin as an ISA interrupt, so the kernel can route these IRQs).

pub mod fs;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;
pub mod worker_thread;

pub use mmio::{
    ActivateError, ActiveQueue, Interrupt, MmioTransport, TransportState, VirtioDevice,
};

use crate::arch::x86_64::layout::{
    IOAPIC_PINS, VIRTIO_MMIO_DEVICE_SIZE, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START,
};

/// The first IOAPIC pin handed to virtio devices: 0-4 are the timer, keyboard, cascade and the
/// serial ports' conventional lines, 8 is the CMOS clock; 5, 6, 7 and 9-23 are free. We take
/// 5 upwards and skip 8.
pub const FIRST_VIRTIO_IRQ: u32 = 5;
const CMOS_IRQ: u32 = 8;

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

/// Where one virtio-mmio device sits in guest-physical space and which IOAPIC pin it raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    /// Base of its 4 KiB register page.
    pub addr: u64,
    /// Its IOAPIC pin (= GSI = ISA IRQ number in the MP table).
    pub irq: u32,
}

impl MmioSlot {
    /// The slot of the `index`-th device, or None when the window or the IOAPIC is full.
    pub fn nth(index: usize) -> Option<MmioSlot> {
        let index_u64 = u64::try_from(index).ok()?;
        let offset = index_u64.checked_mul(VIRTIO_MMIO_DEVICE_SIZE)?;
        if offset >= VIRTIO_MMIO_SIZE {
            return None;
        }
        let mut irq = FIRST_VIRTIO_IRQ + u32::try_from(index).ok()?;
        if irq >= CMOS_IRQ {
            irq += 1;
        }
        if irq >= u32::from(IOAPIC_PINS) {
            return None;
        }
        Some(MmioSlot {
            addr: VIRTIO_MMIO_START + offset,
            irq,
        })
    }

    /// The kernel command-line parameter declaring this device (Linux's
    /// `virtio_mmio.device=<size>@<base>:<irq>`).
    pub fn cmdline_param(&self) -> String {
        format!("virtio_mmio.device=4K@{:#x}:{}", self.addr, self.irq)
    }
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

    #[test]
    fn slots_skip_the_cmos_irq_and_stop_at_the_ioapic() {
        assert_eq!(
            MmioSlot::nth(0),
            Some(MmioSlot {
                addr: 0xd000_0000,
                irq: 5
            })
        );
        assert_eq!(MmioSlot::nth(2).map(|s| s.irq), Some(7));
        assert_eq!(MmioSlot::nth(3).map(|s| s.irq), Some(9));
        assert_eq!(MmioSlot::nth(3).map(|s| s.addr), Some(0xd000_3000));
        assert_eq!(MmioSlot::nth(17).map(|s| s.irq), Some(23));
        assert_eq!(MmioSlot::nth(18), None);
        assert_eq!(
            MmioSlot::nth(1).unwrap().cmdline_param(),
            "virtio_mmio.device=4K@0xd0001000:6"
        );
    }
}
