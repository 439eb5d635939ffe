//! AF_VSOCK stream sockets through nix, with just the operations the probe uses.
//!
//! Why not the `vsock` crate: its current releases depend on another major version of nix
//! than the workspace uses, and five system calls do not justify a second nix.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, Backlog, Shutdown, SockFlag, SockType, VsockAddr};

/// Listen on every CID of this machine.
pub const CID_ANY: u32 = libc::VMADDR_CID_ANY;
/// The host, seen from a guest.
pub const CID_HOST: u32 = libc::VMADDR_CID_HOST;
/// This machine itself (needs a loopback transport such as vsock_loopback).
pub const CID_LOCAL: u32 = 1;

const BACKLOG: i32 = 128;

/// The vsock misc device; its ioctl tells this machine's CID.
const VSOCK_DEVICE: &str = "/dev/vsock";
/// `IOCTL_VM_SOCKETS_GET_LOCAL_CID` from <linux/vm_sockets.h>: `_IO(7, 0xb9)`, which writes a
/// u32 through its argument despite the `_IO` encoding.
const IOCTL_GET_LOCAL_CID: libc::c_ulong = (7 << 8) | 0xb9;

/// This machine's CID, or `None` when no vsock transport is loaded (the kernel then answers
/// `VMADDR_CID_ANY`): sockets still bind and listen, but no connection can ever arrive, which
/// is worth a warning before a test waits for one in vain.
pub fn local_cid() -> io::Result<Option<u32>> {
    let device = std::fs::File::open(VSOCK_DEVICE)?;
    let mut cid: u32 = CID_ANY;
    // SAFETY: the ioctl writes one u32 through the pointer, which points to a live local; the
    // descriptor is open for the duration of the call.
    let result = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            IOCTL_GET_LOCAL_CID,
            &mut cid as *mut u32,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cid != CID_ANY).then_some(cid))
}

fn vsock_socket() -> io::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// A listening AF_VSOCK socket.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// Listens on `port` on every CID.
    pub fn bind(port: u32) -> io::Result<VsockListener> {
        let fd = vsock_socket()?;
        socket::bind(fd.as_raw_fd(), &VsockAddr::new(CID_ANY, port))?;
        socket::listen(&fd, Backlog::new(BACKLOG)?)?;
        Ok(VsockListener { fd })
    }

    pub fn accept(&self) -> io::Result<VsockStream> {
        loop {
            match socket::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(raw) => {
                    return Ok(VsockStream {
                        fd: unsafe { OwnedFd::from_raw_fd(raw) },
                    })
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}

/// A connected AF_VSOCK stream.
#[derive(Debug)]
pub struct VsockStream {
    fd: OwnedFd,
}

impl VsockStream {
    pub fn connect(cid: u32, port: u32) -> io::Result<VsockStream> {
        let fd = vsock_socket()?;
        socket::connect(fd.as_raw_fd(), &VsockAddr::new(cid, port))?;
        Ok(VsockStream { fd })
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(self.fd.as_raw_fd(), buf).map_err(io::Error::from)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        nix::unistd::write(self.fd.as_fd(), buf).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::transport::Connection for VsockStream {
    fn shutdown_write(&self) -> io::Result<()> {
        socket::shutdown(self.fd.as_raw_fd(), Shutdown::Write).map_err(io::Error::from)
    }
}

impl crate::transport::Listener for VsockListener {
    type Connection = VsockStream;

    fn accept(&self) -> io::Result<VsockStream> {
        VsockListener::accept(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_the_kernel_header() {
        // _IO(type, nr) = (type << 8) | nr, with no size or direction bits.
        assert_eq!(IOCTL_GET_LOCAL_CID, 0x7b9);
    }

    #[test]
    fn local_cid_answers_without_failing_when_the_device_exists() {
        if std::path::Path::new(VSOCK_DEVICE).exists() {
            // Some(cid) on a machine with a transport, None without: never an error.
            assert!(local_cid().is_ok());
        } else {
            assert!(local_cid().is_err());
        }
    }
}
