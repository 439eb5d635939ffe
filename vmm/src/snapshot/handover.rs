//! The host side of the warm handover: once a warm guest is restored, the VMM connects to
//! guest-init on vsock port [`HANDOVER_PORT`] through the VM's own vsock unix socket and sends
//! one JSON line (docs/foundation.md, "warm mode"):
//!
//! `{"version":1,"params":"<command line>","realtime_sec":S,"realtime_nsec":N,"entropy":"<hex>"}`
//!
//! `params` is what a cold boot would have had on its kernel command line (guest-init's own
//! `rkt.*` parameters, `--` and the command), the time is the host's wall clock, `entropy` 64
//! bytes from the host's getrandom. guest-init answers `OK\n` once it has set its clock and
//! reseeded its RNG, or `ERROR <reason>\n`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::SnapshotError;

/// The vsock port guest-init listens on in warm mode.
pub const HANDOVER_PORT: u32 = pod_control::ports::HANDOVER_PORT;
/// Version of the handover message.
pub const HANDOVER_VERSION: u32 = 1;
/// The largest message guest-init accepts (the newline included).
pub const MAX_HANDOVER_LEN: usize = 16 * 1024;
/// Bytes of fresh entropy sent.
pub const ENTROPY_BYTES: usize = 64;
/// How long each step may take (the emulated test host is slow).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest line we read back (the vsock `OK <port>` and guest-init's answer).
const MAX_REPLY: usize = 256;

/// The message, as sent.
#[derive(Debug, Serialize)]
pub struct HandoverMessage<'a> {
    /// [`HANDOVER_VERSION`].
    pub version: u32,
    /// The command line a cold boot would have had.
    pub params: &'a str,
    /// Host wall clock, seconds since the epoch.
    pub realtime_sec: u64,
    /// And nanoseconds.
    pub realtime_nsec: u32,
    /// Hex of [`ENTROPY_BYTES`] random bytes.
    pub entropy: String,
}

fn fresh_entropy() -> Result<[u8; ENTROPY_BYTES], SnapshotError> {
    let mut bytes = [0u8; ENTROPY_BYTES];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SnapshotError::Handover(format!(
                "getrandom failed: {error}"
            )));
        }
        filled += n as usize;
    }
    Ok(bytes)
}

/// Reads one line (without its newline) of at most [`MAX_REPLY`] bytes. Buffered: the answers
/// arrive whole, and a read per byte cost a system call each (about 17 per handover).
fn read_line(reader: &mut impl BufRead) -> Result<String, SnapshotError> {
    let mut line = Vec::new();
    loop {
        match reader
            .by_ref()
            .take(MAX_REPLY as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SnapshotError::Handover(format!("reading: {e}"))),
        }
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.len() > MAX_REPLY {
        return Err(SnapshotError::Handover("over-long answer".into()));
    }
    // The guest is untrusted: show its words, not its control characters.
    Ok(String::from_utf8_lossy(&line)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect())
}

/// Connects to guest-init through the VM's vsock socket `uds_path` and hands it `params`.
pub fn send(uds_path: &Path, params: &str) -> Result<(), SnapshotError> {
    let fail = |what: String| SnapshotError::Handover(what);
    let stream = UnixStream::connect(uds_path)
        .map_err(|e| fail(format!("cannot connect to {}: {e}", uds_path.display())))?;
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(|e| fail(format!("socket timeouts: {e}")))?;
    writer
        .write_all(format!("CONNECT {HANDOVER_PORT}\n").as_bytes())
        .map_err(|e| fail(format!("sending CONNECT: {e}")))?;
    let answer = read_line(&mut reader)?;
    if !answer.starts_with("OK ") {
        return Err(fail(format!(
            "guest-init does not listen on vsock port {HANDOVER_PORT} (the snapshot was not \
             made in warm mode?): the VMM answered {answer:?}"
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| fail("the host clock is before 1970".into()))?;
    let message = HandoverMessage {
        version: HANDOVER_VERSION,
        params,
        realtime_sec: now.as_secs(),
        realtime_nsec: now.subsec_nanos(),
        entropy: hex::encode(fresh_entropy()?),
    };
    let mut line = serde_json::to_vec(&message).map_err(|e| fail(format!("encoding: {e}")))?;
    line.push(b'\n');
    if line.len() > MAX_HANDOVER_LEN {
        return Err(fail(format!(
            "the parameters make a {}-byte message, more than the {MAX_HANDOVER_LEN} guest-init \
             accepts: shorten the command line",
            line.len()
        )));
    }
    writer
        .write_all(&line)
        .map_err(|e| fail(format!("sending the parameters: {e}")))?;
    let reply = read_line(&mut reader)?;
    if reply != "OK" {
        return Err(fail(format!("guest-init refused the handover: {reply:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_line_by_line_bounded_and_cleaned() {
        let mut two = std::io::Cursor::new(b"OK 1073741824\nOK\n".to_vec());
        assert_eq!(read_line(&mut two).unwrap(), "OK 1073741824");
        assert_eq!(read_line(&mut two).unwrap(), "OK");
        assert_eq!(read_line(&mut two).unwrap(), "");
        let mut unterminated = std::io::Cursor::new(b"ERROR bad\x1b[2J".to_vec());
        assert_eq!(read_line(&mut unterminated).unwrap(), "ERROR bad?[2J");
        let mut exactly = std::io::Cursor::new([vec![b'a'; MAX_REPLY], b"\n".to_vec()].concat());
        assert_eq!(read_line(&mut exactly).unwrap().len(), MAX_REPLY);
        let mut long = std::io::Cursor::new(vec![b'a'; MAX_REPLY + 1]);
        assert!(read_line(&mut long).is_err());
        let mut endless = std::io::repeat(b'x');
        assert!(read_line(&mut std::io::BufReader::new(&mut endless)).is_err());
    }

    #[test]
    fn entropy_differs_between_calls() {
        assert_ne!(fresh_entropy().unwrap(), fresh_entropy().unwrap());
    }

    #[test]
    fn message_is_one_json_line() {
        let m = HandoverMessage {
            version: 1,
            params: "rkt.share=pod -- /bin/sh -c \"echo hi\"",
            realtime_sec: 5,
            realtime_nsec: 6,
            entropy: "00".into(),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains('\n'));
        assert!(
            text.contains(r#""params":"rkt.share=pod -- /bin/sh -c \"echo hi\"""#),
            "{text}"
        );
    }
}
