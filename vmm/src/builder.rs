//! One `VmConfig` in, one finished VM out: host checks, VM and devices, vCPU threads, and the
//! supervision that decides how the guest ended.

use std::fs::File;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::{IoEventAddress, VcpuFd};

use crate::arch::x86_64::layout::VIRTIO_MMIO_DEVICE_SIZE;
use crate::config::{SerialOutput, VmConfig};
use crate::devices::bus::{lock, Bus};
use crate::devices::legacy::cmos::{Cmos, CMOS_PORT, CMOS_PORTS};
use crate::devices::legacy::console_scan::ConsoleReport;
use crate::devices::legacy::i8042::{I8042, I8042_PORT, I8042_PORTS};
use crate::devices::legacy::serial::{
    ConsoleAlert, ConsoleSink, IrqLine, SerialPort, COM1_IRQ, COM1_PORT, COM1_PORTS,
};
use crate::devices::virtio::fs::{Fs, FsConfig};
use crate::devices::virtio::mmio::REG_QUEUE_NOTIFY;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{Vsock, VsockConfig as VsockDeviceConfig};
use crate::devices::virtio::TransportState;
use crate::devices::virtio::{Interrupt, MmioTransport, VirtioDevice, VirtioKind};
use crate::error::VmmError;
use crate::host_checks::open_host;
use crate::log_file::RotatingFile;
use crate::stats::{
    open_stats_fd, process_guest_time, process_usage, read_stats, ExitCounters, VmStats,
};
use crate::vcpu::{self, VcpuEnd, VcpuShared, VcpuStop, VmEvent};
use crate::vm::Vm;

/// After the console shows a kernel panic, how long the guest gets to reboot by itself
/// (`panic=-1`) before the VMM stops it (a guest booted without `panic=` would hang forever).
const PANIC_GRACE: Duration = Duration::from_secs(2);
/// How often a stopping vCPU thread is re-kicked until it has left KVM_RUN.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// How the guest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmOutcome {
    /// guest-init reported `exit-status=N`, then the guest stopped cleanly.
    GuestReportedExit(u8),
    /// The guest stopped cleanly without reporting a status.
    CleanStop,
    /// The guest kernel panicked.
    GuestPanic,
    /// The guest triple-faulted (KVM shutdown exit).
    TripleFault,
    /// KVM could not run the guest (internal error, failed entry, unexpected exit).
    KvmError(String),
}

/// Exit status for a VMM error (docs/foundation.md).
pub const EXIT_VMM_ERROR: i32 = 254;

impl VmOutcome {
    /// The `rkt-vmm` exit status for this outcome (docs/foundation.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            VmOutcome::GuestReportedExit(n) => i32::from(*n),
            VmOutcome::CleanStop => 0,
            VmOutcome::GuestPanic => 250,
            VmOutcome::TripleFault | VmOutcome::KvmError(_) => 251,
        }
    }

    /// A one-line description for stderr, or None when the outcome is a normal end.
    pub fn describe(&self) -> Option<String> {
        match self {
            VmOutcome::GuestReportedExit(_) | VmOutcome::CleanStop => None,
            VmOutcome::GuestPanic => {
                Some("the guest kernel panicked (see its console output)".into())
            }
            VmOutcome::TripleFault => {
                Some("the guest hit a triple fault (KVM shutdown exit)".into())
            }
            VmOutcome::KvmError(what) => Some(format!("KVM stopped the guest: {what}")),
        }
    }
}

/// The outcome plus, when asked for, the statistics.
#[derive(Debug)]
pub struct VmReport {
    /// How the guest ended.
    pub outcome: VmOutcome,
    /// Counters and timings (`VmConfig::collect_stats`).
    pub stats: Option<VmStats>,
}

/// Boots the VM described by `config` and runs it to the end.
pub fn run(config: VmConfig) -> Result<VmOutcome, VmmError> {
    run_measured(config).map(|r| r.outcome)
}

/// Like [`run`], also returning statistics when `config.collect_stats` is set.
pub fn run_measured(config: VmConfig) -> Result<VmReport, VmmError> {
    match run_vm(config, Mode::Cold)? {
        Finished::Ended(report) => Ok(*report),
        Finished::Saved(_) => Err(VmmError::VirtioDevice {
            device: "vmm".into(),
            message: "a cold run saved a snapshot (a VMM bug)".into(),
        }),
    }
}

