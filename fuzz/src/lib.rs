//! Shared pieces of the fuzz targets: a fake guest whose descriptor chains the fuzzer input
//! lays out, and a fake virtio device for the transport.
//!
//! Every target turns its input into choices through `arbitrary::Unstructured`, so a byte
//! string always decodes to something (running out of input just ends the lists early) and
//! libFuzzer's mutations stay meaningful.

pub mod guest;

pub use libfuzzer_sys::arbitrary::{self, Unstructured};
