//! Hook for the fuzz targets in `fuzz/` (not an API of the VMM): the device's worker over
//! queues the fuzzer laid out in guest memory, with the muxer the device uses, stepped by hand
//! so one input is a few deterministic passes instead of a thread.

use std::io;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub use super::packet::{Header, HEADER_LEN, HOST_CID, TYPE_STREAM};
pub use super::worker::Flow;

use super::host_socket::PortSockets;
use super::muxer::Muxer;
use super::worker::{Queues, Worker};
use crate::devices::virtio::{ActiveQueue, Interrupt};
use crate::memory::GuestMemory;

/// An activated vsock device without its thread.
pub struct VsockHarness {
    worker: Worker,
    /// The worker's stop eventfd; never signalled, kept open for the worker's epoll.
    _stop: EventFd,
}

impl VsockHarness {
    /// The device as `activate` builds it: `rx`, `tx` and `event` queues (validated by the
    /// caller, as the transport does), the VM's `listener` bound at `uds_path`, guest-initiated
    /// connections allowed to `host_ports` (`<uds_path>_<port>`).
    pub fn new(
        memory: GuestMemory,
        [rx, tx, event]: [Queue; 3],
        guest_cid: u64,
        listener: Arc<UnixListener>,
        uds_path: &Path,
        host_ports: &[u32],
    ) -> io::Result<VsockHarness> {
        let ports = Arc::new(PortSockets::new(uds_path, host_ports)?);
        let muxer = Muxer::new(guest_cid, listener, ports);
        let active = |queue| -> io::Result<ActiveQueue> {
            Ok(ActiveQueue {
                queue,
                notify: EventFd::new(libc::EFD_NONBLOCK)?,
            })
        };
        let queues = Queues {
            rx: active(rx)?,
            tx: active(tx)?,
            event: active(event)?,
        };
        let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK)?));
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let worker = Worker::new(memory, queues, interrupt, muxer, &stop)?;
        Ok(VsockHarness {
            worker,
            _stop: stop,
        })
    }

    /// One worker pass over whatever is ready now (host sockets, both queues), without
    /// sleeping.
    pub fn step(&mut self) -> Flow {
        self.worker.step(Some(Duration::ZERO))
    }
}
