//! Reporting the apps' exit statuses to the host (`pod_control::status`): one vsock stream to
//! host port `STATUS_PORT`, connected before any app starts (the host accepts exactly one
//! connection there, so no app can report in our place), one `Ready` frame once guest-init's
//! control server listens, one `Status` frame per app as soon as its status is known. The host
//! writes rkt's status files from these reports, and its ready link from the first.
//!
//! At the end of the pod, [`StatusReporter::finish`] half-closes the stream and waits until
//! the host has closed its side (it does once it holds every app's status), so the reports
//! have left the guest before guest-init powers the VM off.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, Shutdown};
use pod_control::{write_frame, AppStatus, FrameKind};

/// How long the end of the pod waits for the host to confirm it has every status.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// The status stream, or nothing when it could not be connected (the host then reports the
/// apps' statuses as missing).
pub struct StatusReporter {
    stream: Option<File>,
}

impl StatusReporter {
    /// Connects to the host's status port.
    pub fn connect() -> Result<StatusReporter, Errno> {
        let fd = super::connect_vsock(pod_control::ports::STATUS_PORT)?;
        Ok(StatusReporter {
            stream: Some(File::from(fd)),
        })
    }

    /// A reporter that reports nowhere (the connection failed; already said on the console).
    pub fn none() -> StatusReporter {
        StatusReporter { stream: None }
    }

    /// Sends app `app`'s status; an error is returned for the console and ends the stream.
    pub fn report(&mut self, app: &str, status: u8) -> std::io::Result<()> {
        let payload = AppStatus {
            app: app.to_owned(),
            status,
        }
        .to_json();
        self.send(FrameKind::Status, &payload)
    }

    /// Tells the host that guest-init's control server listens (`FrameKind::Ready`): the pod
    /// can be entered and stopped from now on. Sent once, before any app starts; pushed rather
    /// than found by the host's pings, which cost the guest a connection (and the host its
    /// CPU) every tenth of a second while the pod was being set up.
    pub fn ready(&mut self) -> std::io::Result<()> {
        self.send(FrameKind::Ready, &[])
    }

    /// Sends one frame; an error ends the stream (later sends fail at once).
    fn send(&mut self, kind: FrameKind, payload: &[u8]) -> std::io::Result<()> {
        let Some(stream) = &mut self.stream else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no status stream to the host",
            ));
        };
        let sent = write_frame(stream, kind, payload).and_then(|()| stream.flush());
        if sent.is_err() {
            self.stream = None;
        }
        sent
    }

    /// Ends the stream and waits (at most [`CONFIRM_TIMEOUT`]) for the host to close it.
    pub fn finish(mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        let _ = socket::shutdown(stream.as_raw_fd(), Shutdown::Write);
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        let mut buffer = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(0) => return,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_are_status_frames_and_finish_waits_for_the_host() {
        let (ours, mut host) = UnixStream::pair().unwrap();
        let mut reporter = StatusReporter {
            stream: Some(File::from(OwnedFd::from(ours))),
        };
        reporter.ready().unwrap();
        reporter.report("web", 42).unwrap();
        reporter.report("db", 0).unwrap();
        let host_side = std::thread::spawn(move || {
            let first = pod_control::read_frame(&mut host).unwrap().unwrap();
            assert_eq!((first.kind, first.payload.len()), (FrameKind::Ready, 0));
            let mut seen = Vec::new();
            while let Ok(Some(frame)) = pod_control::read_frame(&mut host) {
                assert_eq!(frame.kind, FrameKind::Status);
                seen.push(AppStatus::from_json(&frame.payload).unwrap());
            }
            // Our end closes here, which is what finish waits for.
            seen
        });
        let started = Instant::now();
        reporter.finish();
        assert!(started.elapsed() < CONFIRM_TIMEOUT);
        let seen = host_side.join().unwrap();
        assert_eq!(
            seen,
            [
                AppStatus {
                    app: "web".into(),
                    status: 42
                },
                AppStatus {
                    app: "db".into(),
                    status: 0
                }
            ]
        );
        let mut nowhere = StatusReporter::none();
        assert!(nowhere.ready().is_err());
        assert!(nowhere.report("x", 1).is_err());
        nowhere.finish();
    }
}