/// How [`run_vm`] starts the VM and what it waits for.
pub(crate) enum Mode {
    /// Boot the kernel and run to the end.
    Cold,
    /// Boot the kernel, wait for guest-init's warm marker, save a snapshot there and stop.
    SnapshotTo(std::path::PathBuf),
    /// Start from a loaded snapshot, hand the guest its parameters, run to the end.
    Restore(Box<crate::snapshot::Loaded>),
}

/// What [`run_vm`] ended with.
pub(crate) enum Finished {
    /// The guest ran to its end.
    Ended(Box<VmReport>),
    /// The guest was saved (snapshot mode).
    Saved(crate::snapshot::SavedReport),
}

/// Builds the VM (booted or restored), runs it and supervises it according to `mode`.
pub(crate) fn run_vm(config: VmConfig, mode: Mode) -> Result<Finished, VmmError> {
    let started = Instant::now();
    let (kvm, vm_fd) = open_host()?;
    config.validate(kvm.get_max_vcpus())?;
    let cmdline = config.guest_cmdline()?;
    let restoring = match &mode {
        Mode::Restore(loaded) => Some(loaded.as_ref()),
        _ => None,
    };
    let (vm, kernel) = match restoring {
        Some(loaded) => (crate::snapshot::restore_vm(kvm, vm_fd, loaded)?, None),
        None => {
            let vm = Vm::new(kvm, vm_fd, config.mem_mib)?;
            let kernel = vm.load_kernel(&config, &cmdline)?;
            (vm, Some(kernel))
        }
    };

    let (events_tx, events_rx) = mpsc::channel();
    let serial = Arc::new(Mutex::new(build_serial(
        &vm,
        &config.serial,
        config.console_max_bytes,
        events_tx.clone(),
        restoring.map(|l| &l.serial),
    )?));
    let i8042 = Arc::new(Mutex::new(match restoring {
        Some(loaded) => I8042::from_state(&loaded.state.devices.i8042),
        None => I8042::new(),
    }));
    let mut pio = Bus::new();
    pio.insert(COM1_PORT, COM1_PORTS, serial.clone())?;
    pio.insert(I8042_PORT, I8042_PORTS, i8042.clone())?;
    pio.insert(CMOS_PORT, CMOS_PORTS, Arc::new(Mutex::new(Cmos::new())))?;
    let mut mmio = Bus::new();
    let transports = attach_virtio_devices(
        &vm,
        &config,
        &mut mmio,
        restoring.map(|l| l.state.devices.virtio.as_slice()),
    )?;

    let vcpu_fds = match (&kernel, restoring) {
        (Some(kernel), _) => vm.create_vcpus(config.vcpus, kernel)?,
        (None, Some(loaded)) => crate::snapshot::restore_vcpus(&vm, loaded)?,
        (None, None) => Vec::new(),
    };
    let stats_fds = if config.collect_stats {
        let vm_stats = open_stats_fd(&vm.fd).ok();
        let vcpu_stats: Vec<File> = vcpu_fds
            .iter()
            .filter_map(|v| open_stats_fd(v).ok())
            .collect();
        Some((vm_stats, vcpu_stats))
    } else {
        None
    };

    vcpu::install_kick_handler().map_err(|source| VmmError::HostResource {
        what: "install the vCPU kick signal handler",
        source,
    })?;
    let shared = VcpuShared {
        pio: Arc::new(pio),
        mmio: Arc::new(mmio),
        stop: Arc::new(AtomicBool::new(false)),
        pause: Arc::new(AtomicBool::new(false)),
        events: events_tx,
    };
    // Before the first vCPU thread exists: from here on the VMM runs confined when jailed.
    crate::sandbox::lock_down().map_err(|source| VmmError::HostResource {
        what: "lock the VMM down (sandbox policy)",
        source,
    })?;
    let setup_done = started.elapsed();
    let mut threads = Vec::with_capacity(vcpu_fds.len());
    let mut spawn_error = None;
    for (index, fd) in vcpu_fds.into_iter().enumerate() {
        match vcpu::spawn(index as u8, fd, shared.clone()) {
            Ok(t) => threads.push(t),
            Err(source) => {
                spawn_error = Some(VmmError::HostResource {
                    what: "start a vCPU thread",
                    source,
                });
                break;
            }
        }
    }

    let mut handover_error = None;
    let first_stop = match (&spawn_error, &mode) {
        (Some(_), _) => (0, VcpuStop::Kicked),
        (None, Mode::SnapshotTo(_)) => match crate::snapshot::wait_for_warm_ready(&events_rx) {
            // Pause rather than stop: the threads hand their vCPUs back.
            None => {
                shared.pause.store(true, Ordering::Release);
                (0, VcpuStop::Kicked)
            }
            Some(end) => end,
        },
        (None, Mode::Restore(loaded)) => match crate::snapshot::hand_over(&config, loaded) {
            Ok(()) => wait_for_end(&events_rx),
            Err(error) => {
                handover_error = Some(error);
                (0, VcpuStop::Kicked)
            }
        },
        (None, Mode::Cold) => wait_for_end(&events_rx),
    };
    shared.stop.store(true, Ordering::Release);
    let (counters, paused) = stop_and_join(threads);
    if let Some(err) = spawn_error.or(handover_error) {
        return Err(err);
    }

    if let Mode::SnapshotTo(dir) = &mode {
        if shared.pause.load(Ordering::Acquire) {
            let saved =
                crate::snapshot::save(dir, &config, &vm, paused, &serial, &i8042, &transports)?;
            return Ok(Finished::Saved(saved));
        }
    }

    let console = {
        let mut port = lock(&serial);
        port.sink_mut().flush_pending();
        port.sink_mut().report()
    };
    let outcome = decide_outcome(&first_stop, &console)?;
    if let Mode::SnapshotTo(_) = &mode {
        return Err(crate::snapshot::SnapshotError::EndedBeforeReady(outcome).into());
    }

    let stats = stats_fds.map(|(vm_stats, vcpu_stats)| {
        let mut stats = VmStats {
            exits: counters,
            to_vcpus_started: Some(setup_done),
            to_first_output: console.first_output_at.map(|t| t - started),
            to_marker: console.marker_at.map(|t| t - started),
            total: started.elapsed(),
            guest_mem_mib: config.mem_mib,
            ..Default::default()
        };
        if let Some(f) = vm_stats {
            stats.kvm_vm = read_stats(&f).unwrap_or_default();
        }
        for f in &vcpu_stats {
            for (name, v) in read_stats(f).unwrap_or_default() {
                *stats.kvm_vcpu.entry(name).or_default() += v;
            }
        }
        (stats.cpu_time, stats.max_rss_kib) = process_usage();
        stats.guest_time = process_guest_time();
        stats
    });
    Ok(Finished::Ended(Box::new(VmReport { outcome, stats })))
}

