//! Sessions: a command run by `enter`, or the `--interactive` app, connected to the host's
//! stream. Stdin frames go to the command's stdin (a pipe, or the terminal), its output comes
//! back as Stdout/Stderr frames, Resize frames resize the terminal; for `enter` the last frame
//! is the command's exit code.
//!
//! One poll loop in the handler process. Input is written without blocking (a command that
//! does not read its stdin must not stop its output from flowing), and the host's stream is
//! only read while no input is waiting, so what we hold stays bounded by one frame.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use pod_control::{read_frame, write_frame, ExitReport, FrameKind, Response, WindowSize};

use super::handler::{refuse, respond};
use super::terminal;
use super::{set_nonblocking, EnterTarget};
use crate::pod::identity::Identity;
use crate::pod::launch::{self, ProcessSpec};

/// How long output may keep flowing once the command has exited (its background children may
/// hold its stdout open for ever; we stop waiting for them).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// The poll interval while a command runs (to notice its exit).
const TICK: Duration = Duration::from_millis(100);
/// Bytes read from the command's output at a time.
const READ_CHUNK: usize = 32 * 1024;

/// Runs `argv` in app `app` and carries it over `stream` until it exits.
pub fn enter(
    mut stream: File,
    app: &str,
    target: &EnterTarget,
    argv: &[String],
    tty: Option<WindowSize>,
    term: Option<&str>,
) {
    let mut env = target.env.clone();
    if let (Some(_), Some(term)) = (tty, term) {
        env.retain(|(name, _)| name != "TERM");
        env.push(("TERM".to_string(), term.to_string()));
    }
    // rkt's enter runs as root, in the app's root directory and environment.
    let root = Identity {
        uid: 0,
        gid: 0,
        supplementary_gids: Vec::new(),
    };
    let label = format!("enter in app {app}");
    let ends = match Ends::new(target, tty) {
        Ok(ends) => ends,
        Err(error) => {
            return refuse(
                &mut stream,
                format!("cannot set up the command's stdio: {error}"),
            )
        }
    };
    let spec = ProcessSpec {
        label: &label,
        root: &target.root,
        argv,
        env: &env,
        identity: &root,
        working_dir: "/",
        cgroup_procs: target.cgroup_procs.as_deref(),
        stdin: Some(ends.child_stdin.as_fd()),
        stdout: ends.child_stdout.as_fd(),
        stderr: ends.child_stderr.as_fd(),
        stderr_is_console: false,
        controlling_tty: tty.is_some(),
        // Into the pod's pid namespace and the app's mount namespace (so its root, /proc and
        // masked paths are the app's), with the app's hardening: rkt's enter gave every
        // capability (CVE-2019-10144); this one gives what the app has.
        namespaces: Some(launch::Namespaces {
            pid: &target.pid_ns,
            mnt: &target.mnt_ns,
        }),
        hardening: &target.hardening,
    };
    let child = match launch::launch(&spec) {
        Ok(pid) => pid,
        Err(error) => return refuse(&mut stream, format!("cannot start the command: {error}")),
    };
    respond(&mut stream, &Response::Started);
    // Only the command keeps its ends: our copies close, so its output ends when it exits.
    let relay = Relay {
        input: Some(ends.input),
        input_is_terminal: tty.is_some(),
        outputs: ends.outputs,
        pending: Vec::new(),
        input_ended: false,
    };
    drop((ends.child_stdin, ends.child_stdout, ends.child_stderr));
    if let Some(code) = relay.run(&mut stream, Some(child)) {
        let _ = write_frame(
            &mut stream,
            FrameKind::Exit,
            &ExitReport { code }.to_bytes(),
        );
        let _ = stream.flush();
    }
}

/// Carries the `--interactive` app's terminal (`master`) until the app ends.
pub fn attach(mut stream: File, master: OwnedFd, size: WindowSize) {
    let _ = terminal::set_size(&master, size);
    let output = match master.try_clone() {
        Ok(output) => output,
        Err(error) => return refuse(&mut stream, format!("cannot use the terminal: {error}")),
    };
    let _ = set_nonblocking(&master);
    respond(&mut stream, &Response::Started);
    let relay = Relay {
        input: Some(master),
        input_is_terminal: true,
        outputs: vec![(output, FrameKind::Stdout)],
        pending: Vec::new(),
        input_ended: false,
    };
    relay.run(&mut stream, None);
}

/// The command's stdio and our ends of it.
struct Ends {
    child_stdin: OwnedFd,
    child_stdout: OwnedFd,
    child_stderr: OwnedFd,
    /// Where stdin bytes go (non-blocking).
    input: OwnedFd,
    /// What we read the command's output from, and as which frame kind.
    outputs: Vec<(OwnedFd, FrameKind)>,
}

impl Ends {
    fn new(target: &EnterTarget, tty: Option<WindowSize>) -> io::Result<Ends> {
        if let Some(size) = tty {
            let pty = terminal::open_in_root(&target.root)?;
            terminal::set_size(&pty.master, size)?;
            set_nonblocking(&pty.master)?;
            return Ok(Ends {
                child_stdin: pty.slave.try_clone()?,
                child_stdout: pty.slave.try_clone()?,
                child_stderr: pty.slave,
                input: pty.master.try_clone()?,
                outputs: vec![(pty.master, FrameKind::Stdout)],
            });
        }
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from);
        let (stdin_read, stdin_write) = pipe()?;
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        set_nonblocking(&stdin_write)?;
        Ok(Ends {
            child_stdin: stdin_read,
            child_stdout: stdout_write,
            child_stderr: stderr_write,
            input: stdin_write,
            outputs: vec![
                (stdout_read, FrameKind::Stdout),
                (stderr_read, FrameKind::Stderr),
            ],
        })
    }
}

