//! The unix stream of one connection as the device needs it: connected without ever
//! blocking the worker, and written without SIGPIPE.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::connection::HostStream;

/// A non-blocking unix stream to a host process.
#[derive(Debug)]
pub struct HostSocket(UnixStream);

impl HostSocket {
    /// Wraps an accepted stream, making it non-blocking.
    pub fn from_accepted(stream: UnixStream) -> io::Result<HostSocket> {
        stream.set_nonblocking(true)?;
        Ok(HostSocket(stream))
    }
}

impl AsRawFd for HostSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Read for HostSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for HostSocket {
    /// send(2) with MSG_NOSIGNAL: a host process that went away must cost its connection
    /// (EPIPE), never the VMM (SIGPIPE kills a process that did not ignore it, and the VMM is
    /// a library that cannot know what its embedder did with the signal).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call,
        // and the fd is open for as long as `self` lives.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // Non-negative and at most buf.len().
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HostStream for HostSocket {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

/// Connects to the unix socket at `path` without ever blocking: a host listener whose backlog
/// is full fails the connection (EAGAIN) instead of stalling every other stream of the VM.
/// std has no non-blocking connect, hence libc.
pub fn connect_nonblocking(path: &Path) -> io::Result<HostSocket> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data, for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "unix socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: a plain system call with constant arguments; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and nothing else owns; OwnedFd closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // The family, the path and its terminating NUL (checked to fit above).
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un that outlives the call and `len` does not exceed
    // its size; `fd` is open.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(HostSocket(UnixStream::from(owned)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn nonblocking_connect_reaches_a_listener_and_fails_cleanly_otherwise() {
        let dir = std::env::temp_dir().join(format!("vsock-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let stream = connect_nonblocking(&path).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let mut stream = stream;
        stream.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        assert!(connect_nonblocking(&dir.join("missing")).is_err());
        let long = dir.join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writing_to_a_closed_peer_is_an_error_not_a_signal() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut ours = HostSocket::from_accepted(ours).unwrap();
        drop(theirs);
        // The test harness ignores SIGPIPE, so the write runs in a child with the default
        // action, where a plain write(2) would kill it.
        // SAFETY: the child only calls async-signal-safe functions (signal, send, _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: as above; the child never returns into the test harness.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                let broken =
                    matches!(ours.write(b"x"), Err(e) if e.kind() == ErrorKind::BrokenPipe);
                libc::_exit(if broken { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
    }
}
