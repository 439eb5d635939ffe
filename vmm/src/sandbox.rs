//! Where the VMM's threads meet the jail.
//!
//! Every thread of the VMM has a kind ([`ThreadKind`]) and is started by [`spawn`]. Without a
//! [`Policy`] (unit tests, `rkt-vmm` run by hand) that is a plain named thread. With one (the
//! kvm stage1's jailed VMM process, see the `jail` crate), the builder calls [`lock_down`] once
//! the VM is built and before any vCPU exists: it starts the *spawner*, a thread that keeps the
//! union of what the VMM's threads may hold, then confines the main thread. From then on every
//! thread is created by the spawner (so it never inherits the creator's narrower credentials or
//! seccomp filter, e.g. a virtio-fs worker started by a vCPU thread's MMIO write) and, before
//! its body runs, confines itself with `Policy::enter(kind)`. A thread that cannot confine
//! itself ends the process: an unconfined thread must never run guest-facing code.

use std::io;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

/// What a thread of the VMM does; each kind has its own credentials and seccomp allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The thread that built the VM and then supervises it (waits for the end, stops and joins
    /// the vCPUs, saves a snapshot).
    Main,
    /// Starts every other thread once the VM is locked down.
    Spawner,
    /// Runs one vCPU: KVM_RUN, port I/O and MMIO exits (the legacy devices and every virtio
    /// transport's registers are emulated on this thread).
    Vcpu,
    /// A virtio-fs worker: the FUSE server on one share.
    Fs,
    /// The virtio-net worker: frames between the queues and the tap.
    Net,
    /// The virtio-vsock worker: packets between the queues and the host's Unix sockets.
    Vsock,
    /// The virtio-rng worker.
    Rng,
}

impl ThreadKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ThreadKind; 7] = [
        ThreadKind::Main,
        ThreadKind::Spawner,
        ThreadKind::Vcpu,
        ThreadKind::Fs,
        ThreadKind::Net,
        ThreadKind::Vsock,
        ThreadKind::Rng,
    ];

    /// The kind's name, as `--debug` and the documentation print it.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::Spawner => "spawner",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Fs => "virtio-fs",
            ThreadKind::Net => "virtio-net",
            ThreadKind::Vsock => "virtio-vsock",
            ThreadKind::Rng => "virtio-rng",
        }
    }
}

/// How a jailed VMM confines its threads.
pub trait Policy: Send + Sync {
    /// Process-wide confinement at lock-down, on the main thread before the spawner exists
    /// (e.g. leaving the network namespace once the taps are open). Nothing by default.
    fn lock_down_process(&self) -> Result<(), String> {
        Ok(())
    }

    /// Confines the calling thread as a thread of `kind` (credentials, capabilities, seccomp).
    /// Called once per thread, first thing, and for the main thread by [`lock_down`].
    fn enter(&self, kind: ThreadKind) -> Result<(), String>;
}

static POLICY: OnceLock<Arc<dyn Policy>> = OnceLock::new();
/// The spawner's request queue, once [`lock_down`] has started it.
static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();

type SpawnRequest = Box<dyn FnOnce() + Send>;

/// Exit status of a VMM whose thread could not confine itself (the VMM's error status).
const EXIT_UNCONFINED: i32 = 254;

/// Installs the policy for this process; a second policy is refused.
pub fn install(policy: Arc<dyn Policy>) -> Result<(), String> {
    POLICY
        .set(policy)
        .map_err(|_| "a sandbox policy is already installed".to_string())
}

/// Whether a policy is installed (the VMM is jailed).
pub fn is_jailed() -> bool {
    POLICY.get().is_some()
}

/// Called by the builder on the main thread once the VM and its devices exist and before the
/// first vCPU thread is started: starts the spawner and confines the main thread. Does nothing
/// without a policy.
pub fn lock_down() -> io::Result<()> {
    let Some(policy) = POLICY.get() else {
        return Ok(());
    };
    if SPAWNER.get().is_none() {
        policy
            .lock_down_process()
            .map_err(|e| io::Error::other(format!("locking the VMM process down: {e}")))?;
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let spawner_policy = Arc::clone(policy);
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                confine_or_exit(spawner_policy.as_ref(), ThreadKind::Spawner);
                // Ends when the VMM process does (the sender lives in a static).
                for request in rx {
                    request();
                }
            })?;
        // Only this thread sets it; a lost race would leave a second idle spawner, nothing worse.
        let _ = SPAWNER.set(Mutex::new(tx));
    }
    policy
        .enter(ThreadKind::Main)
        .map_err(|e| io::Error::other(format!("confining the VMM's main thread: {e}")))
}

/// Starts `body` on a new thread named `name`, confined as `kind` when the VMM is jailed.
pub fn spawn<T, F>(kind: ThreadKind, name: String, body: F) -> io::Result<JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let policy = POLICY.get().cloned();
    let start = move || {
        std::thread::Builder::new().name(name).spawn(move || {
            if let Some(policy) = &policy {
                confine_or_exit(policy.as_ref(), kind);
            }
            body()
        })
    };
    let Some(spawner) = SPAWNER.get() else {
        return start();
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    let request: SpawnRequest = Box::new(move || {
        let _ = reply_tx.send(start());
    });
    spawner
        .lock()
        .map_err(|_| io::Error::other("the spawner's queue is poisoned"))?
        .send(request)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the spawner thread did not answer"))?
}

fn confine_or_exit(policy: &dyn Policy, kind: ThreadKind) {
    if let Err(err) = policy.enter(kind) {
        eprintln!(
            "rkt-vmm: a {} thread could not confine itself: {err}",
            kind.name()
        );
        // SAFETY: _exit ends the process at once; no other thread may run unconfined code.
        unsafe { libc::_exit(EXIT_UNCONFINED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_policy_threads_are_plain_named_threads() {
        let handle = spawn(ThreadKind::Rng, "named".into(), || {
            std::thread::current().name().map(str::to_string)
        })
        .unwrap();
        assert_eq!(handle.join().unwrap().as_deref(), Some("named"));
        assert!(lock_down().is_ok());
    }

    #[test]
    fn kinds_have_distinct_names() {
        let names: std::collections::BTreeSet<_> =
            ThreadKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), ThreadKind::ALL.len());
    }
}
