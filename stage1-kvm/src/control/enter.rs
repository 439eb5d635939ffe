//! The `enter` entrypoint (`enter_kvm`): `--pid=PID --appname=APP -- CMD [ARGS...]`, run by
//! `rkt enter` in the pod directory. Runs the command in the app over the control channel,
//! with a terminal when our stdin is one, and exits with the command's exit code.

use pod_control::{Request, Response};

use super::session::{self, Ending};
use super::terminal::{self, RawMode};
use super::{client, current_pod};
use crate::args::EnterArgs;
use crate::error::Stage1Error;

pub fn enter(args: &EnterArgs) -> Result<i32, Stage1Error> {
    let (_pod, _uuid, socket) = current_pod()?;
    if args.command.is_empty() {
        return Err(Stage1Error::Usage(
            "enter needs a command after `--` (stage0 passes rkt's default)".to_string(),
        ));
    }
    // A terminal when we have one, as rkt's enter did.
    let tty = terminal::stdin_is_terminal()
        .then(|| terminal::size().unwrap_or(pod_control::WindowSize { rows: 24, cols: 80 }));
    let mut stream = client::connect(&socket)?;
    let response = client::request(
        &mut stream,
        Request::Enter {
            app: args.appname.clone(),
            argv: args.command.clone(),
            tty,
            term: tty.and(terminal::term()),
        },
    )?;
    if response != Response::Started {
        return Err(Stage1Error::Control(format!(
            "the guest answered {response:?} to enter"
        )));
    }
    // Raw from here until we return, whichever way.
    let _raw = tty.and_then(|_| RawMode::enter());
    match session::relay(stream, tty)? {
        Ending::Exited(code) => Ok(i32::from(code)),
        Ending::Closed => Err(Stage1Error::Control(
            "the pod ended during the session (no exit code came back)".to_string(),
        )),
    }
}