struct Relay {
    input: Option<OwnedFd>,
    input_is_terminal: bool,
    outputs: Vec<(OwnedFd, FrameKind)>,
    /// Stdin bytes not yet taken by the command.
    pending: Vec<u8>,
    /// The host sent StdinEnd: close the input once `pending` is written.
    input_ended: bool,
}

impl Relay {
    /// Runs until the command (`child`; `None`: until the output ends) is over; returns its
    /// exit code, or `None` when the host went away (the command is then killed) or there is
    /// no child.
    fn run(mut self, stream: &mut File, child: Option<Pid>) -> Option<u8> {
        let mut exited: Option<(u8, Instant)> = None;
        let mut host_open = true;
        loop {
            if let Some((code, at)) = exited {
                if self.outputs.is_empty() || at.elapsed() >= DRAIN_AFTER_EXIT {
                    return Some(code);
                }
            }
            if child.is_none() && self.outputs.is_empty() {
                return None;
            }
            if !host_open {
                if let Some(child) = child {
                    kill_session(child);
                }
                return None;
            }
            let (stream_ready, input_ready, outputs_ready) = self.poll(stream);
            if let (Some(pid), None) = (child, exited) {
                if let Some(code) = try_wait(pid) {
                    exited = Some((code, Instant::now()));
                }
            }
            if stream_ready && !self.host_frame(stream) {
                host_open = false;
                continue;
            }
            if input_ready {
                self.write_input();
            }
            let mut closed = Vec::new();
            for (index, ready) in outputs_ready.iter().enumerate() {
                if *ready && !self.copy_output(index, stream) {
                    closed.push(index);
                }
            }
            for index in closed.into_iter().rev() {
                self.outputs.remove(index);
            }
        }
    }

    /// Polls the host stream (when no input waits), the input (when some does) and the
    /// outputs; says which are ready.
    fn poll(&self, stream: &File) -> (bool, bool, Vec<bool>) {
        let mut fds = Vec::new();
        let want_stream = self.pending.is_empty();
        if want_stream {
            fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
        }
        let want_input = !self.pending.is_empty() && self.input.is_some();
        if let (true, Some(input)) = (want_input, &self.input) {
            fds.push(PollFd::new(input.as_fd(), PollFlags::POLLOUT));
        }
        for (output, _) in &self.outputs {
            fds.push(PollFd::new(output.as_fd(), PollFlags::POLLIN));
        }
        let millis = u32::try_from(TICK.as_millis()).unwrap_or(100);
        if nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        )
        .is_err()
        {
            return (false, false, vec![false; self.outputs.len()]);
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let mut index = 0;
        let stream_ready = want_stream && ready[index];
        if want_stream {
            index += 1;
        }
        let input_ready = want_input && ready[index];
        if want_input {
            index += 1;
        }
        (stream_ready, input_ready, ready[index..].to_vec())
    }

    /// Handles one frame from the host; false when the host is gone or broke the protocol.
    fn host_frame(&mut self, stream: &mut File) -> bool {
        let frame = match read_frame(stream) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => return false,
        };
        match frame.kind {
            FrameKind::Stdin if !self.input_ended => {
                if self.input.is_some() {
                    self.pending = frame.payload;
                    self.write_input();
                }
                true
            }
            FrameKind::StdinEnd => {
                // A terminal has no end of input (the user types ^D); a pipe does.
                if !self.input_is_terminal {
                    self.input_ended = true;
                    if self.pending.is_empty() {
                        self.input = None;
                    }
                }
                true
            }
            FrameKind::Resize => {
                if let (true, Some(input), Ok(size)) = (
                    self.input_is_terminal,
                    &self.input,
                    WindowSize::parse(&frame.payload),
                ) {
                    let _ = terminal::set_size(input, size);
                }
                true
            }
            // Stdin after StdinEnd, or a frame only the guest sends.
            _ => false,
        }
    }

    fn write_input(&mut self) {
        let Some(input) = &self.input else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(input, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                // The command closed its stdin: what it did not read is dropped.
                Err(_) => {
                    self.pending.clear();
                    self.input = None;
                    return;
                }
            }
        }
        if self.input_ended {
            self.input = None;
        }
    }

    /// Copies what output `index` has to the host; false when it has ended.
    fn copy_output(&mut self, index: usize, stream: &mut File) -> bool {
        let Some((output, kind)) = self.outputs.get(index) else {
            return false;
        };
        let mut buffer = vec![0u8; READ_CHUNK];
        match nix::unistd::read(output.as_raw_fd(), &mut buffer) {
            Ok(0) => false,
            Ok(n) => write_frame(stream, *kind, &buffer[..n]).is_ok(),
            Err(Errno::EAGAIN | Errno::EINTR) => true,
            // EIO: a terminal whose other end is closed everywhere.
            Err(_) => false,
        }
    }
}

/// The command's exit code if it has ended (reaped here: it is our child).
fn try_wait(pid: Pid) -> Option<u8> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one c_int through the pointer, a live local.
    let reaped = unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::WNOHANG) };
    if reaped == pid.as_raw() {
        crate::reaper::exit_code(status)
    } else {
        None
    }
}

/// The host went away: end the command and what it started (its own session), then reap it.
fn kill_session(pid: Pid) {
    super::signal_all(&[pid], Signal::SIGHUP);
    super::signal_all(&[pid], Signal::SIGKILL);
    let mut status: libc::c_int = 0;
    // SAFETY: as in try_wait; blocking is fine, SIGKILL cannot be ignored.
    unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) };
}
