//! One connection to guest-init's control server: `CONNECT 1\n` to the VM's socket, `OK ...\n`
//! back, then our request frame and its response frame.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use pod_control::CONTROL_PORT;
use pod_control::{read_frame, write_frame, FrameKind, Request, RequestEnvelope, Response};

use crate::error::Stage1Error;

/// The VMM answers a CONNECT within its own 5 s; a bit more here.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the guest may take to answer a request.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// `OK 4294967295\n` is 14 bytes.
const MAX_OK_LINE: usize = 32;

/// Connects to the guest's control port through the VM socket `socket`.
pub fn connect(socket: &Path) -> Result<UnixStream, Stage1Error> {
    let unreachable = |why: String| {
        Stage1Error::Control(format!(
            "cannot reach the pod's guest through {} ({why})",
            socket.display()
        ))
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| unreachable(e.to_string()))?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| unreachable(e.to_string()))?;
    stream
        .write_all(format!("CONNECT {CONTROL_PORT}\n").as_bytes())
        .map_err(|e| unreachable(e.to_string()))?;
    // Byte by byte: what follows the line is the guest's, not ours to swallow.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(unreachable(
                    "the guest's control server is not listening (yet)".to_string(),
                ))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < MAX_OK_LINE => line.push(byte[0]),
            Ok(_) => return Err(unreachable("the VMM's answer is too long".to_string())),
            Err(e) => return Err(unreachable(e.to_string())),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(unreachable(format!(
            "the VMM answered {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(stream)
}

/// Sends `request` and reads the guest's response (an `error` response becomes an error).
pub fn request(stream: &mut UnixStream, request: Request) -> Result<Response, Stage1Error> {
    let failed = |why: String| Stage1Error::Control(format!("the control request failed: {why}"));
    write_frame(
        stream,
        FrameKind::Request,
        &RequestEnvelope::new(request).to_bytes(),
    )
    .map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(|e| failed(e.to_string()))?;
    let frame = read_frame(stream).map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(None)
        .map_err(|e| failed(e.to_string()))?;
    let frame = frame.ok_or_else(|| failed("the guest closed the connection".to_string()))?;
    if frame.kind != FrameKind::Response {
        return Err(failed(format!("the guest sent {:?} first", frame.kind)));
    }
    match Response::parse(&frame.payload).map_err(|e| failed(e.to_string()))? {
        Response::Error { message } => Err(Stage1Error::Control(printable(&message))),
        response => Ok(response),
    }
}

/// The guest's words, safe to print: control characters replaced, length bounded.
pub fn printable(text: &str) -> String {
    text.chars()
        .take(1024)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_handshake_and_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock");
        let listener = UnixListener::bind(&path).unwrap();
        let guest = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = [0u8; 10];
            s.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"CONNECT 1\n");
            s.write_all(b"OK 1073741824\n").unwrap();
            let frame = read_frame(&mut s).unwrap().unwrap();
            assert_eq!(
                RequestEnvelope::parse(&frame.payload).unwrap(),
                Request::Ping
            );
            let bad = Response::Error {
                message: "no\x1b[2J".to_string(),
            };
            write_frame(&mut s, FrameKind::Response, &bad.to_bytes()).unwrap();
        });
        let mut stream = connect(&path).unwrap();
        let err = request(&mut stream, Request::Ping).unwrap_err().to_string();
        assert_eq!(err, "no?[2J");
        guest.join().unwrap();
    }

    #[test]
    fn a_closed_port_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock");
        let listener = UnixListener::bind(&path).unwrap();
        let guest = std::thread::spawn(move || {
            // The VMM reads the CONNECT line, finds no guest listener, closes.
            let (mut s, _) = listener.accept().unwrap();
            let mut line = [0u8; 10];
            s.read_exact(&mut line).unwrap();
            drop(s);
        });
        let err = connect(&path).unwrap_err().to_string();
        assert!(err.contains("not listening"), "{err}");
        guest.join().unwrap();
        let err = connect(&dir.path().join("none")).unwrap_err().to_string();
        assert!(err.contains("cannot reach the pod's guest"), "{err}");
    }
}
