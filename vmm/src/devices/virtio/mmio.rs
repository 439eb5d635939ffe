//! The virtio-mmio transport, register layout version 2 (virtio 1.x spec, section 4.2.2): the
//! 4 KiB register page through which a guest driver negotiates features, sets up queues and
//! drives the device status. It knows no device; devices implement [`VirtioDevice`] (`device.rs`).
//!
//! The guest is untrusted: every register write is checked against the status state machine,
//! queue sizes and ring addresses are validated (virtio-queue's `try_set_size` and `is_valid`)
//! before a device sees a queue, and a driver that breaks the protocol gets DEVICE_NEEDS_RESET
//! instead of a device in an undefined state.
//!
//! Notifications: each queue has an eventfd that KVM signals directly (an ioeventfd on the
//! QueueNotify address matching the queue index), so the device's worker wakes without a VMM
//! exit. A QueueNotify write that does reach us (no ioeventfd registered, e.g. in unit tests)
//! signals the same eventfd. Interrupts: [`Interrupt`] sets the InterruptStatus bit and writes
//! the device's irqfd, which KVM turns into an edge on the device's IOAPIC pin.

mod state;

pub use state::{QueueSnapshot, TransportRestoreError, TransportState};

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::device::{ActiveQueue, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::bus::{BusAction, BusDevice};
use crate::memory::GuestMemory;

/// "virt" in little-endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
/// Register layout version 2: the virtio 1.x ("modern") interface.
const MMIO_VERSION: u32 = 2;
/// Our vendor ID ("RKT\0"): drivers do not match on it.
const VENDOR_ID: u32 = 0x0054_4b52;

// Register offsets (spec 4.2.2, table "MMIO Device Register Layout").
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
/// QueueNotify: the address the ioeventfds are registered on.
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
/// Device-specific configuration space starts here.
const CONFIG_SPACE: u64 = 0x100;

// Device status bits (spec 2.1).
#[cfg(test)]
const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 0x40;
const STATUS_FAILED: u32 = 0x80;

/// One virtio-mmio register page in front of a device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    memory: GuestMemory,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    notifiers: Vec<EventFd>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    /// Puts `device` behind a register page; `interrupt` carries its irqfd.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        memory: GuestMemory,
        interrupt: Arc<Interrupt>,
    ) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut notifiers = Vec::new();
        for &max in device.queue_max_sizes() {
            // A device advertising an invalid maximum is a VMM bug; clamp to a valid size
            // rather than failing the VM.
            let queue = Queue::new(max).or_else(|_| Queue::new(256)).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad queue size")
            })?;
            queues.push(queue);
            notifiers.push(EventFd::new(libc::EFD_NONBLOCK)?);
        }
        Ok(MmioTransport {
            device,
            memory,
            interrupt,
            queues,
            notifiers,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
            activated: false,
        })
    }

    /// The per-queue notification eventfds, in queue order, for KVM_IOEVENTFD registration
    /// at `base + REG_QUEUE_NOTIFY` with the queue index as datamatch.
    pub fn queue_notifiers(&self) -> &[EventFd] {
        &self.notifiers
    }

    /// The device status register (for tests and diagnostics).
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may only change after feature negotiation and before DRIVER_OK, and
    /// only while the selected queue is not ready (spec 4.2.3.2).
    fn queue_writable(&self) -> bool {
        self.status & STATUS_FEATURES_OK != 0
            && self.status & (STATUS_DRIVER_OK | STATUS_FAILED) == 0
            && self
                .queues
                .get(self.queue_sel as usize)
                .is_some_and(|q| !q.ready())
    }

    /// The driver broke the protocol: tell it to reset us.
    fn needs_reset(&mut self) {
        if self.status & STATUS_NEEDS_RESET == 0 {
            self.status |= STATUS_NEEDS_RESET;
            // The driver is told through a configuration-change interrupt (spec 2.1.2).
            if self.status & STATUS_DRIVER_OK != 0 {
                self.interrupt.signal_config_change();
            }
        }
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            // Write-only and unknown registers read as zero.
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES => self.write_driver_features(value),
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM if self.queue_writable() => self.write_queue_size(value),
            REG_QUEUE_READY => self.write_queue_ready(value),
            REG_QUEUE_NOTIFY => {
                if let Some(fd) = self.notifiers.get(value as usize) {
                    let _ = fd.write(1);
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.acknowledge(value),
            REG_STATUS => self.write_status(value),
            REG_QUEUE_DESC_LOW..=REG_QUEUE_DEVICE_HIGH => self.write_queue_address(offset, value),
            // Read-only and unknown registers ignore writes.
            _ => {}
        }
    }

    /// A size that is zero, not a power of two or above the maximum breaks the protocol.
    fn write_queue_size(&mut self, value: u32) {
        let bad = self.selected_queue().is_some_and(|q| {
            u16::try_from(value).map_or(true, |size| q.try_set_size(size).is_err())
        });
        if bad {
            self.needs_reset();
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        // Features are only negotiable between DRIVER and FEATURES_OK.
        if self.status & STATUS_DRIVER == 0 || self.status & STATUS_FEATURES_OK != 0 {
            return;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            _ => {}
        }
    }

    fn write_queue_address(&mut self, offset: u64, value: u32) {
        if !self.queue_writable() {
            return;
        }
        let Some(queue) = self.selected_queue() else {
            return;
        };
        // These setters only record the halves; the addresses are validated against guest
        // memory when the driver sets QueueReady.
        match offset {
            REG_QUEUE_DESC_LOW => queue.set_desc_table_address(Some(value), None),
            REG_QUEUE_DESC_HIGH => queue.set_desc_table_address(None, Some(value)),
            REG_QUEUE_DRIVER_LOW => queue.set_avail_ring_address(Some(value), None),
            REG_QUEUE_DRIVER_HIGH => queue.set_avail_ring_address(None, Some(value)),
            REG_QUEUE_DEVICE_LOW => queue.set_used_ring_address(Some(value), None),
            REG_QUEUE_DEVICE_HIGH => queue.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let status = self.status;
        let memory = self.memory.clone();
        let Some(queue) = self.queues.get_mut(self.queue_sel as usize) else {
            return;
        };
        if status & STATUS_FEATURES_OK == 0 || status & (STATUS_DRIVER_OK | STATUS_FAILED) != 0 {
            return;
        }
        match value {
            0 => queue.set_ready(false),
            1 => {
                queue.set_ready(true);
                // Size, alignment and "every ring inside guest RAM" in one check.
                if !queue.is_valid(&memory) {
                    queue.set_ready(false);
                    self.needs_reset();
                }
            }
            _ => self.needs_reset(),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // The driver only ever adds bits (spec 3.1.1); clearing one without a reset is a
        // protocol violation. NEEDS_RESET is ours to set, not the driver's.
        let value = value & !STATUS_NEEDS_RESET;
        if value & old & !STATUS_NEEDS_RESET != old & !STATUS_NEEDS_RESET {
            self.needs_reset();
            return;
        }
        let added = value & !old;
        let mut new = old | added;
        if added & STATUS_FEATURES_OK != 0 && !self.features_acceptable() {
            // Refuse: the driver reads Status back, sees FEATURES_OK missing and gives up.
            new &= !STATUS_FEATURES_OK;
        }
        if added & STATUS_DRIVER_OK != 0 && new & STATUS_FEATURES_OK == 0 {
            self.needs_reset();
            return;
        }
        self.status = new | (old & STATUS_NEEDS_RESET);
        if added & STATUS_DRIVER_OK != 0 && new & STATUS_DRIVER_OK != 0 {
            self.activate();
        }
    }

    /// The driver accepted only offered features, and the modern interface.
    fn features_acceptable(&self) -> bool {
        let offered = self.device.features();
        self.driver_features & !offered == 0 && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    fn activate(&mut self) {
        if self.activated {
            return;
        }
        let mut active = Vec::with_capacity(self.queues.len());
        for (queue, notify) in self.queues.iter().zip(&self.notifiers) {
            if !queue.ready() {
                continue;
            }
            // The device gets its own copy of the validated queue; ours only answers register
            // reads until the next reset.
            let copy = Queue::try_from(queue.state());
            match (copy, notify.try_clone()) {
                (Ok(queue), Ok(notify)) => active.push(ActiveQueue { queue, notify }),
                _ => {
                    self.needs_reset();
                    return;
                }
            }
        }
        match self.device.activate(
            self.memory.clone(),
            self.driver_features,
            active,
            self.interrupt.clone(),
        ) {
            Ok(()) => self.activated = true,
            Err(_) => self.needs_reset(),
        }
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
            self.activated = false;
        }
        for queue in &mut self.queues {
            queue.reset();
        }
        // Drain notifications left over from before the reset.
        for fd in &self.notifiers {
            let _ = fd.read();
        }
        self.interrupt.clear();
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.config_generation = self.config_generation.wrapping_add(1);
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
        } else if data.len() == 4 && offset.is_multiple_of(4) {
            // Registers are 32-bit and must be accessed as such (spec 4.2.2.2).
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        if offset >= CONFIG_SPACE {
            self.device.write_config(offset - CONFIG_SPACE, data);
        } else if let (Ok(bytes), true) = (<[u8; 4]>::try_from(data), offset.is_multiple_of(4)) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        }
        BusAction::Continue
    }
}

impl Drop for MmioTransport {
    /// Stops the device's worker before guest memory can go away.
    fn drop(&mut self) {
        if self.activated {
            self.device.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use vm_memory::GuestAddress;

    use super::*;
    use crate::devices::virtio::device::{ActivateError, INT_USED_RING};

    const FAKE_FEATURE: u64 = 1 << 3;

    #[derive(Default)]
    struct Record {
        activated: Vec<(u64, usize)>,
        resets: usize,
        config: Vec<u8>,
    }

    /// A device with two queues (max 16 and 8) and an 8-byte config space.
    struct FakeDevice(Arc<Mutex<Record>>);

    impl VirtioDevice for FakeDevice {
        fn device_type(&self) -> u32 {
            42
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | FAKE_FEATURE
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let rec = self.0.lock().unwrap();
            for (i, b) in data.iter_mut().enumerate() {
                *b = rec.config.get(offset as usize + i).copied().unwrap_or(0);
            }
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            let mut rec = self.0.lock().unwrap();
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = rec.config.get_mut(offset as usize + i) {
                    *slot = *b;
                }
            }
        }
        fn activate(
            &mut self,
            _memory: GuestMemory,
            features: u64,
            queues: Vec<ActiveQueue>,
            _interrupt: Arc<Interrupt>,
        ) -> Result<(), ActivateError> {
            self.0
                .lock()
                .unwrap()
                .activated
                .push((features, queues.len()));
            Ok(())
        }
        fn reset(&mut self) {
            self.0.lock().unwrap().resets += 1;
        }
    }

    const MEM_SIZE: usize = 0x10_0000;

    fn transport() -> (MmioTransport, Arc<Mutex<Record>>) {
        let memory = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let record = Arc::new(Mutex::new(Record {
            config: (1..=8).collect(),
            ..Default::default()
        }));
        let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let t =
            MmioTransport::new(Box::new(FakeDevice(record.clone())), memory, interrupt).unwrap();
        (t, record)
    }

    fn read(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    /// ACKNOWLEDGE, DRIVER, the given features, then FEATURES_OK; returns the status read back.
    fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
        write(t, REG_STATUS, STATUS_ACKNOWLEDGE);
        write(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        write(t, REG_DRIVER_FEATURES_SEL, 0);
        write(t, REG_DRIVER_FEATURES, features as u32);
        write(t, REG_DRIVER_FEATURES_SEL, 1);
        write(t, REG_DRIVER_FEATURES, (features >> 32) as u32);
        write(
            t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        read(t, REG_STATUS)
    }

    fn setup_queue(t: &mut MmioTransport, index: u32, size: u32, base: u64) {
        write(t, REG_QUEUE_SEL, index);
        write(t, REG_QUEUE_NUM, size);
        write(t, REG_QUEUE_DESC_LOW, base as u32);
        write(t, REG_QUEUE_DESC_HIGH, (base >> 32) as u32);
        let driver = base.wrapping_add(0x1000);
        write(t, REG_QUEUE_DRIVER_LOW, driver as u32);
        write(t, REG_QUEUE_DRIVER_HIGH, (driver >> 32) as u32);
        let device = base.wrapping_add(0x2000);
        write(t, REG_QUEUE_DEVICE_LOW, device as u32);
        write(t, REG_QUEUE_DEVICE_HIGH, (device >> 32) as u32);
        write(t, REG_QUEUE_READY, 1);
    }

    const ALL_OK: u32 = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;

    #[test]
    fn identification_registers() {
        let (mut t, _) = transport();
        assert_eq!(read(&mut t, REG_MAGIC), 0x7472_6976);
        assert_eq!(read(&mut t, REG_VERSION), 2);
        assert_eq!(read(&mut t, REG_DEVICE_ID), 42);
        assert_eq!(read(&mut t, REG_VENDOR_ID), VENDOR_ID);
        write(&mut t, REG_DEVICE_FEATURES_SEL, 0);
        assert_eq!(read(&mut t, REG_DEVICE_FEATURES), FAKE_FEATURE as u32);
        write(&mut t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(&mut t, REG_DEVICE_FEATURES), 1);
        write(&mut t, REG_DEVICE_FEATURES_SEL, 7);
        assert_eq!(read(&mut t, REG_DEVICE_FEATURES), 0);
        write(&mut t, REG_QUEUE_SEL, 1);
        assert_eq!(read(&mut t, REG_QUEUE_NUM_MAX), 8);
        write(&mut t, REG_QUEUE_SEL, 2);
        assert_eq!(read(&mut t, REG_QUEUE_NUM_MAX), 0);
    }

    #[test]
    fn negotiation_and_activation() {
        let (mut t, rec) = transport();
        let status = negotiate(&mut t, VIRTIO_F_VERSION_1 | FAKE_FEATURE);
        assert_ne!(status & STATUS_FEATURES_OK, 0);
        setup_queue(&mut t, 0, 16, 0x1_0000);
        assert_eq!(read(&mut t, REG_QUEUE_READY), 1);
        write(&mut t, REG_STATUS, ALL_OK);
        assert_eq!(read(&mut t, REG_STATUS), ALL_OK);
        assert_eq!(
            rec.lock().unwrap().activated,
            vec![(VIRTIO_F_VERSION_1 | FAKE_FEATURE, 1)]
        );
        // Features cannot change after FEATURES_OK.
        write(&mut t, REG_DRIVER_FEATURES_SEL, 0);
        write(&mut t, REG_DRIVER_FEATURES, 0);
        assert_eq!(t.driver_features, VIRTIO_F_VERSION_1 | FAKE_FEATURE);
    }

    #[test]
    fn features_ok_is_refused_for_unoffered_or_legacy_features() {
        let (mut t, rec) = transport();
        let status = negotiate(&mut t, VIRTIO_F_VERSION_1 | (1 << 5));
        assert_eq!(status & STATUS_FEATURES_OK, 0);
        let (mut t, _) = transport();
        let status = negotiate(&mut t, FAKE_FEATURE);
        assert_eq!(status & STATUS_FEATURES_OK, 0);
        // DRIVER_OK without FEATURES_OK is a protocol violation.
        write(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
        );
        assert_ne!(read(&mut t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
        assert!(rec.lock().unwrap().activated.is_empty());
    }

    #[test]
    fn queue_setup_before_features_ok_is_ignored() {
        let (mut t, _) = transport();
        write(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        setup_queue(&mut t, 0, 16, 0x1_0000);
        assert_eq!(read(&mut t, REG_QUEUE_READY), 0);
    }

    #[test]
    fn bad_queue_sizes_need_reset() {
        for size in [0, 3, 32, 0x1_0010] {
            let (mut t, _) = transport();
            negotiate(&mut t, VIRTIO_F_VERSION_1);
            write(&mut t, REG_QUEUE_SEL, 0);
            write(&mut t, REG_QUEUE_NUM, size);
            assert_ne!(
                read(&mut t, REG_STATUS) & STATUS_NEEDS_RESET,
                0,
                "size {size}"
            );
        }
    }

    #[test]
    fn rings_outside_guest_memory_are_refused() {
        let (mut t, rec) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, MEM_SIZE as u64 - 0x1000);
        assert_eq!(read(&mut t, REG_QUEUE_READY), 0);
        assert_ne!(read(&mut t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
        let (mut t, _) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, 0xffff_ffff_ffff_f000);
        assert_eq!(read(&mut t, REG_QUEUE_READY), 0);
        assert!(rec.lock().unwrap().activated.is_empty());
    }

    #[test]
    fn reset_returns_to_the_initial_state() {
        let (mut t, rec) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 8, 0x1_0000);
        write(&mut t, REG_STATUS, ALL_OK);
        t.interrupt.signal_used_queue();
        assert_eq!(read(&mut t, REG_INTERRUPT_STATUS), INT_USED_RING);
        write(&mut t, REG_INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(read(&mut t, REG_INTERRUPT_STATUS), 0);
        let generation = read(&mut t, REG_CONFIG_GENERATION);
        write(&mut t, REG_STATUS, 0);
        assert_eq!(read(&mut t, REG_STATUS), 0);
        assert_eq!(rec.lock().unwrap().resets, 1);
        write(&mut t, REG_QUEUE_SEL, 0);
        assert_eq!(read(&mut t, REG_QUEUE_READY), 0);
        assert_ne!(read(&mut t, REG_CONFIG_GENERATION), generation);
        // The device can be brought up again.
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 8, 0x1_0000);
        write(&mut t, REG_STATUS, ALL_OK);
        assert_eq!(rec.lock().unwrap().activated.len(), 2);
        drop(t);
        assert_eq!(rec.lock().unwrap().resets, 2);
    }

    #[test]
    fn clearing_status_bits_needs_reset() {
        let (mut t, _) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        write(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
        assert_ne!(read(&mut t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (mut t, rec) = transport();
        // Narrow or unaligned register accesses read zero and write nothing.
        let mut two = [0xffu8; 2];
        t.read(REG_MAGIC, &mut two);
        assert_eq!(two, [0, 0]);
        let mut four = [0xffu8; 4];
        t.read(REG_MAGIC + 1, &mut four);
        assert_eq!(four, [0; 4]);
        t.write(REG_STATUS, &[1]);
        assert_eq!(read(&mut t, REG_STATUS), 0);
        // Unknown registers, and notifying a queue that does not exist.
        assert_eq!(read(&mut t, 0x0c0), 0);
        write(&mut t, 0x0c0, 1);
        write(&mut t, REG_QUEUE_NOTIFY, 99);
        // Config space: any width, zero past its end, writes reach the device.
        let mut cfg = [0u8; 2];
        t.read(CONFIG_SPACE + 6, &mut cfg);
        assert_eq!(cfg, [7, 8]);
        t.read(0xff0, &mut cfg);
        assert_eq!(cfg, [0, 0]);
        t.write(CONFIG_SPACE, &[0xaa]);
        assert_eq!(rec.lock().unwrap().config[0], 0xaa);
    }

    #[test]
    fn queue_notify_signals_the_queue_eventfd() {
        let (mut t, _) = transport();
        write(&mut t, REG_QUEUE_NOTIFY, 1);
        assert_eq!(t.queue_notifiers()[1].read().unwrap(), 1);
        assert!(t.queue_notifiers()[0].read().is_err());
    }
}
