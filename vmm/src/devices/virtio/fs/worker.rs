//! The device's worker thread: waits in epoll on the hiprio and request queues' notify eventfds
//! and a stop eventfd, serves every available chain through the FUSE server, and signals the
//! used queue. One thread per device keeps the code linear; requests of one share are served
//! in order, which the FUSE protocol allows.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use fuse_virtio_queue::QueueT;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::compat::{FuseGuestMemory, FuseQueue, GuestMemoryView};
use super::request::handle_chain;
use crate::devices::virtio::device::{ActivateError, Interrupt};
use crate::devices::virtio::worker_thread::WorkerThread;

const TOKEN_STOP: u64 = u64::MAX;

/// A queue as the worker serves it: the fuse-backend-rs view plus its notify eventfd.
pub struct ServedQueue {
    /// The 0.17 view of the transport's queue.
    pub queue: FuseQueue,
    /// Signalled (by KVM) when the driver notifies this queue.
    pub notify: EventFd,
}

/// The running worker thread and the eventfd that stops it.
pub struct Worker {
    thread: WorkerThread,
}

impl Worker {
    /// Starts serving `queues` over `memory`. Returns once the thread runs with its own file
    /// system context (see `unshare_fs_context`), or with the reason it could not.
    pub fn spawn<F>(
        server: Server<F>,
        memory: GuestMemoryView,
        queues: Vec<ServedQueue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<Worker, ActivateError>
    where
        F: FileSystem + Send + Sync + 'static,
    {
        let stop = WorkerThread::stop_event()?;
        let epoll = Epoll::new()?;
        for (index, served) in queues.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                served.notify.as_raw_fd(),
                EpollEvent::new(EventSet::IN, index as u64),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_STOP),
        )?;
        let (started_tx, started_rx) = mpsc::channel();
        let thread = WorkerThread::start(crate::sandbox::ThreadKind::Fs, stop, move || {
            let started = unshare_fs_context();
            let ok = started.is_ok();
            let _ = started_tx.send(started);
            if ok {
                run(epoll, server, memory, queues, interrupt);
            }
        })?;
        let mut worker = Worker { thread };
        match started_rx.recv() {
            Ok(Ok(())) => Ok(worker),
            Ok(Err(e)) => {
                worker.stop();
                Err(ActivateError::Worker(e))
            }
            Err(_) => {
                worker.stop();
                Err(ActivateError::Worker(io::Error::other(
                    "the virtio-fs worker ended before it started",
                )))
            }
        }
    }

    /// Stops the thread and waits for it: afterwards nothing touches guest memory.
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

/// Gives this thread its own umask and working directory. The passthrough file system sets
/// the umask to 0 when the guest mounts (the guest applies its own umask to the modes it
/// sends); without this, that would change the umask of the whole VMM process.
pub(super) fn unshare_fs_context() -> io::Result<()> {
    // SAFETY: unshare(CLONE_FS) only copies the calling thread's root, cwd and umask into a
    // private fs context; it touches no memory of ours and is allowed in threaded processes.
    if unsafe { libc::unshare(libc::CLONE_FS) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn run<F: FileSystem + Sync>(
    epoll: Epoll,
    server: Server<F>,
    memory: GuestMemoryView,
    mut queues: Vec<ServedQueue>,
    interrupt: Arc<Interrupt>,
) {
    let mut events = vec![EpollEvent::default(); queues.len() + 1];
    loop {
        let ready = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // epoll_wait on a valid epoll fd does not fail otherwise; stop serving.
            Err(_) => return,
        };
        // Stop first, even if queues are also ready: reset must not wait for a busy guest.
        if events[..ready].iter().any(|e| e.data() == TOKEN_STOP) {
            return;
        }
        for event in &events[..ready] {
            let Some(served) = usize::try_from(event.data())
                .ok()
                .and_then(|index| queues.get_mut(index))
            else {
                continue;
            };
            let _ = served.notify.read();
            let pass = serve_queue(&mut served.queue, memory.get(), &server);
            if pass.used_any {
                interrupt.signal_used_queue();
            }
            if pass.more_waiting {
                // Come back to this queue after checking the stop eventfd again.
                let _ = served.notify.write(1);
            }
        }
    }
}

/// What one pass over a queue did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// At least one chain was returned to the driver.
    pub used_any: bool,
    /// The pass stopped at its bound with chains still available.
    pub more_waiting: bool,
}

/// Serves at most one queue's worth of available chains. A queue whose rings cannot be read
/// stops being served until the driver notifies again.
pub fn serve_queue<F: FileSystem + Sync>(
    queue: &mut FuseQueue,
    memory: &FuseGuestMemory,
    server: &Server<F>,
) -> Pass {
    let mut pass = Pass::default();
    // Bounded so that a guest refilling the ring as fast as we drain it cannot keep the worker
    // from seeing the stop eventfd.
    for _ in 0..queue.size() {
        let Some(chain) = queue.pop_descriptor_chain(memory) else {
            return pass;
        };
        let head = chain.head_index();
        let used_len = handle_chain(server, memory, chain);
        if queue.add_used(memory, head, used_len).is_err() {
            return pass;
        }
        pass.used_any = true;
    }
    pass.more_waiting = true;
    pass
}
