//! The main thread's allow-list, once the VM runs: it waits for the end, kicks and joins the
//! vCPUs, reads the `--stats` counters, hands the parameters over on a warm start, saves a
//! snapshot, and tears the devices down.

use super::kvm_ioctls;
use super::rules::{device_activation, Allow, Cond};

/// The main thread's calls besides the common ones; `pid` is the VMM's process ID (the kick
/// goes to this process's threads only).
pub fn rules(pid: u32) -> Vec<Allow> {
    use libc::*;
    let mut rules = vec![
        // Kicking the vCPU threads out of KVM_RUN with the kick signal (pthread_kill), and
        // glibc's abort.
        Allow::when_all(SYS_tgkill, &[Cond::eq(0, u64::from(pid))]),
        // A snapshot reads the paused vCPUs' and the VM's state.
        Allow::arg_in(SYS_ioctl, 1, &kvm_ioctls::snapshot_reads()),
        // --stats: the binary stats descriptors (opened before the lock-down) and rusage.
        Allow::always(SYS_pread64),
        Allow::always(SYS_lseek),
        Allow::always(SYS_getrusage),
        // A snapshot's directory: `state` and `memory` written to temporary files, synced
        // and renamed into place.
        Allow::always(SYS_mkdir),
        Allow::always(SYS_mkdirat),
        Allow::always(SYS_pwrite64),
        Allow::always(SYS_ftruncate),
        Allow::always(SYS_fsync),
        Allow::always(SYS_rename),
        Allow::always(SYS_renameat),
        Allow::always(SYS_renameat2),
        Allow::always(SYS_unlink),
        Allow::always(SYS_unlinkat),
        Allow::arg_in(
            SYS_fcntl,
            1,
            &[F_GETFD as u64, F_SETFD as u64, F_GETFL as u64],
        ),
        // The warm-start handover: a Unix socket to the vsock device's host side, with
        // timeouts.
        Allow::arg_in(SYS_socket, 0, &[AF_UNIX as u64]),
        Allow::always(SYS_connect),
        Allow::always(SYS_setsockopt),
        Allow::always(SYS_sendto),
        Allow::always(SYS_recvfrom),
        Allow::always(SYS_shutdown),
        Allow::always(SYS_poll),
        Allow::always(SYS_ppoll),
    ];
    // A restore activates the devices on this thread; the end of the VM resets them.
    rules.extend(device_activation());
    rules
}
