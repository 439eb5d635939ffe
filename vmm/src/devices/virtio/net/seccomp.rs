//! The virtio-net worker's allow-list: frames between the queues and the tap, which was opened
//! and set up (TUNSETIFF, TUNSETVNETHDRSZ, TUNSETVNETLE) before the lock-down; the offloads the
//! driver negotiated are set on activation, on the activating thread (TUNSETOFFLOAD, in
//! `seccomp::rules::device_activation`). No ioctl and no socket of any family here.

use crate::seccomp::rules::{worker_loop, Allow};

/// Answered EACCES rather than run: glibc's malloc opens /proc/sys/vm/overcommit_memory once
/// per process, on whichever thread first shrinks a thread arena (seen on this worker with
/// strace); without it glibc just does not unmap the freed part. Nothing else here opens a file.
pub fn refusals() -> Vec<(i64, i32)> {
    vec![(libc::SYS_openat, libc::EACCES)]
}

/// The worker's calls besides the common ones: one frame per read(2)/write(2) on the tap (a
/// message device; both in the common list, with the eventfds) and its epoll loop.
pub fn rules() -> Vec<Allow> {
    worker_loop()
}
