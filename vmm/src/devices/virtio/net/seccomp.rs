//! The virtio-net worker's allow-list: frames between the queues and the tap, which was opened
//! (and set up with TUNSETIFF, TUNSETVNETHDRSZ, TUNSETVNETLE) before the lock-down. No socket
//! of any family: the VMM's network namespace is empty but for the tap.

use crate::seccomp::rules::{worker_loop, Allow};

/// The worker's calls besides the common ones.
pub fn rules() -> Vec<Allow> {
    use libc::*;
    let mut rules = worker_loop();
    rules.extend([
        // One frame per call (the tap is a message device), header and data from the guest's
        // descriptor chain in place.
        Allow::always(SYS_readv),
        Allow::always(SYS_writev),
        // The offloads the driver negotiated (a reset and renegotiation can change them), and
        // how many bytes the next frame holds.
        Allow::arg_in(SYS_ioctl, 1, &[TUNSETOFFLOAD as u64, FIONREAD as u64]),
    ]);
    rules
}
