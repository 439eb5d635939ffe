//! Snapshots of a booted, idle guest and restores from them (warm start).
//!
//! Saving (`rkt-vmm --snapshot-to DIR`): the VM boots cold with guest-init in warm mode
//! (`rkt.warm=1`); when guest-init prints its warm marker it is listening on vsock port 2 and
//! waiting. The VMM then pauses every vCPU (each completes the I/O it exited for), stops every
//! device worker, refuses devices that are not idle, and writes `DIR/memory` (guest RAM,
//! sparse) and `DIR/state` (versioned, checksummed: see `format`). That VM is then discarded.
//!
//! Restoring (`rkt-vmm --restore-from DIR`): the state file is read and checked (identity of
//! kernel, initramfs, VMM build and VM shape, then the host's CPUID per vCPU), guest RAM is
//! the memory file mapped private and copy-on-write, KVM and device state is put back, the
//! vCPUs resume, and the VMM hands guest-init its parameters, the wall clock and fresh entropy
//! over vsock (`handover`). Everything per pod (the shares' host directories and inode caps,
//! the vsock socket path and the host ports the guest may reach, the console file and its
//! cap) comes from the restoring `VmConfig`, never from the snapshot.
//!
//! "Idle" is what makes the device part small: a snapshot is refused if a virtio-fs device
//! ever served a request (a share was mounted) or the vsock device ever carried a packet, so
//! no FUSE session or connection needs saving; the devices restart fresh with their rings where
//! they stood. A NIC must not have carried a frame either; the restored guest keeps the MAC
//! it read at boot, which guest-init replaces with the pod's (`rkt/network.json`'s `bootMac`).

mod format;
mod handover;
mod identity;
mod kvm_state;
mod memory_file;
mod prefault;
mod tsc;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;

pub use format::{SnapshotState, FORMAT_VERSION, MAGIC};

/// Hook for the fuzz targets in `fuzz/` (not an API of the VMM): the state file's reader and
/// validator, which `load` runs on a file that may have been tampered with.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::format::{file_bytes, read_state, write_state, HEADER_LEN};
    pub use super::kvm_state::saved_cpuid;
}
pub use handover::{HandoverMessage, ENTROPY_BYTES, HANDOVER_PORT, MAX_HANDOVER_LEN};
pub use prefault::Prefault;

use crate::builder::{VmOutcome, VmReport};
use crate::config::VmConfig;
use crate::device_manager::DeviceManager;
use crate::devices::virtio::mmio::TransportRestoreError;
use crate::devices::virtio::{TransportState, VirtioKind};
use crate::error::VmmError;
use crate::memory::{GuestRam, RamLayout};
use crate::vcpu::{VcpuStop, VmEvent};
use crate::vm::Vm;
use format::{DeviceStates, SerialSnapshot};

/// The state file inside a snapshot directory.
pub const STATE_FILE: &str = "state";
/// The memory file inside a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

const MIB: u64 = 1 << 20;

