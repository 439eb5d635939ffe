//! The 8250/16550 UART at 0x3f8 (ttyS0), emulated by vm-superio, raising IRQ 4 through an
//! irqfd. Its output goes to stdout, a file or nowhere, and always through the console scanner.

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::console_scan::{ConsoleReport, ConsoleScanner};
use crate::devices::bus::{BusAction, BusDevice};
use crate::log_file::RotatingFile;

/// COM1's port base.
pub const COM1_PORT: u64 = 0x3f8;
/// COM1's port count.
pub const COM1_PORTS: u64 = 8;
/// COM1's ISA IRQ.
pub const COM1_IRQ: u32 = 4;

/// Output is written out at each newline or when this much is pending.
const FLUSH_THRESHOLD: usize = 4096;

/// The interrupt line: an eventfd that KVM turns into IRQ 4.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Something the console noticed that the VM's supervisor must hear about at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleAlert {
    /// The kernel printed its panic line.
    KernelPanic,
    /// guest-init printed its warm-mode marker (idle, waiting for its handover).
    WarmReady,
}

/// Called when the console notices something urgent (from the vCPU thread that wrote it).
pub type AlertHandler = Box<dyn FnMut(ConsoleAlert) + Send>;

/// Where the UART's bytes go: the scanner, then the chosen sink, line-buffered.
pub struct ConsoleSink {
    out: Option<Box<dyn Write + Send>>,
    pending: Vec<u8>,
    scanner: ConsoleScanner,
    alerts: Option<AlertHandler>,
}

impl ConsoleSink {
    /// Output to the VMM's stdout.
    pub fn stdout() -> Self {
        Self::with_output(Some(Box::new(io::stdout())))
    }

    /// Output to a size-capped file: a guest printing forever costs old lines, not the
    /// host's disk.
    pub fn file(file: RotatingFile) -> Self {
        Self::with_output(Some(Box::new(file)))
    }

    /// Output discarded (still scanned).
    pub fn discard() -> Self {
        Self::with_output(None)
    }

    /// Output to any writer (tests).
    pub fn with_output(out: Option<Box<dyn Write + Send>>) -> Self {
        ConsoleSink {
            out,
            pending: Vec::new(),
            scanner: ConsoleScanner::new(),
            alerts: None,
        }
    }

    /// Calls `alerts` on a kernel panic.
    pub fn set_alerts(&mut self, alerts: AlertHandler) {
        self.alerts = Some(alerts);
    }

    /// Writes out whatever is pending, e.g. a last line without a newline.
    pub fn flush_pending(&mut self) {
        if let Some(out) = self.out.as_mut() {
            // The guest must never be stopped by a broken output (closed pipe, full disk):
            // errors lose console text, nothing else.
            let _ = out.write_all(&self.pending);
            let _ = out.flush();
        }
        self.pending.clear();
    }

    /// What the scanner found so far.
    pub fn report(&self) -> ConsoleReport {
        self.scanner.report()
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let news = self.scanner.feed(buf);
        if let Some(alerts) = self.alerts.as_mut() {
            if news.panic {
                alerts(ConsoleAlert::KernelPanic);
            }
            if news.warm_ready {
                alerts(ConsoleAlert::WarmReady);
            }
        }
        if self.out.is_some() {
            self.pending.extend_from_slice(buf);
            if buf.contains(&b'\n') || self.pending.len() >= FLUSH_THRESHOLD {
                self.flush_pending();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // vm-superio flushes after every byte; we flush per line instead (see `write`).
        Ok(())
    }
}

/// The COM1 device on the port I/O bus.
pub struct SerialPort {
    uart: Serial<IrqLine, NoEvents, ConsoleSink>,
}

impl SerialPort {
    /// A UART raising `irq` and writing to `sink`.
    pub fn new(irq: IrqLine, sink: ConsoleSink) -> Self {
        SerialPort {
            uart: Serial::new(irq, sink),
        }
    }

    /// The UART's registers and receive buffer (for a snapshot).
    pub fn state(&self) -> vm_superio::serial::SerialState {
        self.uart.state()
    }

    /// A UART with the registers of `state` (restoring a snapshot).
    pub fn from_state(
        irq: IrqLine,
        sink: ConsoleSink,
        state: &vm_superio::serial::SerialState,
    ) -> io::Result<Self> {
        let uart = Serial::from_state(state, irq, NoEvents, sink)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        Ok(SerialPort { uart })
    }

    /// The console sink (for the report and the final flush).
    pub fn sink_mut(&mut self) -> &mut ConsoleSink {
        self.uart.writer_mut()
    }
}

impl BusDevice for SerialPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(first) = data.first_mut() {
            *first = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        if let Some(&value) = data.first() {
            // Errors here are a failed interrupt trigger or output; neither may stop the VM.
            let _ = self.uart.write(offset as u8, value);
        }
        BusAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_reach_the_sink_per_line_and_panics_alert() {
        let out = Shared::default();
        let mut sink = ConsoleSink::with_output(Some(Box::new(out.clone())));
        let (tx, rx) = mpsc::channel();
        sink.set_alerts(Box::new(move |alert| {
            let _ = tx.send(alert);
        }));
        let irq = IrqLine(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut port = SerialPort::new(irq, sink);
        for b in b"hi" {
            port.write(0, &[*b]);
        }
        assert!(out.0.lock().unwrap().is_empty(), "line not complete yet");
        for b in b"\nKernel panic - not syncing: x\n" {
            port.write(0, &[*b]);
        }
        assert!(out.0.lock().unwrap().starts_with(b"hi\nKernel panic"));
        assert_eq!(rx.try_recv(), Ok(ConsoleAlert::KernelPanic));
        assert!(port.sink_mut().report().panicked);
        // The line status register says the transmitter is empty, as Linux expects.
        let mut lsr = [0u8];
        port.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
