//! `run --interactive`: once guest-init listens, attach to the pod's one app (which starts
//! only then, on a terminal in the guest) and carry its terminal over the control channel.
//! The host terminal is put in raw mode by `run` for as long as it runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use pod_control::{Request, WindowSize};

use super::{client, session, terminal};
use crate::error::Stage1Error;

/// Between attempts while the guest boots.
const RETRY: Duration = Duration::from_millis(50);

/// The attach session, running in its own thread.
pub struct Attach {
    done: Receiver<Result<(), Stage1Error>>,
}

/// Starts attaching through `socket`; gives up when `vm_ended` is set before it got through.
pub fn start(socket: PathBuf, vm_ended: Arc<AtomicBool>) -> Attach {
    let (sender, done) = mpsc::channel();
    std::thread::spawn(move || {
        let size = terminal::size().unwrap_or(WindowSize { rows: 24, cols: 80 });
        let result = loop {
            if vm_ended.load(Ordering::Relaxed) {
                break Err(Stage1Error::Control(
                    "the pod ended before its terminal could be attached".to_string(),
                ));
            }
            let Ok(mut stream) = client::connect(&socket) else {
                std::thread::sleep(RETRY);
                continue;
            };
            let request = Request::Attach {
                tty: size,
                term: terminal::term(),
            };
            break client::request(&mut stream, request)
                .and_then(|_| session::relay(stream, Some(size)))
                .map(|_| ());
        };
        let _ = sender.send(result);
    });
    Attach { done }
}

impl Attach {
    /// After the VM ended: waits up to `drain` for the last output, and reports a session that
    /// never started or broke.
    pub fn finish(self, drain: Duration) -> Result<(), Stage1Error> {
        match self.done.recv_timeout(drain) {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}
