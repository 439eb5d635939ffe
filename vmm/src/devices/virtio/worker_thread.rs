//! The thread behind an activated virtio device. Every device of this VMM serves its queues on
//! one thread that waits in epoll and returns when its stop eventfd fires; [`WorkerThread`]
//! starts such a thread and, on reset or drop, stops and joins it, so that no device touches
//! guest memory after `VirtioDevice::reset` returns (the contract of the transport).

use std::io;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::sandbox::ThreadKind;

/// A device's running worker and the eventfd that tells it to return.
pub struct WorkerThread {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl WorkerThread {
    /// A fresh stop eventfd; the worker's body must watch it (register it in its epoll) and
    /// return once it is readable.
    pub fn stop_event() -> io::Result<EventFd> {
        EventFd::new(libc::EFD_NONBLOCK)
    }

    /// Starts `body` on a thread of `kind` (named after it); `stop` is the eventfd it watches.
    /// The thread is confined as `kind` when the VMM is jailed (`crate::sandbox`).
    pub fn start(
        kind: ThreadKind,
        stop: EventFd,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<WorkerThread> {
        let thread = crate::sandbox::spawn(kind, kind.name().to_string(), body)?;
        Ok(WorkerThread {
            stop,
            thread: Some(thread),
        })
    }

    /// Tells the worker to return and waits for it; afterwards it touches nothing.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // A full eventfd counter still wakes the worker, so the result does not matter.
            let _ = self.stop.write(1);
            // A worker that panicked has stopped touching guest memory too.
            let _ = thread.join();
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn stop_wakes_the_worker_and_waits_for_it() {
        let stop = WorkerThread::stop_event().unwrap();
        let watched = stop.try_clone().unwrap();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let mut worker = WorkerThread::start(ThreadKind::Rng, stop, move || {
            let mut poll = [libc::pollfd {
                fd: watched.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd, waited on without a timeout.
            unsafe { libc::poll(poll.as_mut_ptr(), 1, -1) };
            done.store(true, Ordering::SeqCst);
        })
        .unwrap();
        assert!(!finished.load(Ordering::SeqCst));
        worker.stop();
        assert!(finished.load(Ordering::SeqCst));
        worker.stop(); // a second stop is harmless
    }
}
