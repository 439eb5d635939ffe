//! The VMM's error type: anything that keeps a VM from starting or running. Each message is
//! one line naming the problem and, where the user can act, the fix. Exit status 254.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::arch::x86_64::BootError;
use crate::config::ConfigError;
use crate::devices::bus::BusOverlap;
use crate::devices::virtio::fs::FsError;
use crate::devices::virtio::net::NetError;
use crate::devices::virtio::vsock::VsockError;
use crate::devices::virtio::VirtioKind;
use crate::host_checks::HostCheckError;
use crate::memory::MemoryError;

/// Why the VMM could not start or run the VM.
#[derive(Debug, Error)]
pub enum VmmError {
    /// The host cannot run VMs.
    #[error(transparent)]
    Host(#[from] HostCheckError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kernel file cannot be read.
    #[error("cannot read kernel {}: {source}: check the --kernel path", .path.display())]
    KernelUnreadable {
        /// The kernel path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The kernel file is something else.
    #[error("{} is not a Linux kernel (expected an ELF vmlinux with a PVH note or a bzImage): pass the kernel build's vmlinux or arch/x86/boot/bzImage", .0.display())]
    NotAKernel(PathBuf),
    /// linux-loader refused the kernel.
    #[error("cannot load kernel {}: {reason}: rebuild it for x86_64", .path.display())]
    KernelLoad {
        /// The kernel path.
        path: PathBuf,
        /// linux-loader's complaint.
        reason: String,
    },
    /// The initramfs cannot be read.
    #[error("cannot read initramfs {}: {source}: check the --initrd path", .path.display())]
    InitrdUnreadable {
        /// The initramfs path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Kernel plus initramfs do not fit.
    #[error("memory too small for kernel and initramfs: need at least {need_mib} MiB (have {have_mib} MiB): pass a larger --mem")]
    MemoryTooSmall {
        /// The smallest memory size that fits.
        need_mib: u64,
        /// What was configured.
        have_mib: u64,
    },
    /// The command line does not fit what this kernel accepts.
    #[error(
        "the kernel command line is {len} bytes but this kernel accepts at most {max}: shorten it"
    )]
    CmdlineTooLongForKernel {
        /// Its length.
        len: usize,
        /// The kernel's `cmdline_size`.
        max: usize,
    },
    /// Guest memory setup failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Boot structures or vCPU state could not be set.
    #[error("cannot prepare the guest's boot state: {0}")]
    Boot(#[from] BootError),
    /// A VM-level KVM ioctl failed.
    #[error("{what} failed: {source}: check the kernel log (dmesg) for kvm errors")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Device wiring failed (a VMM bug).
    #[error("device setup failed: {0}")]
    Devices(#[from] BusOverlap),
    /// A virtio-fs share refused its configuration (the device's message names the fix).
    #[error("share {tag:?}: {source}")]
    Fs {
        /// The share's tag.
        tag: String,
        /// Why the device refused.
        source: FsError,
    },
    /// The vsock device refused its configuration (its message names the fix).
    #[error("vsock: {0}")]
    Vsock(#[source] VsockError),
    /// A NIC could not be attached to its tap (its message names the fix).
    #[error("virtio-net: {source}")]
    Net {
        /// The tap it was to be attached to.
        tap: String,
        /// Why the device refused.
        source: NetError,
    },
    /// The device manager was asked for a device the configuration does not describe.
    #[error("virtio device {0:?}: not in the configuration (a VMM bug)")]
    DeviceNotConfigured(VirtioKind),
    /// The serial output file cannot be created.
    #[error("cannot create serial output file {}: {source}: check the --serial path", .path.display())]
    SerialFile {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An eventfd or thread could not be created.
    #[error("cannot {what}: {source}: the host is short of resources")]
    HostResource {
        /// What we were doing.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// Saving or restoring a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// `KVM_RUN` itself failed.
    #[error("vCPU {index}: KVM_RUN failed: {source}")]
    VcpuRun {
        /// The vCPU.
        index: u8,
        /// The errno.
        source: kvm_ioctls::Error,
    },
}

impl VmmError {
    /// Shorthand for a failed VM ioctl.
    pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |source| VmmError::Kvm { what, source }
    }
}
