//! The virtio-vsock worker's allow-list: packets between the queues and the host's Unix
//! sockets (the listener at the VM's socket path, and outgoing connections to the registered
//! `<path>_<port>` sockets, opened O_PATH and connected through /proc/self/fd).

use crate::seccomp::rules::{worker_loop, Allow};

/// The worker's calls besides the common ones.
pub fn rules() -> Vec<Allow> {
    use libc::*;
    let mut rules = worker_loop();
    rules.extend([
        // Host connections to the guest arrive on the listener (created before the lock-down)
        // and are made non-blocking (FIONBIO).
        Allow::always(SYS_accept4),
        Allow::arg_in(SYS_ioctl, 1, &[FIONBIO]),
        // Guest connections to host ports: Unix stream sockets only, connected through
        // /proc/self/fd to the port socket opened O_PATH|O_NOFOLLOW in the socket directory
        // and checked (fstat) to be a socket.
        Allow::arg_in(SYS_socket, 0, &[AF_UNIX as u64]),
        Allow::always(SYS_connect),
        Allow::always(SYS_openat),
        Allow::always(SYS_fstat),
        Allow::always(SYS_newfstatat),
        // Data to the host with MSG_NOSIGNAL (send), from it with recv (std's UnixStream
        // read); half-closes.
        Allow::always(SYS_sendto),
        Allow::always(SYS_recvfrom),
        Allow::always(SYS_shutdown),
    ]);
    rules
}
