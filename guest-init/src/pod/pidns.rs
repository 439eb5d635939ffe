//! The pod's pid namespace: every process of every app (the apps, their event handlers, `enter`
//! commands) runs in one pid namespace of the pod's own, as rkt's pods did, so an app sees the
//! pod's processes and nothing of guest-init's (its control handlers, PID 1 itself).
//!
//! How: guest-init calls `unshare(CLONE_NEWPID)` once. That does not move guest-init; it only
//! makes its *next* child the first process of a new namespace, its init. That child is a
//! minimal reaper ([`reaper`]). guest-init keeps a descriptor of the new namespace and sets its
//! own "namespace for children" back to its own namespace at once, so its control handlers stay
//! outside. Each app process is then forked with the pod namespace selected for that one fork
//! ([`PodPidNamespace::fork_in`]): it lands in the pod's namespace yet stays guest-init's child,
//! so PID 1's wait loop reaps it and reads its status exactly as before. Orphans of the apps go
//! to the reaper (the namespace's init), not to guest-init.
//!
//! Why a reaper rather than making the first app the namespace's init: the namespace's init
//! cannot be killed from inside (the kernel drops every signal from within for which the init
//! has no handler, SIGKILL included) and its death kills the whole namespace. An app as init
//! would turn its exit into the death of every other app, and its own signal handling into
//! everyone's. The reaper has no signal handlers at all, so nothing inside can stop it, and
//! only guest-init (outside) can end it, which it does at the end of the pod.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{ForkResult, Pid};
use thiserror::Error;

use super::appns;

#[derive(Debug, Error)]
pub enum PidNsError {
    #[error(
        "cannot create the pod's pid namespace ({step}: {source}); the guest kernel needs \
         CONFIG_PID_NS"
    )]
    Create {
        step: &'static str,
        source: io::Error,
    },
}

/// The pod's pid namespace, held open by guest-init.
#[derive(Debug)]
pub struct PodPidNamespace {
    /// The namespace itself (`/proc/<reaper>/ns/pid`).
    pod: OwnedFd,
    /// The reaper's pid as guest-init sees it.
    reaper: Pid,
}

impl PodPidNamespace {
    /// Creates the namespace and its reaper. Call once, before any app process exists.
    pub fn create() -> Result<PodPidNamespace, PidNsError> {
        let error = |step| move |source: io::Error| PidNsError::Create { step, source };
        let own = own_namespace().map_err(error("open /proc/self/ns/pid"))?;
        nix::sched::unshare(CloneFlags::CLONE_NEWPID)
            .map_err(|errno| error("unshare(CLONE_NEWPID)")(errno.into()))?;
        // SAFETY: guest-init is single-threaded (main.rs), so the child is a consistent copy;
        // it only runs `reaper`, which never returns.
        let forked = unsafe { nix::unistd::fork() };
        if let Ok(ForkResult::Child) = forked {
            reaper();
        }
        // Whatever happened, guest-init's later children (control handlers) must not land in
        // the pod's namespace.
        let restored = nix::sched::setns(own.as_fd(), CloneFlags::CLONE_NEWPID);
        let reaper_pid = match forked {
            Ok(ForkResult::Parent { child }) => child,
            Ok(ForkResult::Child) => reaper(),
            Err(errno) => return Err(error("fork the reaper")(errno.into())),
        };
        restored.map_err(|errno| error("setns back to guest-init's namespace")(errno.into()))?;
        let pod = File::open(format!("/proc/{reaper_pid}/ns/pid"))
            .map_err(error("open the reaper's namespace"))?;
        Ok(PodPidNamespace {
            pod: pod.into(),
            reaper: reaper_pid,
        })
    }

    /// The reaper's pid (outside the namespace), for messages.
    pub fn reaper(&self) -> Pid {
        self.reaper
    }

    /// A second descriptor of the namespace (for an `enter` handler process).
    pub fn try_clone(&self) -> io::Result<PodPidNamespace> {
        Ok(PodPidNamespace {
            pod: self.pod.try_clone()?,
            reaper: self.reaper,
        })
    }

