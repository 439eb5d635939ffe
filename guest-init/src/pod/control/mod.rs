//! The guest end of the control channel (crate `pod_control`, docs/stage1-kvm.md "The control
//! channel"): a vsock listener on port 1, and PID 1's event loop around it.
//!
//! PID 1 stays single-threaded (launch.rs forks freely): instead of blocking in waitpid, it
//! polls three descriptors: a signalfd for SIGCHLD (children to reap), the listener (a host
//! connection to accept), and a pipe from its connection handlers (a `stop` or an `attach`
//! that PID 1 itself must act on). Each accepted connection is served by a forked handler
//! process (`handler`), so a slow or hostile host stream never stalls PID 1, and a malformed
//! request ends only its own handler.

mod handler;
mod session;
pub mod terminal;

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};
use nix::unistd::ForkResult;

use crate::reaper::{Reaped, Waiter};
use pod_control::{AppState, CONTROL_PORT};

/// A handler's message to PID 1 on the pipe: `b'S'` + the grace period in ms (u64, big-endian).
const MESSAGE_STOP: u8 = b'S';
/// A handler's message to PID 1: the `--interactive` app's terminal is attached, start it.
const MESSAGE_ATTACH: u8 = b'A';
/// Longest wait in one poll: a safety net, should a SIGCHLD ever go unnoticed.
const MAX_POLL: Duration = Duration::from_secs(1);

/// What happened while PID 1 waited.
#[derive(Debug)]
pub enum Event {
    Reaped(Reaped),
    /// waitpid failed (other than "no children yet").
    WaitFailed(Errno),
    /// The host asked to stop the pod.
    Stop {
        grace: Duration,
    },
    /// The host attached to the `--interactive` app's terminal.
    Attach,
    /// Nothing for the caller (a connection was handed to a handler, a timeout passed).
    Idle,
}

/// What a connection handler may learn about the pod, and the descriptors it must let go of.
pub trait PodView {
    /// Every app with whether it still runs.
    fn apps(&self) -> Vec<AppState>;
    /// Where and how `enter` runs a command in `app`; `Err`: a message for the host.
    fn enter_target(&self, app: &str) -> Result<EnterTarget, String>;
    /// The `--interactive` app's terminal (a copy of its master end), if this pod has one.
    fn interactive_terminal(&self) -> Option<OwnedFd>;
    /// In a handler process, once it took what it needs: closes every app descriptor inherited
    /// from PID 1 (the apps' output streams, their terminals), so that the host sees those
    /// streams end when the apps do, however long the session lasts.
    fn release_inherited(&mut self);
}

/// An app's environment for `enter`.
pub struct EnterTarget {
    /// The app's root (a guest path).
    pub root: PathBuf,
    pub env: Vec<(String, String)>,
    pub cgroup_procs: Option<PathBuf>,
    /// The pod's pid namespace and the app's mount namespace, which the command joins.
    pub pid_ns: crate::pod::pidns::PodPidNamespace,
    pub mnt_ns: crate::pod::appns::AppNamespace,
    /// The app's capabilities, seccomp filter, no_new_privs and oom_score_adj: a command
    /// entered into a hostile app gets no more than the app.
    pub hardening: crate::pod::isolators::Hardening,
}

pub struct Control {
    signals: Option<SignalFd>,
    listener: Option<OwnedFd>,
    /// Handlers write, PID 1 reads.
    from_handlers: Option<(OwnedFd, OwnedFd)>,
    pending: Vec<u8>,
    /// Whether this pod waits for an `attach` (`--interactive`).
    interactive: bool,
}

