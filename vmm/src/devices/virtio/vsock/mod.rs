//! virtio-vsock (device ID 19, spec 5.10): guest stream sockets bridged to host unix sockets,
//! the "hybrid vsock" that Firecracker users know.
//!
//! - Host to guest: a host process connects to the VM's socket (`uds_path`), writes
//!   `CONNECT <port>\n`, and once the guest's listener on that port accepts, reads
//!   `OK <host port>\n`; from then on the unix stream carries the connection's bytes.
//! - Guest to host: a guest connecting to CID 2 (the host), port P, is connected to the unix
//!   socket `<uds_path>_P` if P is one of the configured `host_ports` and that name is a
//!   socket, never through a symlink (`host_socket::PortSockets`); otherwise, or if nobody
//!   listens there, the guest gets "connection refused" (RST).
//!
//! Modules: `packet` reads and writes packets in descriptor chains, `connection` is one
//! stream's state and credit accounting, `host_socket` is the unix stream under it, `muxer`
//! owns the listener and routes packets to connections, `worker` is the thread that moves
//! packets between the queues and the muxer.
//! Only stream sockets are offered (no VIRTIO_VSOCK_F_SEQPACKET).

mod connection;
#[doc(hidden)]
pub mod fuzzing;
mod host_socket;
mod muxer;
mod packet;
pub mod seccomp;
mod worker;

use std::io;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

pub use connection::BUF_ALLOC;
pub use muxer::{CONNECT_TIMEOUT, MAX_CONNECTIONS};

use super::device::{ActivateError, ActiveQueue, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use super::read_config_space;
use super::worker_thread::WorkerThread;
use crate::memory::GuestMemory;
use host_socket::PortSockets;
use muxer::Muxer;
use worker::{Queues, Worker};

/// The virtio device ID of a socket device.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Largest size of each of the three queues.
const QUEUE_SIZE: u16 = 256;
/// The first CID a guest may have: 0 is the hypervisor, 1 local loopback, 2 the host.
pub const MIN_GUEST_CID: u64 = 3;
/// Linux keeps CIDs in 32 bits and reserves `u32::MAX` (VMADDR_CID_ANY).
pub const MAX_GUEST_CID: u64 = u32::MAX as u64 - 1;
/// The longest socket path: `sun_path` holds 107 bytes plus a NUL, and the per-port paths
/// add up to 11 (`_4294967295`).
pub const MAX_UDS_PATH_LEN: usize = 107 - 11;

/// What the builder knows about a VM's vsock device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID (3 or above).
    pub guest_cid: u64,
    /// Where the VM's unix socket is created; guest-initiated connections to host port P go
    /// to `<uds_path>_P`.
    pub uds_path: PathBuf,
    /// The host ports guest connections may reach; a REQUEST to any other port is answered
    /// with RST without touching the file system.
    pub host_ports: Vec<u32>,
}

/// The vsock device could not be created.
#[derive(Debug, Error)]
pub enum VsockError {
    /// The CID is reserved or does not fit Linux's 32-bit CIDs.
    #[error(
        "vsock guest CID {0} is not usable: choose one from {MIN_GUEST_CID} to {MAX_GUEST_CID} \
         (0-2 are reserved for the hypervisor, loopback and the host)"
    )]
    BadCid(u64),
    /// Something already exists at the socket path.
    #[error(
        "vsock socket path {0} already exists: remove it if no VM uses it, or choose another path"
    )]
    SocketExists(PathBuf),
    /// The path, or `<path>_<port>` for guest-initiated connections, would not fit a unix
    /// socket address.
    #[error(
        "vsock socket path {0} is too long: unix socket paths hold 107 bytes and \
         `<path>_<port>` must fit too, so use at most {MAX_UDS_PATH_LEN} bytes (a shorter \
         directory)"
    )]
    PathTooLong(PathBuf),
    /// The directory of the socket path cannot be opened for the per-port sockets.
    #[error("cannot open the directory of the vsock socket {path}: {source}")]
    Directory {
        /// The socket path.
        path: PathBuf,
        /// Why open failed.
        source: io::Error,
    },
    /// The socket could not be created there.
    #[error(
        "cannot create the vsock socket {path}: {source} (the directory must exist and be \
         writable)"
    )]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why bind failed.
        source: io::Error,
    },
}

/// The vsock device; its unix socket exists from `new` until it is dropped.
pub struct Vsock {
    config: VsockConfig,
    listener: Arc<UnixListener>,
    ports: Arc<PortSockets>,
    worker: Option<WorkerThread>,
}

impl Vsock {
    /// Creates the device and binds its unix socket at `config.uds_path`.
    pub fn new(config: &VsockConfig) -> Result<Vsock, VsockError> {
        if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&config.guest_cid) {
            return Err(VsockError::BadCid(config.guest_cid));
        }
        let path = &config.uds_path;
        if path.as_os_str().len() > MAX_UDS_PATH_LEN {
            return Err(VsockError::PathTooLong(path.clone()));
        }
        // bind would fail with EADDRINUSE too, but this names the likely cause (a stale
        // socket of a VM that crashed) and never touches a file that is not ours.
        if path.symlink_metadata().is_ok() {
            return Err(VsockError::SocketExists(path.clone()));
        }
        let bind_err = |source| VsockError::Bind {
            path: path.clone(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        if let Err(e) = listener.set_nonblocking(true) {
            let _ = std::fs::remove_file(path);
            return Err(bind_err(e));
        }
        let ports = match PortSockets::new(path, &config.host_ports) {
            Ok(ports) => ports,
            Err(source) => {
                let _ = std::fs::remove_file(path);
                return Err(VsockError::Directory {
                    path: path.clone(),
                    source,
                });
            }
        };
        Ok(Vsock {
            config: config.clone(),
            listener: Arc::new(listener),
            ports: Arc::new(ports),
            worker: None,
        })
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    /// The configuration space is `le64 guest_cid`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config.guest_cid.to_le_bytes(), offset, data);
    }

    /// The configuration space is read-only.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        memory: GuestMemory,
        _features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        self.reset();
        let count = queues.len();
        let mut queues = queues.into_iter();
        let (Some(rx), Some(tx), Some(event)) = (queues.next(), queues.next(), queues.next())
        else {
            return Err(ActivateError::QueueMissing(count));
        };
        let stop = WorkerThread::stop_event()?;
        let muxer = Muxer::new(
            self.config.guest_cid,
            self.listener.clone(),
            self.ports.clone(),
        );
        let worker = Worker::new(memory, Queues { rx, tx, event }, interrupt, muxer, &stop)?;
        self.worker = Some(WorkerThread::start(
            crate::sandbox::ThreadKind::Vsock,
            stop,
            move || worker.run(),
        )?);
        Ok(())
    }

    /// Stops the worker; every connection closes with it (the guest's driver drops its own
    /// sockets on reset, and host processes see EOF).
    fn reset(&mut self) {
        // Dropping the worker stops and joins it.
        self.worker = None;
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.reset();
        let _ = std::fs::remove_file(&self.config.uds_path);
    }
}

#[cfg(test)]
mod tests;