    /// Forks with the child in the pod's namespace (and in `cgroup`, when given: fork.rs); the
    /// caller's namespace for later children is restored in the parent before this returns.
    ///
    /// # Safety
    /// As for [`super::fork::fork`]: the caller must be single-threaded (guest-init and its
    /// handler processes are).
    pub unsafe fn fork_in(&self, cgroup: Option<BorrowedFd>) -> io::Result<ForkResult> {
        let own = own_namespace()?;
        nix::sched::setns(self.pod.as_fd(), CloneFlags::CLONE_NEWPID)?;
        // SAFETY: the caller guarantees a single-threaded process and keeps to fork.rs's rules.
        let forked = unsafe { super::fork::fork(cgroup) };
        if let Ok(ForkResult::Child) = forked {
            return Ok(ForkResult::Child);
        }
        let restored = nix::sched::setns(own.as_fd(), CloneFlags::CLONE_NEWPID);
        let forked = forked?;
        restored?;
        Ok(forked)
    }
}

/// The caller's own (active) pid namespace: `/proc/self/ns/pid` names the active one, not the
/// one for children.
fn own_namespace() -> io::Result<OwnedFd> {
    Ok(File::open("/proc/self/ns/pid")?.into())
}

/// The pod namespace's init: reaps whatever is re-parented to it, for ever. No signal handler
/// is installed, so the kernel ignores every signal sent from inside the namespace (SIGKILL
/// included); guest-init, outside, ends it with SIGKILL when the pod is over, and the kernel
/// then kills what is left in the namespace.
fn reaper() -> ! {
    // Nothing of guest-init's: no descriptors (app streams, the control listener, the pod
    // share's files), no file system (an app with CAP_SYS_PTRACE could otherwise walk
    // /proc/1/root into guest-init's tree), no name that says more than needed.
    close_inherited_descriptors();
    let _ = nix::sys::prctl::set_name(c"rkt-pod-reaper");
    // SIGCHLD blocked and waited for with sigwait: blocking installs no handler, so the
    // kernel's protection of a namespace's init stays in force for every other signal, and a
    // child that ends between the last waitpid and sigwait stays pending instead of lost.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let _ = chld.thread_block();
    if let Err(error) = appns::isolate_reaper() {
        // Still a working reaper; the app namespaces keep guest-init's tree out of the apps'
        // view in any case. Said on the console, where PID 1's messages go.
        let line = format!("rkt-guest-init: pod reaper: cannot empty its root: {error}\n");
        if let Ok(mut console) = crate::console::open_console() {
            let _ = io::Write::write_all(&mut console, line.as_bytes());
        }
        let _ = nix::unistd::chdir("/");
    }
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let _ = chld.wait();
    }
}

fn close_inherited_descriptors() {
    // SAFETY: close_range takes plain integers; closing every descriptor from 3 up only
    // affects this (freshly forked) process, which holds no Rust objects owning them that it
    // will use again (it never returns).
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0;
    if !done {
        for fd in 3..1024 {
            let _ = nix::unistd::close(fd);
        }
    }
    // stdin, stdout, stderr onto /dev/null: the console belongs to guest-init's messages.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child of the test (it must own its process tree): the namespace is made,
    /// a process forked into it is pid 2 there (the reaper is 1) and still our child.
    #[test]
    fn children_land_in_the_pod_namespace_and_stay_ours() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        crate::pod::testutil::in_child(|| {
            let ns = PodPidNamespace::create().map_err(|e| e.to_string())?;
            // SAFETY: the test child is single-threaded (forked from the test thread).
            match unsafe { ns.fork_in(None) }.map_err(|e| e.to_string())? {
                ForkResult::Child => {
                    // Our pid inside the namespace.
                    let code = if nix::unistd::getpid().as_raw() == 2 {
                        0
                    } else {
                        3
                    };
                    // SAFETY: ends the grandchild without running the test harness's exit code.
                    unsafe { libc::_exit(code) }
                }
                ForkResult::Parent { child } => {
                    let status = waitpid(child, None).map_err(|e| e.to_string())?;
                    let _ = nix::sys::signal::kill(ns.reaper(), Signal::SIGKILL);
                    let _ = waitpid(ns.reaper(), None);
                    match status {
                        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                        other => Err(format!("grandchild: {other:?}")),
                    }
                }
            }
        });
    }
}
