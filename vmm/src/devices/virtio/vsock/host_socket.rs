//! The unix stream of one connection as the device needs it: connected without ever
//! blocking the worker, and written without SIGPIPE; and [`PortSockets`], the only way a guest
//! connection reaches a host socket (registered ports, no symlink ever followed).

use std::collections::BTreeSet;
use std::ffi::{CString, OsString};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

    /// recv(2) with MSG_PEEK: what a read would return, left in the socket. (std's
    /// `UnixStream::peek` is not stable.)
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the
        // call, and the fd is open for as long as `self` lives.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
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

/// The host sockets guest connections may reach: `<uds_path>_<port>` for the registered ports
/// only, looked up in the directory of `uds_path` as it was when the device was created.
///
/// The guest chooses the port of every REQUEST, and the socket directory may be reachable by
/// others (a guest once planted `<uds_path>_7 -> /tmp/hostsecret.sock` through a share and so
/// reached a root-only host socket), so:
/// - a port that is not registered is refused before anything touches the file system;
/// - the directory is opened once, at creation, so swapping a directory on the way later
///   redirects nothing;
/// - the socket's name is opened `O_PATH | O_NOFOLLOW`, which never follows a final symlink
///   (it opens the link itself), and what was opened must be a socket;
/// - the connection is made to exactly that inode, through `/proc/self/fd/<n>`: connect(2)
///   takes only a path (there is no connectat with AT_EMPTY_PATH for unix sockets), and the
///   magic link names the inode behind our descriptor without walking any name again, so
///   nothing can be swapped between the check and the connect. This needs /proc mounted in the
///   VMM's mount namespace, as the virtio-fs passthrough does.
#[derive(Debug)]
pub struct PortSockets {
    /// The directory of the VM's socket (`O_PATH`).
    dir: OwnedFd,
    /// The VM socket's file name; port sockets are `<base>_<port>` next to it.
    base: OsString,
    ports: BTreeSet<u32>,
}

impl PortSockets {
    /// Opens the directory of `uds_path` (following symlinks: the path is the host's
    /// configuration) and remembers the `ports` the guest may connect to.
    pub fn new(uds_path: &Path, ports: &[u32]) -> io::Result<PortSockets> {
        let base = uds_path
            .file_name()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "socket path has no name"))?
            .to_os_string();
        let dir = match uds_path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "socket path contains NUL"))?;
        // SAFETY: `dir` is a NUL-terminated string that outlives the call; the result is
        // checked below.
        let fd = unsafe {
            libc::open(
                dir.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PortSockets {
            dir,
            base,
            ports: ports.iter().copied().collect(),
        })
    }

    /// Whether the guest may connect to host port `port` at all.
    pub fn is_registered(&self, port: u32) -> bool {
        self.ports.contains(&port)
    }

    /// Connects to the socket of registered port `port` without blocking; an unregistered
    /// port (PermissionDenied, with no file system access), a name that is a symlink or
    /// anything but a socket (PermissionDenied), or no listener is an error.
    pub fn connect(&self, port: u32) -> io::Result<HostSocket> {
        if !self.is_registered(port) {
            return Err(io::Error::new(
                ErrorKind::PermissionDenied,
                "host port not registered",
            ));
        }
        let mut name = self.base.clone();
        name.push(format!("_{port}"));
        let name = CString::new(name.into_vec())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "socket name contains NUL"))?;
        // SAFETY: `self.dir` is an open directory descriptor and `name` a NUL-terminated string
        // that outlives the call; the result is checked below.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it; OwnedFd closes it.
        let socket_path = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: stat is plain old data, for which all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat only writes the `stat` we pass, which outlives the call; the descriptor
        // is open (fstat works on O_PATH descriptors).
        if unsafe { libc::fstat(socket_path.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            // With O_NOFOLLOW a symlink is opened as itself, so it ends here too.
            return Err(io::Error::new(
                ErrorKind::PermissionDenied,
                "not a socket (or a symlink)",
            ));
        }
        let through_proc = format!("/proc/self/fd/{}", socket_path.as_raw_fd());
        connect_nonblocking(Path::new(&through_proc))
    }
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
