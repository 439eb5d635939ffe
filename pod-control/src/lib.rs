//! The contract between the kvm stage1 (and the VMM) on the host and guest-init inside the VM,
//! defined once: the pod share's layout (`layout`), the network description (`network`), the
//! vsock ports and which of them the guest may reach (`ports`), the exit-status reports
//! (`status`), the console markers (`console`), and the control channel (docs/stage1-kvm.md,
//! "The control channel"). One vsock stream per request: the host reaches
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

pub mod console;
pub mod frame;
pub mod isolators;
pub mod layout;
pub mod message;
pub mod network;
pub mod ports;
pub mod status;

pub use frame::{read_frame, write_frame, Frame, FrameError, FrameKind, MAX_FRAME};
pub use message::{
    AppState, ExitReport, Request, RequestEnvelope, Response, ValidationError, WindowSize,
    PROTOCOL_VERSION,
};
pub use ports::CONTROL_PORT;
pub use status::AppStatus;
