//! Tools that run inside the guest to test and measure the VM's devices, and the host-side
//! helpers that check their results.
//!
//! `rkt-vsock-probe` (src/bin) moves deterministic data over AF_VSOCK: `listen`, `send` and
//! `echo`. A host-side test recomputes what was sent with [`pattern`] or directly its summary
//! with [`Summary::of_pattern`], and parses the probe's lines with [`Summary`]'s `FromStr`.
//! The library has no guest-only parts: the tests crate may depend on it.

pub mod pattern;
pub mod probe;
pub mod size;
pub mod summary;
pub mod transport;
pub mod vsock;

pub use pattern::{pattern, Pattern};
pub use summary::{Summary, SummaryHasher};
