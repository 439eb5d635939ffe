//! virtio-fs: a FUSE server in the VMM serving one host directory to the guest (in progress).
