//! The host side of a session (`enter`, `--interactive`): our stdin goes to the guest as Stdin
//! frames (StdinEnd at its end), the guest's Stdout/Stderr frames go to our stdout/stderr, and
//! with a terminal its size follows ours (Resize frames). Ends with the guest's Exit frame
//! (`enter`) or the end of the stream (`attach`).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pod_control::{read_frame, write_frame, ExitReport, FrameKind, WindowSize, MAX_FRAME};

use super::terminal;
use crate::error::Stage1Error;

/// How often the terminal's size is checked (cheaper and simpler than a SIGWINCH handler in a
/// process that also runs a VM).
const RESIZE_POLL: Duration = Duration::from_millis(250);

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The command's exit code (`enter`).
    Exited(u8),
    /// The guest closed the stream (`attach`: the app ended; `enter`: the pod ended).
    Closed,
}

/// Relays until the session ends. `size`: the terminal size sent with the request (then our
/// size changes are passed on).
pub fn relay(stream: UnixStream, size: Option<WindowSize>) -> Result<Ending, Stage1Error> {
    let failed = |e: io::Error| Stage1Error::Control(format!("the session's stream failed: {e}"));
    let writer = Arc::new(Mutex::new(stream.try_clone().map_err(failed)?));
    let done = Arc::new(AtomicBool::new(false));
    forward_stdin(Arc::clone(&writer));
    if let Some(size) = size {
        follow_size(Arc::clone(&writer), Arc::clone(&done), size);
    }
    let ending = copy_output(stream);
    done.store(true, Ordering::Relaxed);
    ending
}

/// Our stdin to the guest, in a thread of its own (a blocking read that may never end; the
/// process exits around it).
fn forward_stdin(writer: Arc<Mutex<UnixStream>>) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; MAX_FRAME];
        let mut stdin = io::stdin();
        loop {
            let (kind, n) = match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => (FrameKind::StdinEnd, 0),
                Ok(n) => (FrameKind::Stdin, n),
            };
            let sent = match writer.lock() {
                Ok(mut stream) => write_frame(&mut *stream, kind, &buffer[..n]).is_ok(),
                Err(_) => false,
            };
            if !sent || kind == FrameKind::StdinEnd {
                return;
            }
        }
    });
}

fn follow_size(writer: Arc<Mutex<UnixStream>>, done: Arc<AtomicBool>, mut last: WindowSize) {
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(RESIZE_POLL);
            let Some(now) = terminal::size() else {
                continue;
            };
            if now != last {
                last = now;
                let sent = match writer.lock() {
                    Ok(mut stream) => {
                        write_frame(&mut *stream, FrameKind::Resize, &now.to_bytes()).is_ok()
                    }
                    Err(_) => false,
                };
                if !sent {
                    return;
                }
            }
        }
    });
}

/// The guest's frames to our stdout and stderr, until Exit or the end of the stream.
fn copy_output(mut stream: UnixStream) -> Result<Ending, Stage1Error> {
    let broken = |why: String| Stage1Error::Control(format!("the guest broke the session: {why}"));
    loop {
        let frame = match read_frame(&mut stream) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(Ending::Closed),
            Err(e) => return Err(broken(e.to_string())),
        };
        match frame.kind {
            FrameKind::Stdout => write_out(&mut io::stdout().lock(), &frame.payload),
            FrameKind::Stderr => write_out(&mut io::stderr().lock(), &frame.payload),
            FrameKind::Exit => {
                let report =
                    ExitReport::parse(&frame.payload).map_err(|e| broken(e.to_string()))?;
                return Ok(Ending::Exited(report.code));
            }
            other => return Err(broken(format!("it sent a {other:?} frame"))),
        }
    }
}

fn write_out(out: &mut impl Write, bytes: &[u8]) {
    // Our own stdout going away (a closed pipe) must not end the session early: the exit code
    // still matters.
    let _ = out.write_all(bytes);
    let _ = out.flush();
}
