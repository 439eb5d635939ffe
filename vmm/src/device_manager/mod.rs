//! Every device of a VM, created and attached in one place: the port-I/O devices (`legacy`),
//! the virtio devices built from the configuration (`virtio`) and put behind virtio-mmio pages
//! with their irqfds and ioeventfds (`mmio`). The builder asks for a [`DeviceManager`] either
//! fresh ([`DeviceManager::for_boot`]) or from a snapshot's device states
//! ([`DeviceManager::restored`]); the manager then holds the devices for the vCPUs' buses, the
//! console report and saving.

pub mod legacy;
pub mod mmio;
pub mod virtio;

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use crate::config::VmConfig;
use crate::devices::bus::{lock, Bus};
use crate::devices::legacy::console_scan::ConsoleReport;
use crate::devices::legacy::i8042::{I8042State, I8042};
use crate::devices::legacy::serial::SerialPort;
use crate::devices::virtio::{MmioTransport, TransportState};
use crate::error::VmmError;
use crate::snapshot::{Loaded, SnapshotError};
use crate::vcpu::VmEvent;
use crate::vm::Vm;
use legacy::{LegacyDevices, LegacyStart};
use mmio::TransportStart;

/// The devices of one VM and the two buses the vCPU threads dispatch their exits to.
///
/// Drop order: the builder declares the manager after the [`Vm`], so the devices (and the
/// virtio workers, joined when their transports drop) go before guest memory is unmapped.
pub struct DeviceManager {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<SerialPort>>,
    i8042: Arc<Mutex<I8042>>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
}

impl DeviceManager {
    /// Creates every device `config` asks for, in power-on state. Console alerts go to
    /// `events`.
    pub(crate) fn for_boot(
        vm: &Vm,
        config: &VmConfig,
        events: Sender<VmEvent>,
    ) -> Result<DeviceManager, VmmError> {
        let legacy = LegacyDevices::new(
            vm,
            &config.serial,
            config.console_max_bytes,
            events,
            LegacyStart::Boot,
        )?;
        let mut mmio = Bus::new();
        let mut transports = Vec::new();
        for (kind, slot) in config.virtio_slots()? {
            let device = virtio::create(config, kind)?;
            transports.push(mmio::attach(
                vm,
                &mut mmio,
                slot,
                device,
                TransportStart::Boot,
            )?);
        }
        Ok(DeviceManager::assemble(legacy, mmio, transports))
    }

    /// Creates every device `config` asks for (per-pod settings always come from `config`)
    /// and puts back the registers `loaded` saved for them: the UART, the i8042, and each
    /// virtio transport, matched to its slot by order. Each virtio device restarts where the
    /// snapshot left its rings.
    pub(crate) fn restored(
        vm: &Vm,
        config: &VmConfig,
        events: Sender<VmEvent>,
        loaded: &Loaded,
    ) -> Result<DeviceManager, VmmError> {
        let legacy = LegacyDevices::new(
            vm,
            &config.serial,
            config.console_max_bytes,
            events,
            LegacyStart::Restore {
                serial: &loaded.serial,
                i8042: &loaded.state.devices.i8042,
            },
        )?;
        let saved = &loaded.state.devices.virtio;
        let mut mmio = Bus::new();
        let mut transports = Vec::new();
        for (index, (kind, slot)) in config.virtio_slots()?.into_iter().enumerate() {
            let device = virtio::create(config, kind)?;
            let state = saved.get(index).ok_or(SnapshotError::Corrupt(
                "fewer virtio devices than the VM has".into(),
            ))?;
            let start = TransportStart::Restore { index, state };
            transports.push(mmio::attach(vm, &mut mmio, slot, device, start)?);
        }
        Ok(DeviceManager::assemble(legacy, mmio, transports))
    }

    fn assemble(
        legacy: LegacyDevices,
        mmio: Bus,
        transports: Vec<Arc<Mutex<MmioTransport>>>,
    ) -> DeviceManager {
        DeviceManager {
            pio: Arc::new(legacy.bus),
            mmio: Arc::new(mmio),
            serial: legacy.serial,
            i8042: legacy.i8042,
            transports,
        }
    }

    /// The port-I/O bus, for the vCPU threads.
    pub fn pio_bus(&self) -> Arc<Bus> {
        self.pio.clone()
    }

    /// The MMIO bus, for the vCPU threads.
    pub fn mmio_bus(&self) -> Arc<Bus> {
        self.mmio.clone()
    }

    /// What the guest's console showed (exit status, panic, timings), after writing out any
    /// partial last line. Call once the vCPUs have stopped.
    pub fn console_report(&self) -> ConsoleReport {
        let mut port = lock(&self.serial);
        port.sink_mut().flush_pending();
        port.sink_mut().report()
    }

    /// Stops every virtio device's worker and returns each transport's state, in slot order.
    /// After this no device touches guest memory (the snapshot's first step).
    pub fn quiesce_virtio(&self) -> Vec<TransportState> {
        self.transports
            .iter()
            .map(|t| lock(t).quiesce_and_save())
            .collect()
    }

    /// The UART's registers.
    pub fn serial_state(&self) -> vm_superio::serial::SerialState {
        lock(&self.serial).state()
    }

    /// The i8042's registers.
    pub fn i8042_state(&self) -> I8042State {
        lock(&self.i8042).state()
    }
}