/// Why a snapshot could not be made or used. Each message names the fix.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// Reading or writing a snapshot file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a state file at all.
    #[error("{} is not a snapshot state file: point --restore-from at a directory made by --snapshot-to", .0.display())]
    NotASnapshot(PathBuf),
    /// Another format version.
    #[error("the snapshot has format version {0}, this VMM reads version {FORMAT_VERSION}: make a new snapshot with --snapshot-to")]
    FormatVersion(u32),
    /// Shorter or longer than its header says.
    #[error("{} is truncated or has trailing bytes: make a new snapshot with --snapshot-to", .0.display())]
    Truncated(PathBuf),
    /// The checksum does not match.
    #[error("{} is corrupted (checksum mismatch): make a new snapshot with --snapshot-to", .0.display())]
    Checksum(PathBuf),
    /// Checksummed but still inconsistent (or unencodable).
    #[error("the snapshot is corrupted: {0}: make a new snapshot with --snapshot-to")]
    Corrupt(String),
    /// The memory file has the wrong size.
    #[error("{} is {len} bytes but the VM has {expected} bytes of memory: the snapshot is truncated or from another VM; make a new one with --snapshot-to", .path.display())]
    MemorySize {
        /// The memory file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The VM's RAM.
        expected: u64,
    },
    /// Made for another kernel, initramfs, VMM build or VM shape.
    #[error("the snapshot was made with another {what} ({saved}, this VM: {now}): restore it with the same {what}, or make a new snapshot with --snapshot-to")]
    Mismatch {
        /// What differs.
        what: &'static str,
        /// The snapshot's.
        saved: String,
        /// The restoring VM's.
        now: String,
    },
    /// This host would give a vCPU another CPUID.
    #[error("the snapshot was made on a host with another CPU (vCPU {0} would see different CPUID): make a new snapshot on this host")]
    HostCpu(u8),
    /// The TSC frequency cannot be matched.
    #[error("the snapshot's guest TSC runs at {saved} kHz, this host's at {host} kHz and KVM cannot scale it: make a new snapshot on this host")]
    TscFrequency {
        /// The snapshot's.
        saved: u32,
        /// This host's.
        host: u32,
    },
    /// The restored TSC did not take.
    #[error("KVM did not put the guest's TSC back (saved {saved}, now {restored}): the guest's timers would be late; the snapshot cannot be used on this host")]
    Tsc {
        /// The snapshot's.
        saved: u64,
        /// What the vCPU reads after the restore.
        restored: u64,
    },
    /// KVM refused an MSR.
    #[error("KVM refused to restore MSR {0:#x}: make a new snapshot on this host")]
    Msr(u32),
    /// A KVM state ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// A device's saved state does not fit the device.
    #[error("virtio device {slot}: {source}: make a new snapshot with --snapshot-to")]
    Device {
        /// Its slot.
        slot: usize,
        /// Why.
        source: TransportRestoreError,
    },
    /// A device was in use at the snapshot point.
    #[error("cannot snapshot: {0}; snapshot a guest that is idle (guest-init in warm mode, rkt.warm=1, before any share is mounted)")]
    NotIdle(String),
    /// Warm mode needs vsock.
    #[error("a warm snapshot is handed its parameters over vsock: pass --vsock PATH")]
    NeedsVsock,
    /// The guest ended before its warm marker.
    #[error("the guest ended ({0:?}) before guest-init said it was ready for a snapshot: boot it with rkt.warm=1 on the command line")]
    EndedBeforeReady(VmOutcome),
    /// A vCPU could not be paused.
    #[error("vCPU {0} could not be paused for the snapshot")]
    PauseFailed(usize),
    /// The handover to guest-init failed.
    #[error("warm handover to guest-init failed: {0}")]
    Handover(String),
}

