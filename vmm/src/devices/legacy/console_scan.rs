//! Reads the guest's console output for the two lines the VMM acts on: guest-init's
//! `rkt-guest-init: exit-status=N` marker and the kernel's `Kernel panic - not syncing`.
//! The guest is untrusted: only the end of the current line is kept (bounded), bytes need not
//! be UTF-8, and lines may arrive split across any number of writes.

use std::time::Instant;

/// The marker guest-init prints before it powers the VM off (docs/foundation.md).
pub const EXIT_MARKER: &[u8] = pod_control::console::EXIT_MARKER.as_bytes();
/// The line guest-init prints in warm mode once it waits for its handover on vsock port 2: the
/// guest is idle and may be snapshotted (docs/foundation.md, "warm mode").
pub const WARM_MARKER: &[u8] = pod_control::console::WARM_MARKER.as_bytes();
/// The kernel's panic line.
pub const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";
/// Bytes kept of one line. The window keeps the line's end, not its start: an app's last output
/// without a trailing newline shares its console line with guest-init's marker, which then sits
/// at the end of a possibly long line (and so can a kernel panic message).
pub const MAX_LINE: usize = 512;

/// What the console told us so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleReport {
    /// The last exit status guest-init reported.
    pub exit_status: Option<u8>,
    /// The kernel panicked.
    pub panicked: bool,
    /// When the guest wrote its first byte.
    pub first_output_at: Option<Instant>,
    /// When the exit marker arrived.
    pub marker_at: Option<Instant>,
}

/// What one call to [`ConsoleScanner::feed`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanNews {
    /// A panic line completed in this chunk.
    pub panic: bool,
    /// guest-init's warm-mode marker line completed in this chunk.
    pub warm_ready: bool,
}

/// The line scanner.
#[derive(Debug, Default)]
pub struct ConsoleScanner {
    line: Vec<u8>,
    report: ConsoleReport,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses the status after the exit marker: 1-3 digits, a value up to 255, then only
/// whitespace.
fn parse_status(rest: &[u8]) -> Option<u8> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 3 || !rest[digits..].iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

impl ConsoleScanner {
    /// A scanner that has seen nothing.
    pub fn new() -> Self {
        ConsoleScanner {
            line: Vec::with_capacity(MAX_LINE),
            report: ConsoleReport::default(),
        }
    }

    /// Scans a chunk of console output.
    pub fn feed(&mut self, bytes: &[u8]) -> ScanNews {
        let mut news = ScanNews::default();
        if !bytes.is_empty() && self.report.first_output_at.is_none() {
            self.report.first_output_at = Some(Instant::now());
        }
        for &b in bytes {
            if b == b'\n' {
                news.warm_ready |= self.is_warm_marker();
                news.panic |= self.finish_line();
            } else {
                if self.line.len() == MAX_LINE {
                    // Drop the older half at once rather than one byte per byte: the window
                    // then always holds at least the last MAX_LINE / 2 bytes of the line.
                    self.line.drain(..MAX_LINE / 2);
                }
                self.line.push(b);
            }
        }
        news
    }

    /// The current line is exactly the warm marker (a trailing `\r` allowed): only guest-init
    /// prints it alone on a line, so an app echoing the text inside a longer line does not count.
    fn is_warm_marker(&self) -> bool {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        line == WARM_MARKER
    }

    /// Handles a complete line; true if it was a (first) panic.
    fn finish_line(&mut self) -> bool {
        let mut new_panic = false;
        if let Some(at) = find(&self.line, EXIT_MARKER) {
            if let Some(status) = parse_status(&self.line[at + EXIT_MARKER.len()..]) {
                self.report.exit_status = Some(status);
                self.report.marker_at = Some(Instant::now());
            }
        }
        if !self.report.panicked && find(&self.line, PANIC_MARKER).is_some() {
            self.report.panicked = true;
            new_panic = true;
        }
        self.line.clear();
        new_panic
    }

    /// Everything found so far.
    pub fn report(&self) -> ConsoleReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_after_long_unterminated_output_is_found() {
        let mut scanner = ConsoleScanner::new();
        scanner.feed(&vec![b'x'; 10 * MAX_LINE + 7]);
        scanner.feed(b"rkt-guest-init: exit-status=9\n");
        assert_eq!(scanner.report().exit_status, Some(9));
        assert!(
            scanner.line.capacity() <= 2 * MAX_LINE,
            "the line buffer stays bounded"
        );
    }

    #[test]
    fn marker_split_across_writes() {
        let mut s = ConsoleScanner::new();
        for chunk in [
            &b"hello\nrkt-guest-"[..],
            b"init: exit-st",
            b"atus=4",
            b"2\r",
            b"\n",
        ] {
            s.feed(chunk);
        }
        let r = s.report();
        assert_eq!(r.exit_status, Some(42));
        assert!(r.marker_at.is_some() && r.first_output_at.is_some());
        assert!(!r.panicked);
    }

    #[test]
    fn marker_needs_a_complete_valid_line() {
        let mut s = ConsoleScanner::new();
        s.feed(b"rkt-guest-init: exit-status=7");
        assert_eq!(s.report().exit_status, None, "no newline yet");
        s.feed(b"\nrkt-guest-init: exit-status=256\n");
        assert_eq!(s.report().exit_status, Some(7), "256 is not a status");
        s.feed(b"rkt-guest-init: exit-status=3x\nrkt-guest-init: exit-status=\n");
        assert_eq!(s.report().exit_status, Some(7));
        s.feed(b"[ 1.0] rkt-guest-init: exit-status=0\n");
        assert_eq!(s.report().exit_status, Some(0), "prefixes are fine");
    }

    #[test]
    fn warm_marker_must_be_the_whole_line() {
        let mut s = ConsoleScanner::new();
        assert!(!s.feed(b"rkt-guest-init: warm-ready").warm_ready);
        assert!(s.feed(b"\r\n").warm_ready);
        assert!(!s.feed(b"echo rkt-guest-init: warm-ready\n").warm_ready);
    }

    #[test]
    fn panic_is_reported_once() {
        let mut s = ConsoleScanner::new();
        let news = s.feed(b"[    0.5] Kernel panic - not syncing: Attempted to kill init!\n");
        assert!(news.panic);
        assert!(s.report().panicked);
        let news = s.feed(b"Kernel panic - not syncing: again\n");
        assert!(!news.panic);
    }

    #[test]
    fn oversized_lines_and_binary_garbage() {
        let mut s = ConsoleScanner::new();
        let mut junk = vec![0xffu8; 10 * MAX_LINE];
        junk.extend_from_slice(b"rkt-guest-init: exit-status=9");
        s.feed(&junk);
        assert!(s.line.len() <= MAX_LINE, "memory stays bounded");
        s.feed(b"\n");
        assert_eq!(
            s.report().exit_status,
            Some(9),
            "a marker at the end of a long line is still seen"
        );
        s.feed(&[0x80, 0xfe, b'\n', 0xc3]);
        s.feed(b"rkt-guest-init: exit-status=5\n");
        // (the last marker wins)
        assert_eq!(
            s.report().exit_status,
            Some(5),
            "non-UTF-8 prefix bytes are fine"
        );
    }
}
