//! Stopping the VM from another thread once the pod is over (run.rs, "early stop"): when every
//! app's status is in, guest-init has ended the status stream (after ending the apps' leftover
//! processes and syncing the file systems) and every output stream has ended, nothing of the
//! pod is left in the VM, so its VMM process is simply killed instead of waiting for the guest
//! kernel's reboot, which took about 0.2 s of every `rkt run` in the emulated test host.
//!
//! The process is named by a pidfd taken by the thread that started it, before anything could
//! reap it: a signal can never reach another process that reused the number.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The VMM process serving a request, and whether [`VmStopper::stop`] killed it.
#[derive(Debug, Default)]
pub struct VmStopper {
    /// A pidfd of the VMM process while it serves a request.
    serving: Mutex<Option<OwnedFd>>,
    stopped: AtomicBool,
}

impl VmStopper {
    /// Kills the VMM process serving a request, if there is one; the outcome of that request is
    /// then a clean stop ([`VmStopper::take_stopped`]). Only for a pod that is over.
    pub fn stop(&self) {
        let serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pidfd) = &*serving {
            self.stopped.store(true, Ordering::Release);
            kill_through(pidfd);
        }
    }

    /// Records the process now serving a request (`None` once it has ended).
    pub(super) fn set_serving(&self, pidfd: Option<OwnedFd>) {
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = pidfd;
    }

    /// Whether [`VmStopper::stop`] killed the process since the last call.
    pub(super) fn take_stopped(&self) -> bool {
        self.stopped.swap(false, Ordering::AcqRel)
    }
}

/// SIGKILLs the process `pidfd` names. A process that has already ended (and been reaped)
/// gives ESRCH, which changes nothing: the signal never reaches whoever has its number now.
pub(super) fn kill_through(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal with a pidfd we own, no siginfo and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// A pidfd for our child `pid`. Race-free only when called by the thread that waits for the
/// child, before it waits (nothing else can reap it meanwhile).
pub(super) fn pidfd_of_child(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: pidfd_open with a pid and no flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: `fd` is a fresh descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    #[test]
    fn stop_kills_the_serving_process_and_is_reported_once() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let stopper = VmStopper::default();
        // Nothing serving: nothing to kill, nothing reported.
        stopper.stop();
        assert!(!stopper.take_stopped());
        stopper.set_serving(Some(pidfd_of_child(child.id()).unwrap()));
        stopper.stop();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(stopper.take_stopped());
        assert!(!stopper.take_stopped());
        // The process is gone and reaped: the pidfd still names it, so a second stop signals
        // nobody (ESRCH), whatever has the number now.
        stopper.stop();
        stopper.set_serving(None);
    }
}
