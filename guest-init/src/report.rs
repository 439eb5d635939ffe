//! What guest-init tells the host: error lines and the exit marker.
//!
//! The VMM watches the serial console for `rkt-guest-init: exit-status=<N>` (see
//! docs/foundation.md). This marker is temporary: vsock and status files replace it with the
//! pod issue, as another `Reporter` destination.

use std::fmt::Display;
use std::io::{self, Write};

use crate::console;

pub const MARKER_PREFIX: &str = pod_control::console::EXIT_MARKER;
pub const ERROR_PREFIX: &str = "rkt-guest-init: error: ";
pub const NOTE_PREFIX: &str = "rkt-guest-init: ";

/// The exit marker, a whole line.
pub fn marker_line(status: u8) -> String {
    format!("{MARKER_PREFIX}{status}\n")
}

/// An error as one line: embedded line breaks (say, from an OS message) are flattened so a
/// reader of the console never sees half an error.
pub fn error_line(error: &dyn Display) -> String {
    let message = error.to_string().replace(['\r', '\n'], " ");
    format!("{ERROR_PREFIX}{message}\n")
}

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// As PID 1 in the VM: /dev/console, whatever our own stdio is.
    Console,
    /// Run as an ordinary process (tests, trying it on a host): the marker on stdout, errors on
    /// stderr.
    StdStreams,
}

#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    destination: Destination,
}

impl Reporter {
    pub fn new(destination: Destination) -> Reporter {
        Reporter { destination }
    }

    pub fn error(&self, error: &dyn Display) {
        self.write(&error_line(error), Stream::Err);
    }

    /// A progress line (`rkt-guest-init: <message>`), for `rkt.debug=1`.
    pub fn note(&self, message: &dyn Display) {
        let message = message.to_string().replace(['\r', '\n'], " ");
        self.write(&format!("{NOTE_PREFIX}{message}\n"), Stream::Err);
    }

    pub fn exit_status(&self, status: u8) {
        self.write(&marker_line(status), Stream::Out);
    }

    /// Writes one line in a single write, so it is not interleaved with the command's output.
    /// Failures are ignored: there is nowhere left to report them.
    fn write(&self, line: &str, stream: Stream) {
        if self.destination == Destination::Console {
            if let Ok(mut console) = console::open_console() {
                if console.write_all(line.as_bytes()).is_ok() {
                    return;
                }
            }
            // No console (devtmpfs failed to mount and the initramfs lacks the node): stderr
            // is the best remaining guess.
        }
        let _ = match stream {
            Stream::Out => io::stdout().lock().write_all(line.as_bytes()),
            Stream::Err => io::stderr().lock().write_all(line.as_bytes()),
        };
        let _ = io::stdout().flush();
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_format_is_the_documented_one() {
        assert_eq!(marker_line(0), "rkt-guest-init: exit-status=0\n");
        assert_eq!(marker_line(42), "rkt-guest-init: exit-status=42\n");
        assert_eq!(marker_line(255), "rkt-guest-init: exit-status=255\n");
    }

    #[test]
    fn error_is_one_line() {
        let line = error_line(&"first\nsecond\r\nthird");
        assert_eq!(line, "rkt-guest-init: error: first second  third\n");
        assert_eq!(line.matches('\n').count(), 1);
    }
}
