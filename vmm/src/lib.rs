//! The micro-VM monitor: one [`VmConfig`] in, one finished VM out.
//!
//! Built on the rust-vmm crates (kvm-ioctls, vm-memory, linux-loader, vm-superio) in the manner
//! of rust-vmm's reference VMM: `config` (what the VM looks like), `host_checks` (can this host
//! run it), `memory` (guest RAM), `arch` (x86_64 boot state), `kernel` (kernel + initramfs),
//! `vm` (KVM VM setup), `vcpu` (vCPU threads), `devices` (buses, serial, i8042, CMOS, the
//! virtio devices and their transport), `device_manager` (creating and attaching a VM's
//! devices, fresh or from a snapshot), `builder` (one entry point per way a VM starts, boot or
//! restore, running it and deciding the outcome), `snapshot` (saving and restoring),
//! `stats` (`--stats`), `log_file` (a size-capped, rotating log file for guest-controlled
//! output).

pub mod arch;
pub mod builder;
pub mod config;
pub mod device_manager;
pub mod devices;
pub mod error;
pub mod host_checks;
pub mod kernel;
pub mod log_file;
pub mod memory;
pub mod sandbox;
pub mod seccomp;
pub mod snapshot;
pub mod stats;
pub mod vcpu;
pub mod vm;

pub use builder::{run, run_measured, VmOutcome, VmReport, EXIT_VMM_ERROR};
pub use config::{KernelConfig, SerialOutput, ShareConfig, VmConfig, VsockConfig};
pub use error::VmmError;
pub use host_checks::{check_host, check_host_early, HostCheckError};
