//! The lines guest-init prints on the serial console for the VMM, which scans for them
//! (`vmm::devices::legacy::console_scan`). The console is guest output: the VMM only uses a
//! marker to tell how the guest ended (a pod's statuses come over vsock, `status`).

/// Followed by the pod's (or command's) exit status and a newline, just before power-off.
pub const EXIT_MARKER: &str = "rkt-guest-init: exit-status=";
/// Alone on a line: a warm-mode guest waits for its handover (the snapshot point).
pub const WARM_MARKER: &str = "rkt-guest-init: warm-ready";
