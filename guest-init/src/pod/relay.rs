//! An app's stdout and stderr are pipes, relayed to the host's vsock streams by small relay
//! processes, rather than the vsock sockets themselves.
//!
//! Why: images open their own output by name. Docker's official nginx image links
//! `/var/log/nginx/access.log` to `/dev/stdout`, and `/dev/stdout` is `/proc/self/fd/1`:
//! opening that works for a pipe, a terminal or a file, but fails with ENXIO for a socket
//! ("open() "/var/log/nginx/error.log" failed (6: No such device or address)"), so such an app
//! would not start. With a pipe it does, exactly as under Docker or runc, whose apps' output
//! is a pipe too.
//!
//! Why processes and not threads: guest-init forks every app process from PID 1 and does real
//! work in the child before exec (namespaces, mounts, seccomp; pidns.rs says so), which is
//! only sound while PID 1 is single-threaded. A relay is a fork of guest-init that keeps the
//! pipe's read end and the vsock stream, closes every other descriptor (so it holds no other
//! stream open, and no pipe's write end that would keep a relay from seeing end of file), and
//! copies until the pipe's end of file. The relays stay in guest-init's pid namespace, out of
//! the pod's: no app can see or signal them.
//!
//! When the host stops reading (its end closed), the relay stops and closes the pipe, so the
//! app's next write fails with EPIPE, as a write to the closed socket did before.
//!
//! At the pod's end [`Relays::drain`] waits (bounded) until each relay has copied everything
//! and exited, before guest-init reports the end to the host and the VM stops: output an app
//! wrote just before it ended is not lost in a pipe.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

/// The relay processes of the pod's apps.
#[derive(Default)]
pub struct Relays {
    pids: Vec<Pid>,
}

impl Relays {
    /// A pipe whose read end a new relay process copies to `sink`; returns the write end, for
    /// the app's stdout or stderr. `sink` is closed in guest-init: the relay holds it now. On
    /// failure (no pipe, no process) `sink` comes back with the error.
    pub fn relay_to(&mut self, sink: OwnedFd) -> Result<OwnedFd, (io::Error, OwnedFd)> {
        let (read_end, write_end) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(ends) => ends,
            Err(errno) => return Err((errno.into(), sink)),
        };
        // SAFETY: guest-init is single-threaded (module comment); the child only closes
        // descriptors, copies with read/write and exits with _exit.
        let forked = match unsafe { nix::unistd::fork() } {
            Ok(forked) => forked,
            Err(errno) => return Err((errno.into(), sink)),
        };
        match forked {
            ForkResult::Child => {
                let code = match relay_process(read_end, sink, write_end) {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                // SAFETY: _exit ends this forked relay without running PID 1's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                self.pids.push(child);
                // `sink` and `read_end` close here: the relay has its own copies.
                Ok(write_end)
            }
        }
    }

    /// Waits up to `limit` for every relay to reach its pipe's end of file and exit. The
    /// caller has closed guest-init's own write ends and ended the apps first. A relay still
    /// running after `limit` is left to the final clean-up, which kills whatever is left.
    pub fn drain(&mut self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            self.pids.retain(|&pid| {
                !matches!(
                    waitpid(pid, Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD)
                )
            });
            if self.pids.is_empty() || Instant::now() >= deadline {
                return self.pids.len();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// In the forked relay: keeps the pipe's read end and the sink, closes everything else above
/// stdin, stdout and stderr (guest-init's console, left for a relay's last words; the write
/// end first: while any copy of it is open there is no end of file) and copies.
fn relay_process(read_end: OwnedFd, sink: OwnedFd, write_end: OwnedFd) -> io::Result<()> {
    drop(write_end);
    let (low, high) = if read_end.as_raw_fd() < sink.as_raw_fd() {
        (read_end.as_raw_fd(), sink.as_raw_fd())
    } else {
        (sink.as_raw_fd(), read_end.as_raw_fd())
    };
    for (first, last) in [(3, low - 1), (low + 1, high - 1), (high + 1, RawFd::MAX)] {
        close_range(first, last)?;
    }
    copy(&read_end, &sink)
}

/// close_range(2) of `first..=last`; nothing when the range is empty.
fn close_range(first: RawFd, last: RawFd) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range(2) closes descriptors this process does not use (the relay keeps
    // only the two it owns, which are outside every range asked for).
    let closed = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0) };
    if closed != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies `from` to `to` until end of file, or until `to` refuses (the host closed its end).
fn copy(from: &OwnedFd, to: &OwnedFd) -> io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match nix::unistd::read(from.as_raw_fd(), &mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        };
        let mut rest = &buffer[..n];
        while !rest.is_empty() {
            match nix::unistd::write(to, rest) {
                Ok(written) => rest = &rest[written..],
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn output_reaches_the_sink_and_stdout_can_be_opened_by_name() {
        let (sink, mut host) = UnixStream::pair().unwrap();
        // What the app would get as stdout without a relay: opening it by name fails.
        let by_name = |fd: RawFd| {
            OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{fd}"))
        };
        let err = by_name(sink.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENXIO), "{err}");

        let mut relays = Relays::default();
        let pipe = relays
            .relay_to(OwnedFd::from(sink))
            .map_err(|(e, _)| e)
            .unwrap();
        // With one it works, as /dev/stdout does for nginx's logs.
        let mut log = by_name(pipe.as_raw_fd()).unwrap();
        log.write_all(b"opened by name\n").unwrap();
        drop(log);
        let mut direct = std::fs::File::from(pipe);
        direct.write_all(b"written directly\n").unwrap();
        drop(direct);

        let mut got = String::new();
        host.read_to_string(&mut got).unwrap();
        assert_eq!(got, "opened by name\nwritten directly\n");
        assert_eq!(relays.drain(Duration::from_secs(10)), 0);
    }

    #[test]
    fn a_closed_sink_ends_the_relay_and_the_apps_writes_fail() {
        let (sink, host) = UnixStream::pair().unwrap();
        let mut relays = Relays::default();
        let pipe = relays
            .relay_to(OwnedFd::from(sink))
            .map_err(|(e, _)| e)
            .unwrap();
        drop(host);
        let mut app = std::fs::File::from(pipe);
        let chunk = vec![b'x'; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match app.write_all(&chunk) {
                Ok(()) => assert!(Instant::now() < deadline, "writes never failed"),
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        assert_eq!(relays.drain(Duration::from_secs(10)), 0);
    }
}
