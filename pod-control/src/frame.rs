//! Frames: `[kind: u8][length: u32, big-endian][payload: length bytes]`.

use std::io::{self, Read, Write};

use thiserror::Error;

/// The largest payload either side accepts (and sends): a bigger length is a broken peer.
pub const MAX_FRAME: usize = 64 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Host to guest, first frame: a JSON `RequestEnvelope`.
    Request,
    /// Guest to host, answer to the request: a JSON `Response`.
    Response,
    /// Host to guest: bytes for the command's stdin.
    Stdin,
    /// Host to guest: the command's stdin is at its end (empty payload).
    StdinEnd,
    /// Guest to host: bytes the command wrote to stdout (or to its terminal).
    Stdout,
    /// Guest to host: bytes the command wrote to stderr.
    Stderr,
    /// Host to guest: the terminal's new size, JSON `WindowSize`.
    Resize,
    /// Guest to host, last frame of a session: JSON `ExitReport`.
    Exit,
    /// Guest to host, on the status stream (host port `STATUS_PORT`): JSON `AppStatus`.
    Status,
    /// Guest to host, on the status stream, at most once: guest-init's control server listens
    /// (guest port `CONTROL_PORT`), so the pod can be entered and stopped; the
    /// host marks the pod ready (`rkt status --wait-ready`). Empty payload.
    Ready,
}

impl FrameKind {
    fn to_byte(self) -> u8 {
        match self {
            FrameKind::Request => 1,
            FrameKind::Response => 2,
            FrameKind::Stdin => 3,
            FrameKind::StdinEnd => 4,
            FrameKind::Stdout => 5,
            FrameKind::Stderr => 6,
            FrameKind::Resize => 7,
            FrameKind::Exit => 8,
            FrameKind::Status => 9,
            FrameKind::Ready => 10,
        }
    }

    fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Stdin,
            4 => FrameKind::StdinEnd,
            5 => FrameKind::Stdout,
            6 => FrameKind::Stderr,
            7 => FrameKind::Resize,
            8 => FrameKind::Exit,
            9 => FrameKind::Status,
            10 => FrameKind::Ready,
            _ => return None,
        })
    }
}

/// One frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("the peer sent an unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("the peer announced a frame of {0} bytes (at most {MAX_FRAME} allowed)")]
    TooLong(u64),
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one frame; `Ok(None)` when the stream ends cleanly before a frame starts.
pub fn read_frame(reader: &mut impl Read) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; 5];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let kind = FrameKind::from_byte(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let length = usize::try_from(length).map_err(|_| FrameError::TooLong(u64::from(length)))?;
    if length > MAX_FRAME {
        return Err(FrameError::TooLong(length as u64));
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(Some(Frame { kind, payload }))
}

/// Writes one frame (header and payload in one buffer, so a frame is never interleaved with
/// another writer's when the caller holds the stream for the call). Longer payloads are split
/// into several frames of the same kind.
pub fn write_frame(writer: &mut impl Write, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
    let mut chunks = payload.chunks(MAX_FRAME).peekable();
    if chunks.peek().is_none() {
        return writer.write_all(&header(kind, 0));
    }
    for chunk in chunks {
        let mut bytes = Vec::with_capacity(5 + chunk.len());
        bytes.extend_from_slice(&header(kind, chunk.len()));
        bytes.extend_from_slice(chunk);
        writer.write_all(&bytes)?;
    }
    Ok(())
}

fn header(kind: FrameKind, length: usize) -> [u8; 5] {
    // `length` is at most MAX_FRAME, which fits a u32.
    let length = u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes();
    [kind.to_byte(), length[0], length[1], length[2], length[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_long_payloads_are_split() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, FrameKind::Stdout, b"hello").unwrap();
        write_frame(&mut buffer, FrameKind::StdinEnd, b"").unwrap();
        write_frame(&mut buffer, FrameKind::Stdin, &vec![7u8; MAX_FRAME + 10]).unwrap();
        let mut reader = buffer.as_slice();
        let first = read_frame(&mut reader).unwrap().unwrap();
        assert_eq!(
            (first.kind, first.payload.as_slice()),
            (FrameKind::Stdout, &b"hello"[..])
        );
        assert_eq!(
            read_frame(&mut reader).unwrap().unwrap().kind,
            FrameKind::StdinEnd
        );
        assert_eq!(
            read_frame(&mut reader).unwrap().unwrap().payload.len(),
            MAX_FRAME
        );
        assert_eq!(read_frame(&mut reader).unwrap().unwrap().payload.len(), 10);
        assert!(read_frame(&mut reader).unwrap().is_none());
    }

    #[test]
    fn every_kind_has_its_own_byte() {
        let kinds = [
            FrameKind::Request,
            FrameKind::Response,
            FrameKind::Stdin,
            FrameKind::StdinEnd,
            FrameKind::Stdout,
            FrameKind::Stderr,
            FrameKind::Resize,
            FrameKind::Exit,
            FrameKind::Status,
            FrameKind::Ready,
        ];
        let mut bytes: Vec<u8> = kinds.iter().map(|kind| kind.to_byte()).collect();
        for (kind, byte) in kinds.iter().zip(&bytes) {
            assert_eq!(FrameKind::from_byte(*byte), Some(*kind));
        }
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), kinds.len());
    }

    #[test]
    fn broken_frames_are_errors_not_allocations() {
        let too_long = [5u8, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut &too_long[..]),
            Err(FrameError::TooLong(_))
        ));
        assert!(matches!(
            read_frame(&mut &[99u8, 0, 0, 0, 0][..]),
            Err(FrameError::UnknownKind(99))
        ));
        assert!(matches!(
            read_frame(&mut &[5u8, 0, 0][..]),
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut &[5u8, 0, 0, 0, 4, b'a'][..]),
            Err(FrameError::Truncated)
        ));
    }
}
