//! Waiting for the guest's one connection on a host port (the status stream, each app's
//! output streams), while the caller may give up: used by `status` and `output`.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Accepts one connection on `listener`, or returns None once `wake` becomes readable or hangs
/// up (the caller dropped its write end: the VM is gone) or polling fails.
pub fn accept_or_wake(listener: &UnixListener, wake: &impl AsFd) -> Option<UnixStream> {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
        if fds[1].any().unwrap_or(true) {
            return None;
        }
        if fds[0].any().unwrap_or(false) {
            match listener.accept() {
                Ok((stream, _)) => return Some(stream),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }
}
