//! Emulated devices and the buses they sit on. Ports nobody claims (PCI configuration at
//! 0xcf8/0xcfc, the 0x80 delay port, ...) read as all-ones and ignore writes, which tells the
//! guest "nothing here" at the cost of one exit.

pub mod bus;
pub mod legacy;
pub mod virtio;