impl Control {
    /// Blocks SIGCHLD for its signalfd and starts listening on the control port. Whatever
    /// fails is reported through `report` and leaves that part off: without a signalfd PID 1
    /// waits as before; without a listener the host cannot reach the pod (no stop, no enter).
    pub fn start(interactive: bool, report: &dyn Fn(String)) -> Control {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        let signals = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .and_then(|()| {
                SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            })
            .map_err(|errno| report(format!("control: no signalfd ({errno}); stop is off")))
            .ok();
        let listener = listen()
            .map_err(|errno| {
                report(format!(
                    "control: cannot listen on vsock port {CONTROL_PORT} ({errno}); rkt stop \
                     and enter cannot reach this pod"
                ))
            })
            .ok();
        let from_handlers = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| report(format!("control: no pipe ({errno})")))
            .ok();
        if let Some((read, _)) = &from_handlers {
            let _ = set_nonblocking(read);
        }
        Control {
            signals,
            listener,
            from_handlers,
            pending: Vec::new(),
            interactive,
        }
    }

    /// Whether the control server listens (`rkt enter` and `rkt stop` can reach the pod).
    pub fn listening(&self) -> bool {
        self.listener.is_some()
    }

    /// Waits for the next event, at most `timeout` (`None`: as long as it takes). With
    /// `children_expected` false, having no children at all is not an error (an interactive
    /// pod before its attach).
    pub fn next_event(
        &mut self,
        waiter: &mut impl Waiter,
        view: &mut dyn PodView,
        timeout: Option<Duration>,
        children_expected: bool,
    ) -> Event {
        if let Some(event) = self.take_message() {
            return event;
        }
        let Some(signals) = &self.signals else {
            // No signalfd: the old way, a blocking wait.
            return match waiter.wait_any(true) {
                Ok(Some(reaped)) => Event::Reaped(reaped),
                Ok(None) | Err(Errno::EINTR) => Event::Idle,
                Err(errno) => Event::WaitFailed(errno),
            };
        };
        match waiter.wait_any(false) {
            Ok(Some(reaped)) => return Event::Reaped(reaped),
            Ok(None) | Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) if !children_expected => {}
            Err(errno) => return Event::WaitFailed(errno),
        }
        let timeout = timeout.map_or(MAX_POLL, |t| t.min(MAX_POLL));
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(listener) = &self.listener {
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        }
        if let Some((read, _)) = &self.from_handlers {
            fds.push(PollFd::new(read.as_fd(), PollFlags::POLLIN));
        }
        let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) | Err(_) => return Event::Idle,
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready.first() == Some(&true) {
            // Drain it; the reaping happens on the next call.
            while let Ok(Some(_)) = signals.read_signal() {}
        }
        let mut index = 1;
        if self.listener.is_some() {
            if ready.get(index) == Some(&true) {
                self.accept(view);
            }
            index += 1;
        }
        if self.from_handlers.is_some() && ready.get(index) == Some(&true) {
            self.read_messages();
        }
        self.take_message().unwrap_or(Event::Idle)
    }

    /// Gives the connection handlers still running up to `limit` to end on their own (the
    /// `--interactive` session relays the app's last output after the app has ended; the
    /// pod's end would otherwise cut it off).
    pub fn drain_handlers(&mut self, waiter: &mut impl Waiter, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            match waiter.wait_any(false) {
                Ok(Some(_)) => {}
                Ok(None) | Err(Errno::EINTR) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return,
            }
        }
    }

    /// Accepts one connection and forks its handler.
    fn accept(&mut self, view: &mut dyn PodView) {
        let Some(listener) = &self.listener else {
            return;
        };
        let Ok(raw) = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) else {
            return;
        };
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let connection = unsafe { OwnedFd::from_raw_fd(raw) };
        let to_pid1 = self
            .from_handlers
            .as_ref()
            .and_then(|(_, write)| write.try_clone().ok());
        // SAFETY: PID 1 is single-threaded (main.rs), so the child is a consistent copy; it
        // ends with _exit, never returning into PID 1's code.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                // The handler must not keep PID 1's own descriptors.
                self.signals = None;
                self.listener = None;
                self.from_handlers = None;
                let _ = nix::sys::signal::sigprocmask(
                    SigmaskHow::SIG_SETMASK,
                    Some(&SigSet::empty()),
                    None,
                );
                handler::serve(connection, view, to_pid1, self.interactive);
                // SAFETY: _exit skips PID 1's exit handlers, which are not the handler's.
                unsafe { libc::_exit(0) }
            }
            // The connection is the handler's now; ours closes here.
            Ok(ForkResult::Parent { .. }) | Err(_) => {}
        }
    }

    fn read_messages(&mut self) {
        let Some((read, _)) = &self.from_handlers else {
            return;
        };
        let mut buffer = [0u8; 256];
        while let Ok(n) = nix::unistd::read(read.as_raw_fd(), &mut buffer) {
            if n == 0 {
                break;
            }
            self.pending.extend_from_slice(&buffer[..n]);
            // Handlers write whole messages; anything beyond a few is a broken handler.
            if self.pending.len() > 4096 {
                self.pending.clear();
            }
        }
    }

    /// The first complete message waiting, if any.
    fn take_message(&mut self) -> Option<Event> {
        match *self.pending.first()? {
            MESSAGE_STOP if self.pending.len() >= 9 => {
                let mut millis = [0u8; 8];
                millis.copy_from_slice(&self.pending[1..9]);
                self.pending.drain(..9);
                Some(Event::Stop {
                    grace: Duration::from_millis(u64::from_be_bytes(millis)),
                })
            }
            MESSAGE_STOP => None,
            MESSAGE_ATTACH => {
                self.pending.drain(..1);
                Some(Event::Attach)
            }
            _ => {
                self.pending.clear();
                None
            }
        }
    }
}

/// A non-blocking vsock listener on the control port, any CID.
fn listen() -> Result<OwnedFd, Errno> {
    let fd = socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::bind(
        fd.as_raw_fd(),
        &VsockAddr::new(libc::VMADDR_CID_ANY, CONTROL_PORT),
    )?;
    socket::listen(&fd, Backlog::new(16)?)?;
    Ok(fd)
}

fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn set_blocking(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Sends `signal` to each process's group (apps run in their own session), or to the process
/// itself if its group is gone.
pub fn signal_all(pids: &[nix::unistd::Pid], signal: Signal) {
    for &pid in pids {
        if nix::sys::signal::killpg(pid, signal).is_err() {
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> Control {
        Control {
            signals: None,
            listener: None,
            from_handlers: None,
            pending: Vec::new(),
            interactive: false,
        }
    }

    #[test]
    fn handler_messages_are_parsed_whole() {
        let mut c = control();
        c.pending.extend_from_slice(&[MESSAGE_STOP, 0, 0, 0]);
        assert!(c.take_message().is_none(), "half a stop waits");
        c.pending
            .extend_from_slice(&[0, 0, 0, 0x13, 0x88, MESSAGE_ATTACH]);
        assert!(matches!(
            c.take_message(),
            Some(Event::Stop { grace }) if grace == Duration::from_millis(5000)
        ));
        assert!(matches!(c.take_message(), Some(Event::Attach)));
        assert!(c.take_message().is_none());
        c.pending.extend_from_slice(b"garbage");
        assert!(c.take_message().is_none());
        assert!(c.pending.is_empty());
    }
}
