//! The pod control channel: how the kvm stage1 on the host talks to guest-init inside the VM
//! (docs/stage1-kvm.md, "The control channel"). One vsock stream per request: the host reaches
//! guest port [`CONTROL_PORT`] through the VMM's unix socket (`CONNECT 1\n`, `OK ...\n`), sends
//! one [`Request`] frame, reads one [`Response`] frame, and for `enter` and `attach` the stream
//! then carries the session: stdin, stdout, stderr, window sizes, and the exit code.
//!
//! Framing (`frame`): a kind byte, a 4-byte big-endian length, then that many bytes (at most
//! [`MAX_FRAME`]). Control frames carry JSON (`message`); data frames carry raw bytes. We looked
//! for a framing crate first: tokio-util's codecs need an async runtime and both ends here are
//! plain blocking code (guest-init is a single-threaded PID 1), so the five-byte header is ours.
//!
//! Both ends are each other's untrusted input: every length is bounded before anything is
//! allocated, every message is validated (`Request::validate`), and a malformed frame ends only
//! the stream it arrived on.

pub mod frame;
pub mod message;

pub use frame::{read_frame, write_frame, Frame, FrameError, FrameKind, MAX_FRAME};
pub use message::{
    AppState, ExitReport, Request, RequestEnvelope, Response, ValidationError, WindowSize,
    PROTOCOL_VERSION,
};

/// The guest port guest-init's control server listens on (port 2 belongs to warm start).
pub const CONTROL_PORT: u32 = 1;