impl SnapshotError {
    /// Wraps an I/O error on the snapshot file `path` (for `map_err`).
    pub fn io(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + Copy + '_ {
        move |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A snapshot read and checked against the restoring VM.
pub struct Loaded {
    /// The state file's contents.
    pub state: SnapshotState,
    /// The UART state in vm-superio's form.
    pub serial: vm_superio::serial::SerialState,
    /// The memory file, mapped by `restore_vm`.
    memory: File,
}

/// What saving wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedReport {
    /// The directory.
    pub dir: PathBuf,
    /// Bytes of guest RAM written (the rest are holes).
    pub memory_bytes: u64,
    /// Size of the state file.
    pub state_bytes: u64,
}

/// Boots `config` (whose command line should carry `rkt.warm=1`), waits for guest-init's
/// warm marker and saves the VM into `dir` (created if missing).
pub fn snapshot_to(config: VmConfig, dir: &Path) -> Result<SavedReport, VmmError> {
    identity::shape_of(&config)?;
    if config.vsock.is_none() {
        return Err(SnapshotError::NeedsVsock.into());
    }
    std::fs::create_dir_all(dir).map_err(SnapshotError::io(dir))?;
    crate::builder::boot_to_snapshot(config, dir)
}

/// Restores the snapshot in `dir` with the per-pod devices of `config`, hands guest-init
/// `config.kernel.cmdline` as its parameters, and runs the VM to its end.
pub fn restore_from(config: VmConfig, dir: &Path) -> Result<VmReport, VmmError> {
    let loaded = load(&config, dir)?;
    crate::builder::restore(config, &loaded)
}

/// Reads the snapshot in `dir` and checks it against `config`.
pub fn load(config: &VmConfig, dir: &Path) -> Result<Loaded, SnapshotError> {
    if config.vsock.is_none() {
        return Err(SnapshotError::NeedsVsock);
    }
    let state = format::read_state(&dir.join(STATE_FILE))?;
    let current = identity::identity_of(config, "", Some(&state.identity))?;
    identity::check(&state.identity, &current)?;
    let memory = memory_file::open_memory(&dir.join(MEMORY_FILE), config.mem_mib * MIB)?;
    let serial = state.devices.serial.to_state();
    Ok(Loaded {
        state,
        serial,
        memory,
    })
}

/// The VM of a restore: RAM from the memory file, interrupt controllers and PIT as saved.
pub(crate) fn restore_vm(kvm: Kvm, vm_fd: VmFd, loaded: &Loaded) -> Result<Vm, VmmError> {
    let layout = RamLayout::new(loaded.state.identity.shape.mem_mib * MIB);
    let ram = GuestRam::from_file(layout, &loaded.memory)?;
    let vm = Vm::with_ram(kvm, vm_fd, layout, ram)?;
    kvm_state::restore_vm_devices(&vm.fd, &loaded.state.vm)?;
    Ok(vm)
}

/// The vCPUs of a restore, each checked to get the CPUID it had, then the kvmclock; last, the
/// memory file's data mapped ahead of the guest where KVM can (`prefault`).
pub(crate) fn restore_vcpus(vm: &Vm, loaded: &Loaded) -> Result<(Vec<VcpuFd>, Prefault), VmmError> {
    let count = loaded.state.identity.shape.vcpus;
    let mut fds = Vec::with_capacity(usize::from(count));
    let mut tsc = loaded
        .state
        .vcpus
        .first()
        .and_then(kvm_state::saved_tsc)
        .map(tsc::TscRestore::new);
    for (index, state) in loaded.state.vcpus.iter().enumerate() {
        let index = index as u8;
        let cpuid = vm.vcpu_cpuid(index, count)?;
        let saved = kvm_state::saved_cpuid(state)?;
        if !same_cpuid(cpuid.as_slice(), &saved) {
            return Err(SnapshotError::HostCpu(index).into());
        }
        let vcpu = vm
            .fd
            .create_vcpu(u64::from(index))
            .map_err(VmmError::kvm("KVM_CREATE_VCPU"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(VmmError::kvm("KVM_SET_CPUID2"))?;
        kvm_state::restore_vcpu(&vcpu, state, tsc.as_mut())?;
        fds.push(vcpu);
    }
    kvm_state::restore_clock(&vm.fd, &loaded.state.vm)?;
    let prefault = match fds.first() {
        Some(vcpu) => prefault::map_ahead(&vm.fd, vcpu, &loaded.memory, vm.layout),
        None => Prefault::Unsupported,
    };
    Ok((fds, prefault))
}

fn same_cpuid(a: &[kvm_bindings::kvm_cpuid_entry2], b: &[kvm_bindings::kvm_cpuid_entry2]) -> bool {
    let key = |e: &kvm_bindings::kvm_cpuid_entry2| {
        (e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

/// Waits for guest-init's warm marker: `None` when it came, else how the VM ended first.
pub(crate) fn wait_for_warm_ready(events: &Receiver<VmEvent>) -> Option<(u8, VcpuStop)> {
    match events.recv() {
        Ok(VmEvent::WarmReady) => None,
        Ok(VmEvent::VcpuStopped(index, stop)) => Some((index, stop)),
        // The console report says "panic"; stop the VM now.
        Ok(VmEvent::KernelPanic) | Err(_) => Some((0, VcpuStop::Kicked)),
    }
}

/// Sends guest-init its parameters (the restoring config's command line).
pub(crate) fn hand_over(config: &VmConfig, _loaded: &Loaded) -> Result<(), VmmError> {
    let vsock = config.vsock.as_ref().ok_or(SnapshotError::NeedsVsock)?;
    handover::send(&vsock.uds_path, config.kernel.cmdline.trim())?;
    Ok(())
}

/// Refuses a device that was used before the snapshot point (see the module comment).
fn check_idle(config: &VmConfig, states: &[TransportState]) -> Result<(), SnapshotError> {
    for (kind, state) in config.virtio_devices().into_iter().zip(states) {
        let used = state.queues.iter().any(|q| q.used_idx != 0);
        match kind {
            VirtioKind::Rng => {}
            VirtioKind::Fs(i) => {
                let requested = state.queues.iter().any(|q| q.avail_idx != 0);
                if used || requested {
                    let tag = config.shares.get(i).map_or("?", |s| s.tag.as_str());
                    return Err(SnapshotError::NotIdle(format!(
                        "the share {tag:?} was mounted (it served requests)"
                    )));
                }
            }
            VirtioKind::Vsock => {
                // Queue 1 is the guest's transmit queue: anything offered there is traffic.
                let sent = state.queues.get(1).is_some_and(|q| q.avail_idx != 0);
                if used || sent {
                    return Err(SnapshotError::NotIdle(
                        "vsock carried traffic (a connection was made)".into(),
                    ));
                }
            }
            VirtioKind::Net(_) => {
                // Queue 1 is transmit. Receive buffers the driver posted but the device never
                // filled are fine: they wait in the ring for the restored device.
                let sent = state.queues.get(1).is_some_and(|q| q.avail_idx != 0);
                if used || sent {
                    return Err(SnapshotError::NotIdle(
                        "a NIC carried traffic (an interface was brought up)".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What a snapshot of `config` records about the files and the VMM it was made from. Taken
/// before the VM runs: a jailed VMM cannot read the kernel and initramfs any more once its
/// threads have dropped their privileges (they are root's, 0600, in the snapshot directory).
pub(crate) fn identity_for_save(config: &VmConfig) -> Result<format::Identity, VmmError> {
    Ok(identity::identity_of(
        config,
        &config.guest_cmdline()?,
        None,
    )?)
}

/// Saves the paused VM into `dir`; `identity` is [`identity_for_save`]'s, taken at boot.
pub(crate) fn save(
    dir: &Path,
    config: &VmConfig,
    identity: format::Identity,
    vm: &Vm,
    paused: Vec<Option<VcpuFd>>,
    devices: &DeviceManager,
) -> Result<SavedReport, VmmError> {
    let mut vcpus = Vec::with_capacity(paused.len());
    for (index, fd) in paused.into_iter().enumerate() {
        vcpus.push(fd.ok_or(SnapshotError::PauseFailed(index))?);
    }
    // Devices first: after this no worker touches guest memory.
    let virtio = devices.quiesce_virtio();
    check_idle(config, &virtio)?;

    let msr_indexes = vm
        .kvm
        .get_msr_index_list()
        .map_err(VmmError::kvm("KVM_GET_MSR_INDEX_LIST"))?;
    let count = config.vcpus;
    let mut vcpu_states = Vec::with_capacity(vcpus.len());
    for (index, vcpu) in vcpus.iter().enumerate() {
        let cpuid = vm.vcpu_cpuid(index as u8, count)?;
        vcpu_states.push(kvm_state::save_vcpu(vcpu, &cpuid, msr_indexes.as_slice())?);
    }
    let vm_state = kvm_state::save_vm(&vm.fd)?;
    let devices = DeviceStates {
        serial: SerialSnapshot::from_state(&devices.serial_state()),
        i8042: devices.i8042_state(),
        virtio,
    };
    let state = SnapshotState {
        identity,
        vm: vm_state,
        vcpus: vcpu_states,
        devices,
    };

    // The state file is what makes a directory a snapshot: remove an old one first, so that a
    // crash while the new memory is written never pairs old state with new memory.
    let state_path = dir.join(STATE_FILE);
    match std::fs::remove_file(&state_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(SnapshotError::io(&state_path)(e).into())
        }
        _ => {}
    }
    let memory_bytes = memory_file::write_memory(&dir.join(MEMORY_FILE), &vm.ram.memory)?;
    let state_bytes = format::write_state(&state_path, &state)?;
    Ok(SavedReport {
        dir: dir.to_path_buf(),
        memory_bytes,
        state_bytes,
    })
}
