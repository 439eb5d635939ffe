//! The virtio-vsock worker's allow-list: packets between the queues and the host's Unix
//! sockets (the listener at the VM's socket path, and outgoing connections to the registered
//! `<path>_<port>` sockets, opened O_PATH and connected through /proc/self/fd).

use crate::seccomp::rules::{worker_loop, Allow};

/// The worker's calls besides the common ones.
pub fn rules() -> Vec<Allow> {
    use libc::*;
    let mut rules = worker_loop();
    rules.extend([
        // Host connections to the guest arrive on the listener (created before the lock-down).
        Allow::always(SYS_accept4),
        Allow::always(SYS_accept),
        // Guest connections to host ports: Unix stream sockets only.
        Allow::arg_in(SYS_socket, 0, &[AF_UNIX as u64]),
        Allow::always(SYS_connect),
        // The port socket is looked up O_PATH|O_NOFOLLOW in the socket directory, checked to
        // be a socket.
        Allow::always(SYS_openat),
        Allow::always(SYS_fstat),
        Allow::always(SYS_newfstatat),
        Allow::always(SYS_statx),
        // Data both ways; half-closes; the result of a non-blocking connect.
        Allow::always(SYS_sendto),
        Allow::always(SYS_recvfrom),
        Allow::always(SYS_sendmsg),
        Allow::always(SYS_recvmsg),
        Allow::always(SYS_shutdown),
        Allow::always(SYS_getsockopt),
        Allow::always(SYS_setsockopt),
        Allow::arg_in(
            SYS_fcntl,
            1,
            &[
                F_GETFL as u64,
                F_SETFL as u64,
                F_GETFD as u64,
                F_SETFD as u64,
            ],
        ),
        Allow::arg_in(SYS_ioctl, 1, &[FIONBIO as u64, FIOCLEX as u64]),
    ]);
    rules
}
