//! The vCPU threads' allow-list: KVM_RUN and what its exits do on this thread (the legacy
//! devices, the console, every virtio transport's registers, and the device activations and
//! resets the driver's MMIO writes trigger).

use super::kvm_ioctls;
use super::rules::{device_activation, Allow};

/// The vCPU thread's calls besides the common ones.
pub fn rules() -> Vec<Allow> {
    use libc::*;
    let mut rules = vec![
        // Running the guest; no other vCPU ioctl after the lock-down.
        Allow::arg_in(SYS_ioctl, 1, &kvm_ioctls::vcpu_run()),
        // The serial console to a log file: RotatingFile renames it to FILE.1 (glibc's rename
        // is SYS_rename on x86_64; the *at forms for other C libraries) and creates a fresh
        // FILE (openat with O_CREAT|O_EXCL, in the activation list) once it is full.
        Allow::always(SYS_rename),
        Allow::always(SYS_renameat),
        Allow::always(SYS_renameat2),
        // The kick signal's handler returns through rt_sigreturn (common); a stopped VM's
        // counters are sent to the main thread over a channel (futex, common).
    ];
    rules.extend(device_activation());
    rules
}
