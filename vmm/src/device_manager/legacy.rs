//! The port-I/O devices every VM has: the COM1 UART (the guest's console), the i8042 (whose
//! reset line is how the guest reboots) and the CMOS clock.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use vm_superio::serial::SerialState;
use vmm_sys_util::eventfd::EventFd;

use crate::config::SerialOutput;
use crate::devices::bus::{lock, Bus};
use crate::devices::legacy::cmos::{Cmos, CMOS_PORT, CMOS_PORTS};
use crate::devices::legacy::i8042::{I8042State, I8042, I8042_PORT, I8042_PORTS};
use crate::devices::legacy::serial::{
    ConsoleAlert, ConsoleSink, IrqLine, SerialPort, COM1_IRQ, COM1_PORT, COM1_PORTS,
};
use crate::error::VmmError;
use crate::log_file::RotatingFile;
use crate::vcpu::VmEvent;
use crate::vm::Vm;

/// Where the port-I/O devices start: fresh at boot, or as a snapshot left them.
pub(crate) enum LegacyStart<'a> {
    /// Power-on state.
    Boot,
    /// The UART and i8042 registers of a snapshot (the CMOS clock is read from the host).
    Restore {
        /// The UART.
        serial: &'a SerialState,
        /// The keyboard controller.
        i8042: &'a I8042State,
    },
}

/// The port-I/O devices, on their bus.
pub(crate) struct LegacyDevices {
    /// The port-I/O bus the vCPUs dispatch IN/OUT exits to.
    pub bus: Bus,
    /// The UART, kept for the console report and snapshots.
    pub serial: Arc<Mutex<SerialPort>>,
    /// The i8042, kept for snapshots.
    pub i8042: Arc<Mutex<I8042>>,
}

impl LegacyDevices {
    /// Creates the devices (the UART's irqfd registered with KVM) and puts them on a new bus.
    /// The console's alerts (kernel panic, warm marker) are sent to `events`.
    pub fn new(
        vm: &Vm,
        output: &SerialOutput,
        console_max_bytes: u64,
        events: Sender<VmEvent>,
        start: LegacyStart<'_>,
    ) -> Result<LegacyDevices, VmmError> {
        let (serial_state, i8042_state) = match start {
            LegacyStart::Boot => (None, None),
            LegacyStart::Restore { serial, i8042 } => (Some(serial), Some(i8042)),
        };
        let serial = Arc::new(Mutex::new(build_serial(
            vm,
            output,
            console_max_bytes,
            events,
            serial_state,
        )?));
        let i8042 = Arc::new(Mutex::new(match i8042_state {
            Some(state) => I8042::from_state(state),
            None => I8042::new(),
        }));
        let mut bus = Bus::new();
        bus.insert(COM1_PORT, COM1_PORTS, serial.clone())?;
        bus.insert(I8042_PORT, I8042_PORTS, i8042.clone())?;
        bus.insert(CMOS_PORT, CMOS_PORTS, Arc::new(Mutex::new(Cmos::new())))?;
        Ok(LegacyDevices { bus, serial, i8042 })
    }
}

/// The UART with its console sink (stdout, a size-capped file, or nothing) and its irqfd on
/// COM1's IOAPIC pin.
fn build_serial(
    vm: &Vm,
    output: &SerialOutput,
    console_max_bytes: u64,
    events: Sender<VmEvent>,
    restore: Option<&SerialState>,
) -> Result<SerialPort, VmmError> {
    let mut sink = match output {
        SerialOutput::Stdout => ConsoleSink::stdout(),
        SerialOutput::Off => ConsoleSink::discard(),
        SerialOutput::File(path) => {
            let file = RotatingFile::create(path, console_max_bytes).map_err(|source| {
                VmmError::SerialFile {
                    path: path.clone(),
                    source,
                }
            })?;
            ConsoleSink::file(file)
        }
    };
    // The sink is called from vCPU threads; a Sender is Send but not Sync.
    let events = Mutex::new(events);
    sink.set_alerts(Box::new(move |alert| match alert {
        ConsoleAlert::KernelPanic => {
            let _ = lock(&events).send(VmEvent::KernelPanic);
        }
        ConsoleAlert::WarmReady => {
            let _ = lock(&events).send(VmEvent::WarmReady);
        }
    }));
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmmError::HostResource {
        what: "create the serial interrupt eventfd",
        source,
    })?;
    vm.fd
        .register_irqfd(&irq, COM1_IRQ)
        .map_err(VmmError::kvm("KVM_IRQFD"))?;
    match restore {
        None => Ok(SerialPort::new(IrqLine(irq), sink)),
        Some(state) => SerialPort::from_state(IrqLine(irq), sink, state).map_err(|e| {
            crate::snapshot::SnapshotError::Corrupt(format!("serial port state: {e}")).into()
        }),
    }
}
