//! One control connection, in its own process (forked from PID 1): read the request, answer
//! it, and for `enter`/`attach` carry the session. Every failure ends this connection only.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use pod_control::{read_frame, write_frame, FrameKind, Request, RequestEnvelope, Response};

use super::{session, set_blocking, PodView, MESSAGE_ATTACH, MESSAGE_STOP};

/// How long the host has to send its request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn serve(
    connection: OwnedFd,
    view: &mut dyn PodView,
    to_pid1: Option<OwnedFd>,
    interactive: bool,
) {
    // accept4 does not pass O_NONBLOCK on from the listener, but make sure: the session code
    // relies on blocking frame reads after poll.
    let _ = set_blocking(&connection);
    let _ = setsockopt(
        &connection,
        sockopt::ReceiveTimeout,
        &TimeVal::new(REQUEST_TIMEOUT.as_secs() as i64, 0),
    );
    let mut stream = File::from(connection);
    let request = match read_frame(&mut stream) {
        Ok(Some(frame)) if frame.kind == FrameKind::Request => {
            RequestEnvelope::parse(&frame.payload).map_err(|e| e.to_string())
        }
        Ok(Some(frame)) => Err(format!(
            "the first frame must be a request, not {:?}",
            frame.kind
        )),
        Ok(None) => return,
        Err(error) => Err(format!("cannot read the request: {error}")),
    };
    let _ = setsockopt(&stream, sockopt::ReceiveTimeout, &TimeVal::new(0, 0));
    let request = match request {
        Ok(request) => request,
        Err(message) => return refuse(&mut stream, message),
    };
    match request {
        Request::Ping => respond(&mut stream, &Response::Pong { apps: view.apps() }),
        Request::Stop { grace_ms } => {
            let mut message = vec![MESSAGE_STOP];
            message.extend_from_slice(&grace_ms.to_be_bytes());
            match tell_pid1(to_pid1.as_ref(), &message) {
                Ok(()) => respond(&mut stream, &Response::Stopping),
                Err(error) => refuse(&mut stream, format!("cannot pass the stop on: {error}")),
            }
        }
        Request::Enter {
            app,
            argv,
            tty,
            term,
        } => {
            let target = view.enter_target(&app);
            view.release_inherited();
            match target {
                Err(message) => refuse(&mut stream, message),
                Ok(target) => session::enter(stream, &app, &target, &argv, tty, term.as_deref()),
            }
        }
        Request::Attach { tty, .. } => {
            let terminal = view.interactive_terminal();
            view.release_inherited();
            match terminal {
                None if !interactive => refuse(
                    &mut stream,
                    "this pod was not started with --interactive: use enter".to_string(),
                ),
                None => refuse(
                    &mut stream,
                    "the interactive app's terminal is gone (attached already, or the app \
                     ended)"
                        .to_string(),
                ),
                Some(master) => {
                    if let Err(error) = tell_pid1(to_pid1.as_ref(), &[MESSAGE_ATTACH]) {
                        return refuse(&mut stream, format!("cannot start the app: {error}"));
                    }
                    session::attach(stream, master, tty);
                }
            }
        }
    }
}

fn tell_pid1(pipe: Option<&OwnedFd>, message: &[u8]) -> io::Result<()> {
    let pipe = pipe.ok_or_else(|| io::Error::other("no pipe to PID 1"))?;
    let written = nix::unistd::write(pipe, message)?;
    if written != message.len() {
        return Err(io::Error::other("a short write to PID 1"));
    }
    Ok(())
}

pub fn respond(stream: &mut File, response: &Response) {
    let _ = write_frame(stream, FrameKind::Response, &response.to_bytes());
    let _ = stream.flush();
}

pub fn refuse(stream: &mut File, message: String) {
    respond(stream, &Response::Error { message });
}
