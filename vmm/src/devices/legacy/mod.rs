//! Legacy PC devices: the serial console, the i8042 (reset line) and the CMOS clock.

pub mod cmos;
pub mod console_scan;
pub mod i8042;
pub mod serial;
