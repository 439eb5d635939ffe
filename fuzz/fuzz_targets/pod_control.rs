//! The control channel between stage1 and guest-init: a byte stream (delivered in chunks of
//! the input's choosing, as a socket would) cut into frames, and each frame's payload parsed
//! as the message its kind announces: requests (what guest-init parses), responses, exit
//! reports, window sizes and app statuses (what the host parses from the guest).
//!
//! What must hold besides "no panic": whatever parses re-encodes to something that parses to
//! the same value, and every payload the reader accepted frames back to the same frame.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use pod_control::{
    read_frame, write_frame, AppStatus, ExitReport, FrameError, FrameKind, RequestEnvelope,
    Response, WindowSize,
};

/// Hands out the input in chunks whose sizes come from the input (a socket's short reads),
/// and now and then an interrupted read (never twice in a row: a socket is not interrupted
/// forever).
struct Chunked<'a> {
    sizes: &'a [u8],
    data: &'a [u8],
    turn: usize,
    interrupted: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self
            .sizes
            .get(self.turn % self.sizes.len().max(1))
            .copied()
            .unwrap_or(0);
        self.turn += 1;
        if size == 0xff && !self.interrupted {
            self.interrupted = true;
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.interrupted = false;
        let n = (usize::from(size) + 1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn check_payload(kind: FrameKind, payload: &[u8]) {
    match kind {
        FrameKind::Request => {
            if let Ok(request) = RequestEnvelope::parse(payload) {
                let bytes = RequestEnvelope::new(request.clone()).to_bytes();
                assert_eq!(RequestEnvelope::parse(&bytes), Ok(request));
            }
        }
        FrameKind::Response => {
            if let Ok(response) = Response::parse(payload) {
                assert_eq!(Response::parse(&response.to_bytes()), Ok(response));
            }
        }
        FrameKind::Exit => {
            if let Ok(report) = ExitReport::parse(payload) {
                assert_eq!(ExitReport::parse(&report.to_bytes()), Ok(report));
            }
        }
        FrameKind::Resize => {
            if let Ok(size) = WindowSize::parse(payload) {
                assert_eq!(WindowSize::parse(&size.to_bytes()), Ok(size));
            }
        }
        FrameKind::Status => {
            if let Some(status) = AppStatus::from_json(payload) {
                assert_eq!(AppStatus::from_json(&status.to_json()), Some(status));
            }
        }
        // Raw bytes, or nothing the host reads (Ready's payload is ignored).
        FrameKind::Stdin
        | FrameKind::StdinEnd
        | FrameKind::Stdout
        | FrameKind::Stderr
        | FrameKind::Ready => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(split);
    let mut reader = Chunked {
        sizes,
        data: stream,
        turn: 0,
        interrupted: false,
    };
    // Every payload, whatever its frame kind, also goes through every parser: a guest may
    // send any bytes under any kind.
    for _ in 0..64 {
        match read_frame(&mut reader) {
            Ok(Some(frame)) => {
                for kind in [
                    FrameKind::Request,
                    FrameKind::Response,
                    FrameKind::Exit,
                    FrameKind::Resize,
                    FrameKind::Status,
                ] {
                    check_payload(kind, &frame.payload);
                }
                let mut bytes = Vec::new();
                write_frame(&mut bytes, frame.kind, &frame.payload).expect("writing to a Vec");
                let again = read_frame(&mut bytes.as_slice()).expect("a frame we wrote");
                assert_eq!(again, Some(frame));
            }
            Ok(None) => break,
            Err(FrameError::Io(e)) => panic!("a slice reader failed: {e}"),
            Err(_) => break,
        }
    }
});
