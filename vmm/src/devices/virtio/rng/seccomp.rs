//! The virtio-rng worker's allow-list: besides the common calls and its epoll loop, only the
//! host's entropy.

use crate::seccomp::rules::{worker_loop, Allow};

/// Answered EACCES rather than run: glibc's malloc opens /proc/sys/vm/overcommit_memory once
/// per process, on whichever thread first shrinks a thread arena (see net's list).
pub fn refusals() -> Vec<(i64, i32)> {
    vec![(libc::SYS_openat, libc::EACCES)]
}

/// The worker's calls besides the common ones.
pub fn rules() -> Vec<Allow> {
    let mut rules = worker_loop();
    // The guest's buffers are filled from the host's getrandom (common lists it for std's
    // HashMap keys too; listed here because this device exists for it).
    rules.push(Allow::always(libc::SYS_getrandom));
    rules
}
