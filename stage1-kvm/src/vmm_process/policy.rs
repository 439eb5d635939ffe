//! How each kind of VMM thread is confined (the `vmm::sandbox::Policy` of the jailed VMM).
//!
//! | thread kind | uid/gid | capabilities | seccomp |
//! |---|---|---|---|
//! | main, vCPU, virtio-net, virtio-vsock, virtio-rng | the pod's own (`jail::PodIds`) | none | its kind's list |
//! | spawner, virtio-fs | 0 | [`FILE_SERVER_CAPS`] only | its kind's list (the spawner's: the union) |
//!
//! The virtio-fs threads keep uid 0 because passthrough creates files as the guest's uids
//! (it switches its own thread's euid/egid per request) and changes owners and modes in the
//! shares. They get no capability beyond that: not CAP_MKNOD (a device node in a share could
//! reach a host disk; the jail's share mounts are nodev anyway), not CAP_DAC_READ_SEARCH
//! (open_by_handle_at escapes a bind mount), nothing of CAP_SYS_*. The spawner creates every
//! thread after lock-down, so it holds the most any thread needs and no more.

use std::os::fd::OwnedFd;

use caps::{Capability, CapsHashSet};
use nix::sched::{setns, CloneFlags};
use vmm::sandbox::{Policy, ThreadKind};
use vmm::seccomp::Mismatch;

use jail::PodIds;

/// The capabilities virtio-fs passthrough needs: owners (CHOWN), permission checks as the
/// guest sees them (DAC_OVERRIDE, FOWNER), keeping set-id bits on writes the guest's root makes
/// (FSETID), and switching the thread's ids to the guest caller's (SETUID, SETGID).
pub const FILE_SERVER_CAPS: [Capability; 6] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
];

/// The file server's capabilities as a set.
pub fn file_server_caps() -> CapsHashSet {
    FILE_SERVER_CAPS.into_iter().collect()
}

/// Whether threads of `kind` keep uid 0 and [`FILE_SERVER_CAPS`].
pub fn keeps_file_caps(kind: ThreadKind) -> bool {
    matches!(kind, ThreadKind::Spawner | ThreadKind::Fs)
}

/// The jailed VMM's policy.
pub struct JailPolicy {
    pub ids: PodIds,
    pub max_open_files: u64,
    /// What a thread's seccomp filter does with a call outside its list.
    pub seccomp: Mismatch,
    /// The VM's vsock socket (bound by the VMM while still root): the warm-start hand-over
    /// connects to it from the main thread after the drop.
    pub vsock_socket: Option<std::path::PathBuf>,
    /// `--debug`'s timing origin (see `Request::debug_timing_origin`).
    pub debug_timing_origin: Option<f64>,
    /// The empty network namespace the process moves to at lock-down (made before the
    /// request came, off the pod's start-up path).
    pub empty_netns: OwnedFd,
}

impl JailPolicy {
    fn mark(&self, what: &str) {
        if let Some(origin) = self.debug_timing_origin {
            crate::timing::mark_since(origin, what);
        }
    }
}

impl Policy for JailPolicy {
    fn lock_down_process(&self) -> Result<(), String> {
        self.mark("jailed VMM process: VM built, locking down");
        // The taps are open: from here on no thread needs a network namespace with anything
        // in it (threads started before, on a restore, stay behind, with no network rights).
        setns(&self.empty_netns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("leaving the pod's network namespace: {e}"))?;
        // After the devices: virtio-fs raised the limit for itself while still root.
        jail::rlimits::limit_open_files(self.max_open_files).map_err(|e| e.to_string())?;
        if let Some(socket) = &self.vsock_socket {
            std::os::unix::fs::chown(socket, Some(self.ids.uid), Some(self.ids.gid))
                .map_err(|e| format!("handing {} to the VMM's uid: {e}", socket.display()))?;
        }
        jail::rlimits::no_core_dumps().map_err(|e| e.to_string())
    }

    fn enter(&self, kind: ThreadKind) -> Result<(), String> {
        if keeps_file_caps(kind) {
            jail::thread_caps::limit_thread(&file_server_caps()).map_err(|e| e.to_string())?;
        } else {
            jail::ids::become_ids(self.ids).map_err(|e| e.to_string())?;
        }
        vmm::seccomp::apply_with(kind, self.seccomp).map_err(|e| e.to_string())?;
        if kind == ThreadKind::Main {
            self.mark("jailed VMM process: locked down, starting the vCPUs");
        }
        Ok(())
    }
}
