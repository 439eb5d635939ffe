//! The virtio-mmio side of the device manager: where each virtio device sits (its 4 KiB
//! register page and IOAPIC pin) and how it is wired to KVM and the MMIO bus.
//!
//! Device `n` (in `VmConfig::virtio_devices` order) owns the page
//! `VIRTIO_MMIO_START + n * 4 KiB` and IOAPIC pin `FIRST_VIRTIO_IRQ + n` (skipping the CMOS
//! clock's pin). The guest learns about them from `virtio_mmio.device=4K@0xADDR:IRQ` on its
//! command line (the MP table already lists every IOAPIC pin as an ISA interrupt, so the kernel
//! can route these IRQs); the command line and the attachment both take the slots from
//! `VmConfig::virtio_slots`, so they cannot disagree.

use std::sync::{Arc, Mutex};

use kvm_ioctls::IoEventAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::{
    IOAPIC_PINS, VIRTIO_MMIO_DEVICE_SIZE, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START,
};
use crate::devices::bus::Bus;
use crate::devices::virtio::mmio::REG_QUEUE_NOTIFY;
use crate::devices::virtio::{Interrupt, MmioTransport, TransportState, VirtioDevice};
use crate::error::VmmError;
use crate::snapshot::SnapshotError;
use crate::vm::Vm;

/// The first IOAPIC pin handed to virtio devices: 0-4 are the timer, keyboard, cascade and the
/// serial ports' conventional lines, 8 is the CMOS clock; 5, 6, 7 and 9-23 are free. We take
/// 5 upwards and skip 8.
pub const FIRST_VIRTIO_IRQ: u32 = 5;
const CMOS_IRQ: u32 = 8;

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

/// Where a transport's registers start: power-on, or as a snapshot saved them.
pub(crate) enum TransportStart<'a> {
    /// Reset state; the guest's driver sets the device up.
    Boot,
    /// The saved registers of the device in this slot (a restore).
    Restore {
        /// The slot's index, for error messages.
        index: usize,
        /// Its saved registers and ring indexes.
        state: &'a TransportState,
    },
}

/// Puts `device` behind a virtio-mmio register page at `slot` on `bus`: an irqfd on its IOAPIC
/// pin and an ioeventfd per queue on its QueueNotify register. Returns the transport, which the
/// bus holds too.
///
/// Teardown: the bus is dropped before the VM (and its guest memory); dropping a transport
/// stops and joins its device's worker thread.
pub(crate) fn attach(
    vm: &Vm,
    bus: &mut Bus,
    slot: MmioSlot,
    device: Box<dyn VirtioDevice>,
    start: TransportStart<'_>,
) -> Result<Arc<Mutex<MmioTransport>>, VmmError> {
    let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmmError::HostResource {
        what: "create a virtio interrupt eventfd",
        source,
    })?;
    vm.fd
        .register_irqfd(&irqfd, slot.irq)
        .map_err(VmmError::kvm("KVM_IRQFD"))?;
    let interrupt = Arc::new(Interrupt::new(irqfd));
    let memory = vm.ram.memory.clone();
    let transport = match start {
        TransportStart::Boot => {
            MmioTransport::new(device, memory, interrupt).map_err(|source| {
                VmmError::HostResource {
                    what: "create virtio queue notification eventfds",
                    source,
                }
            })?
        }
        TransportStart::Restore { index, state } => {
            MmioTransport::from_state(device, memory, interrupt, state).map_err(|source| {
                SnapshotError::Device {
                    slot: index,
                    source,
                }
            })?
        }
    };
    for (index, notify) in transport.queue_notifiers().iter().enumerate() {
        // Datamatch on the queue index: the driver writes it to QueueNotify, so each queue's
        // notification wakes exactly its own eventfd without a VMM exit.
        vm.fd
            .register_ioevent(
                notify,
                &IoEventAddress::Mmio(slot.addr + REG_QUEUE_NOTIFY),
                index as u32,
            )
            .map_err(VmmError::kvm("KVM_IOEVENTFD"))?;
    }
    let transport = Arc::new(Mutex::new(transport));
    bus.insert(slot.addr, VIRTIO_MMIO_DEVICE_SIZE, transport.clone())?;
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn every_slot_fits_the_window_and_no_two_share_a_page_or_pin() {
        let slots: Vec<MmioSlot> = (0..).map_while(MmioSlot::nth).collect();
        assert_eq!(slots.len(), 18);
        for (n, a) in slots.iter().enumerate() {
            assert!(a.addr >= VIRTIO_MMIO_START);
            assert!(a.addr + VIRTIO_MMIO_DEVICE_SIZE <= VIRTIO_MMIO_START + VIRTIO_MMIO_SIZE);
            assert_ne!(a.irq, CMOS_IRQ);
            assert!(a.irq >= FIRST_VIRTIO_IRQ);
            for b in &slots[n + 1..] {
                assert_ne!(a.addr, b.addr);
                assert_ne!(a.irq, b.irq);
            }
        }
    }
}
