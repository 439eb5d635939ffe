//! The little the probe needs from a stream socket, so the same code runs over AF_VSOCK in
//! the guest and over unix sockets in the host's unit tests (hosts rarely have a vsock
//! loopback transport).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};

/// One connected stream.
pub trait Connection: Read + Write + Send + 'static {
    /// Tells the peer "no more data" (it reads EOF) while we can still read its answer.
    fn shutdown_write(&self) -> io::Result<()>;
}

/// A listening socket.
pub trait Listener: Sync {
    type Connection: Connection;

    fn accept(&self) -> io::Result<Self::Connection>;
}

impl Connection for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Listener for UnixListener {
    type Connection = UnixStream;

    fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).map(|(stream, _address)| stream)
    }
}