fn build_serial(
    vm: &Vm,
    output: &SerialOutput,
    console_max_bytes: u64,
    events: mpsc::Sender<VmEvent>,
    restore: Option<&vm_superio::serial::SerialState>,
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
    let events = Mutex::new(events);
    sink.set_alerts(Box::new(move |alert| match alert {
        ConsoleAlert::KernelPanic => {
            let _ = lock(&events).send(VmEvent::KernelPanic);
        }
        ConsoleAlert::WarmReady => {
            let _ = lock(&events).send(VmEvent::WarmReady);
        }
    }));
    let irq = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).map_err(|source| {
        VmmError::HostResource {
            what: "create the serial interrupt eventfd",
            source,
        }
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

/// Puts each configured virtio device behind a virtio-mmio page on `mmio`, with an irqfd on
/// its IOAPIC pin and an ioeventfd per queue on its QueueNotify register (the slots match the
/// `virtio_mmio.device=` entries of the command line, both come from `VmConfig::virtio_slots`).
///
/// Teardown: the transports live on the MMIO bus, which is dropped before `vm` (and its guest
/// memory); dropping a transport stops and joins its device's worker thread.
///
/// With `restore`, each transport takes its registers from the snapshot (same slot order) and
/// restarts its device where the snapshot left it. Returns the transports, in slot order.
fn attach_virtio_devices(
    vm: &Vm,
    config: &VmConfig,
    mmio: &mut Bus,
    restore: Option<&[TransportState]>,
) -> Result<Vec<Arc<Mutex<MmioTransport>>>, VmmError> {
    let mut transports = Vec::new();
    for (n, (kind, slot)) in config.virtio_slots()?.into_iter().enumerate() {
        let device = create_virtio_device(config, kind)?;
        let irqfd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).map_err(|source| {
            VmmError::HostResource {
                what: "create a virtio interrupt eventfd",
                source,
            }
        })?;
        vm.fd
            .register_irqfd(&irqfd, slot.irq)
            .map_err(VmmError::kvm("KVM_IRQFD"))?;
        let interrupt = Arc::new(Interrupt::new(irqfd));
        let transport =
            match restore.map(|states| states.get(n)) {
                None => MmioTransport::new(device, vm.ram.memory.clone(), interrupt).map_err(
                    |source| VmmError::HostResource {
                        what: "create virtio queue notification eventfds",
                        source,
                    },
                )?,
                Some(state) => {
                    let state = state.ok_or(crate::snapshot::SnapshotError::Corrupt(
                        "fewer virtio devices than the VM has".into(),
                    ))?;
                    MmioTransport::from_state(device, vm.ram.memory.clone(), interrupt, state)
                        .map_err(|e| crate::snapshot::SnapshotError::Device {
                            slot: n,
                            reason: e.to_string(),
                        })?
                }
            };
        for (index, notify) in transport.queue_notifiers().iter().enumerate() {
            // Datamatch on the queue index: the driver writes it to QueueNotify, so each
            // queue's notification wakes exactly its own eventfd without a VMM exit.
            vm.fd
                .register_ioevent(
                    notify,
                    &IoEventAddress::Mmio(slot.addr + REG_QUEUE_NOTIFY),
                    index as u32,
                )
                .map_err(VmmError::kvm("KVM_IOEVENTFD"))?;
        }
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(slot.addr, VIRTIO_MMIO_DEVICE_SIZE, transport.clone())?;
        transports.push(transport);
    }
    Ok(transports)
}

/// Builds the device behind one virtio-mmio slot from its part of the configuration.
fn create_virtio_device(
    config: &VmConfig,
    kind: VirtioKind,
) -> Result<Box<dyn VirtioDevice>, VmmError> {
    match kind {
        VirtioKind::Rng => Ok(Box::new(Rng::new())),
        VirtioKind::Fs(index) => {
            let share = config
                .shares
                .get(index)
                .ok_or_else(|| VmmError::VirtioDevice {
                    device: format!("share {index}"),
                    message: "no such share in the configuration (a VMM bug)".to_string(),
                })?;
            let fs_config = FsConfig {
                tag: share.tag.clone(),
                host_dir: share.host_dir.clone(),
                read_only: share.read_only,
                max_inodes: share.max_inodes,
            };
            let fs = Fs::new(&fs_config).map_err(|e| VmmError::VirtioDevice {
                device: format!("share {:?}", share.tag),
                message: e.to_string(),
            })?;
            Ok(Box::new(fs))
        }
        VirtioKind::Vsock => {
            let socket = config
                .vsock
                .as_ref()
                .ok_or_else(|| VmmError::VirtioDevice {
                    device: "vsock".to_string(),
                    message: "no vsock in the configuration (a VMM bug)".to_string(),
                })?;
            let vsock_config = VsockDeviceConfig {
                guest_cid: socket.guest_cid,
                uds_path: socket.uds_path.clone(),
                host_ports: socket.host_ports.clone(),
            };
            let vsock = Vsock::new(&vsock_config).map_err(|e| VmmError::VirtioDevice {
                device: "vsock".to_string(),
                message: e.to_string(),
            })?;
            Ok(Box::new(vsock))
        }
        VirtioKind::Net(index) => {
            let nic = config
                .nets
                .get(index)
                .ok_or_else(|| VmmError::VirtioDevice {
                    device: format!("net {index}"),
                    message: "no such NIC in the configuration (a VMM bug)".to_string(),
                })?;
            let net = Net::new(nic).map_err(|e| VmmError::VirtioDevice {
                device: "virtio-net".to_string(),
                message: e.to_string(),
            })?;
            Ok(Box::new(net))
        }
    }
}

/// Waits for the first vCPU to stop (returning its index and why); after a kernel panic, waits
/// at most `PANIC_GRACE`.
pub(crate) fn wait_for_end(events: &mpsc::Receiver<VmEvent>) -> (u8, VcpuStop) {
    let mut deadline: Option<Instant> = None;
    loop {
        let event = match deadline {
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => events.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match event {
            Ok(VmEvent::VcpuStopped(index, stop)) => return (index, stop),
            Ok(VmEvent::KernelPanic) => {
                deadline.get_or_insert(Instant::now() + PANIC_GRACE);
            }
            // Only a snapshot run acts on the warm marker.
            Ok(VmEvent::WarmReady) => {}
            // Timeout after a panic, or every vCPU gone without a word: stop the VM.
            Err(_) => return (0, VcpuStop::Kicked),
        }
    }
}

/// Kicks every vCPU thread until it has left KVM_RUN, then joins them all; returns their
/// counters and, in vCPU order, the vCPUs handed back by a pause.
fn stop_and_join(threads: Vec<JoinHandle<VcpuEnd>>) -> (ExitCounters, Vec<Option<VcpuFd>>) {
    let mut total = ExitCounters::default();
    let mut paused = Vec::with_capacity(threads.len());
    for thread in threads {
        while !thread.is_finished() {
            // SAFETY: the thread has not been joined, so its pthread_t is valid; the kick
            // handler is installed and only touches that thread's own kvm_run.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), vcpu::kick_signal()) };
            std::thread::sleep(KICK_INTERVAL);
        }
        // A vCPU thread that panicked contributes no counters; the VM is over either way.
        match thread.join() {
            Ok(end) => {
                total.merge(&end.counters);
                paused.push(end.paused);
            }
            Err(_) => paused.push(None),
        }
    }
    (total, paused)
}

/// Combines how the first vCPU stopped with what the console showed.
pub(crate) fn decide_outcome(
    (index, stop): &(u8, VcpuStop),
    console: &ConsoleReport,
) -> Result<VmOutcome, VmmError> {
    if console.panicked {
        return Ok(VmOutcome::GuestPanic);
    }
    Ok(match stop {
        VcpuStop::GuestReset | VcpuStop::Kicked => match console.exit_status {
            Some(n) => VmOutcome::GuestReportedExit(n),
            None => VmOutcome::CleanStop,
        },
        VcpuStop::TripleFault => VmOutcome::TripleFault,
        VcpuStop::KvmError(what) => VmOutcome::KvmError(what.clone()),
        VcpuStop::RunFailed(errno) => {
            return Err(VmmError::VcpuRun {
                index: *index,
                source: kvm_ioctls::Error::new(*errno),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_foundation_table() {
        assert_eq!(VmOutcome::GuestReportedExit(0).exit_code(), 0);
        assert_eq!(VmOutcome::GuestReportedExit(42).exit_code(), 42);
        assert_eq!(VmOutcome::CleanStop.exit_code(), 0);
        assert_eq!(VmOutcome::GuestPanic.exit_code(), 250);
        assert_eq!(VmOutcome::TripleFault.exit_code(), 251);
        assert_eq!(VmOutcome::KvmError("x".into()).exit_code(), 251);
    }

    #[test]
    fn outcome_combines_stop_and_console() {
        let mut console = ConsoleReport::default();
        let reset = (0, VcpuStop::GuestReset);
        assert_eq!(
            decide_outcome(&reset, &console).unwrap(),
            VmOutcome::CleanStop
        );
        console.exit_status = Some(3);
        assert_eq!(
            decide_outcome(&reset, &console).unwrap(),
            VmOutcome::GuestReportedExit(3)
        );
        assert_eq!(
            decide_outcome(&(0, VcpuStop::TripleFault), &console).unwrap(),
            VmOutcome::TripleFault
        );
        console.panicked = true;
        assert_eq!(
            decide_outcome(&reset, &console).unwrap(),
            VmOutcome::GuestPanic
        );
        assert_eq!(
            decide_outcome(&(0, VcpuStop::TripleFault), &console).unwrap(),
            VmOutcome::GuestPanic
        );
        console.panicked = false;
        let err = decide_outcome(&(1, VcpuStop::RunFailed(libc::EFAULT)), &console).unwrap_err();
        assert!(
            err.to_string().starts_with("vCPU 1: KVM_RUN failed"),
            "{err}"
        );
    }

    #[test]
    fn error_outcomes_say_what_happened() {
        assert!(VmOutcome::TripleFault
            .describe()
            .unwrap()
            .contains("triple fault"));
        assert!(VmOutcome::GuestPanic.describe().unwrap().contains("panic"));
        assert_eq!(VmOutcome::GuestReportedExit(3).describe(), None);
    }

    #[test]
    fn panic_grace_ends_the_wait() {
        let (tx, rx) = mpsc::channel();
        tx.send(VmEvent::KernelPanic).unwrap();
        let started = Instant::now();
        assert_eq!(wait_for_end(&rx), (0, VcpuStop::Kicked));
        assert!(started.elapsed() >= PANIC_GRACE);
        drop(tx);
    }
}
