//! Building a VM and running it to its end, with one entry point per way a VM starts:
//!
//! - [`boot`]: a fresh VM from the kernel, run to the end (`rkt-vmm`, [`run`]);
//! - [`boot_to_snapshot`]: a fresh VM booted until guest-init's warm marker, then saved
//!   (`snapshot::snapshot_to`);
//! - [`restore`]: a VM put back from a snapshot, handed its parameters, run to the end
//!   (`snapshot::restore_from`).
//!
//! Each entry point makes its own VM and vCPUs (from a kernel or from saved state) and asks
//! the device manager for its devices (fresh or restored); what they share is the start of
//! every build (host checks, configuration), the device manager, and the supervision of the
//! running vCPUs (`supervisor`); how a run's end becomes an outcome is `outcome`.

mod outcome;
mod supervisor;

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use kvm_ioctls::{Kvm, VmFd};

pub use outcome::{VmOutcome, VmReport, EXIT_VMM_ERROR};

use crate::config::VmConfig;
use crate::device_manager::DeviceManager;
use crate::error::VmmError;
use crate::host_checks::open_host;
use crate::snapshot::{Loaded, SavedReport, SnapshotError};
use crate::vm::Vm;
use outcome::decide_outcome;
use supervisor::{Stopped, Supervisor};

/// Boots the VM described by `config` and runs it to the end.
pub fn run(config: VmConfig) -> Result<VmOutcome, VmmError> {
    run_measured(config).map(|r| r.outcome)
}

/// Like [`run`], also returning statistics when `config.collect_stats` is set.
pub fn run_measured(config: VmConfig) -> Result<VmReport, VmmError> {
    boot(config)
}

/// Boots a fresh VM from `config`'s kernel and runs it until the guest stops.
pub fn boot(config: VmConfig) -> Result<VmReport, VmmError> {
    let started = Instant::now();
    let Booted {
        vm,
        devices,
        vcpu_fds,
        events_tx,
        events_rx,
    } = build_for_boot(&config)?;

    let vcpus = Supervisor::start(
        started,
        config.collect_stats,
        &vm,
        &devices,
        vcpu_fds,
        events_tx,
        events_rx,
    )?;
    let first_stop = vcpus.wait_for_end();
    let stopped = vcpus.stop()?;
    finish(&config, &devices, first_stop, stopped)
}

/// What [`boot`] and [`boot_to_snapshot`] build before any vCPU runs.
struct Booted {
    vm: Vm,
    devices: DeviceManager,
    vcpu_fds: Vec<kvm_ioctls::VcpuFd>,
    events_tx: mpsc::Sender<crate::vcpu::VmEvent>,
    events_rx: mpsc::Receiver<crate::vcpu::VmEvent>,
}

/// A fresh VM from `config`: the kernel loaded, the devices attached, the vCPUs created.
fn build_for_boot(config: &VmConfig) -> Result<Booted, VmmError> {
    let (kvm, vm_fd, cmdline) = open_for(config)?;
    let vm = Vm::new(kvm, vm_fd, config.mem_mib)?;
    let kernel = vm.load_kernel(config, &cmdline)?;
    let (events_tx, events_rx) = mpsc::channel();
    let devices = DeviceManager::for_boot(&vm, config, events_tx.clone())?;
    let vcpu_fds = vm.create_vcpus(config.vcpus, &kernel)?;
    Ok(Booted {
        vm,
        devices,
        vcpu_fds,
        events_tx,
        events_rx,
    })
}

/// Boots a fresh VM from `config` (whose command line should carry `rkt.warm=1`), waits for
/// guest-init's warm marker, pauses the vCPUs there and saves the VM into `dir`, which must
/// exist. The VM is then discarded.
pub(crate) fn boot_to_snapshot(config: VmConfig, dir: &Path) -> Result<SavedReport, VmmError> {
    let started = Instant::now();
    let Booted {
        vm,
        devices,
        vcpu_fds,
        events_tx,
        events_rx,
    } = build_for_boot(&config)?;
    // While the VMM may still read the files (before the lock-down in Supervisor::start).
    let identity = crate::snapshot::identity_for_save(&config)?;

    let vcpus = Supervisor::start(
        started,
        config.collect_stats,
        &vm,
        &devices,
        vcpu_fds,
        events_tx,
        events_rx,
    )?;
    let first_stop = match vcpus.wait_for_warm_ready() {
        // Pause rather than stop: the threads hand their vCPUs back.
        None => {
            vcpus.request_pause();
            (0, crate::vcpu::VcpuStop::Kicked)
        }
        Some(end) => end,
    };
    let paused = vcpus.pause_requested();
    let stopped = vcpus.stop()?;
    if paused {
        return crate::snapshot::save(dir, &config, identity, &vm, stopped.paused, &devices);
    }
    let outcome = decide_outcome(&first_stop, &devices.console_report())?;
    Err(SnapshotError::EndedBeforeReady(outcome).into())
}

/// Puts back the VM saved in `loaded` with the per-pod devices of `config`, hands guest-init
/// `config.kernel.cmdline` as its parameters, and runs the VM until the guest stops.
pub(crate) fn restore(config: VmConfig, loaded: &Loaded) -> Result<VmReport, VmmError> {
    let started = Instant::now();
    // The command line is not loaded (the guest booted long ago) but must still be valid.
    let (kvm, vm_fd, _cmdline) = open_for(&config)?;
    let vm = crate::snapshot::restore_vm(kvm, vm_fd, loaded)?;
    let (events_tx, events_rx) = mpsc::channel();
    let devices = DeviceManager::restored(&vm, &config, events_tx.clone(), loaded)?;
    let (vcpu_fds, prefault) = crate::snapshot::restore_vcpus(&vm, loaded)?;

    let vcpus = Supervisor::start(
        started,
        config.collect_stats,
        &vm,
        &devices,
        vcpu_fds,
        events_tx,
        events_rx,
    )?;
    let mut handover_error = None;
    let first_stop = if vcpus.all_started() {
        match crate::snapshot::hand_over(&config, loaded) {
            Ok(()) => vcpus.wait_for_end(),
            Err(error) => {
                handover_error = Some(error);
                (0, crate::vcpu::VcpuStop::Kicked)
            }
        }
    } else {
        (0, crate::vcpu::VcpuStop::Kicked)
    };
    let stopped = vcpus.stop()?;
    if let Some(error) = handover_error {
        return Err(error);
    }
    let mut report = finish(&config, &devices, first_stop, stopped)?;
    if let Some(stats) = report.stats.as_mut() {
        stats.snapshot_prefault = Some(prefault);
    }
    Ok(report)
}

/// The start of every build: the host's KVM, a new VM handle, the configuration checked
/// against this host, and the final guest command line.
fn open_for(config: &VmConfig) -> Result<(Kvm, VmFd, String), VmmError> {
    let (kvm, vm_fd) = open_host()?;
    config.validate(kvm.get_max_vcpus())?;
    let cmdline = config.guest_cmdline()?;
    Ok((kvm, vm_fd, cmdline))
}

/// The end of a run to completion: the outcome from the first stop and the console, plus the
/// statistics when asked for.
fn finish(
    config: &VmConfig,
    devices: &DeviceManager,
    first_stop: (u8, crate::vcpu::VcpuStop),
    stopped: Stopped,
) -> Result<VmReport, VmmError> {
    let console = devices.console_report();
    let outcome = decide_outcome(&first_stop, &console)?;
    let stats = stopped.stats(&console, config.mem_mib);
    Ok(VmReport { outcome, stats })
}
