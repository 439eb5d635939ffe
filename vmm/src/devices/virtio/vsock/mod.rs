//! virtio-vsock: guest sockets bridged to a host unix socket per VM (in progress).
