//! Writes the guest's initramfs: an uncompressed cpio "newc" archive holding guest-init as
//! /init, the standard directories, the device nodes the kernel needs before devtmpfs, and any
//! extra files (busybox for tests).
//!
//! Output is deterministic: the same inputs give the same bytes (owner root, mtime 0, entries in
//! path order), so the archive can be hashed into cache and snapshot keys.

mod builder;
mod busybox;
mod dest;
mod error;
pub mod layout;
mod newc;

pub use builder::InitramfsBuilder;
pub use error::InitramfsError;
