//! initramfs writer
