//! What every guest initramfs holds besides /init.

/// Directories the guest expects to exist: mount points guest-init uses (it would create them,
/// but not in a read-only root later) and the usual places for programs.
pub const STANDARD_DIRS: [(&str, u32); 13] = [
    ("/bin", 0o755),
    ("/dev", 0o755),
    ("/etc", 0o755),
    ("/proc", 0o555),
    ("/root", 0o700),
    ("/run", 0o755),
    ("/sbin", 0o755),
    ("/sys", 0o555),
    ("/tmp", 0o1777),
    ("/usr", 0o755),
    ("/usr/bin", 0o755),
    ("/usr/sbin", 0o755),
    ("/var", 0o755),
];

/// A character device node: path, permissions, major, minor.
pub struct DeviceNode {
    pub path: &'static str,
    pub mode: u32,
    pub major: u32,
    pub minor: u32,
}

/// Device nodes needed before guest-init has mounted devtmpfs over /dev:
/// - /dev/console: the kernel opens it as init's stdin/stdout/stderr; without it init starts
///   with no output at all ("unable to open an initial console").
/// - /dev/null: if those fds are closed anyway, Rust's runtime opens /dev/null on them before
///   `main`, and aborts (so the kernel panics) when it cannot.
pub const STANDARD_DEVICES: [DeviceNode; 2] = [
    DeviceNode {
        path: "/dev/console",
        mode: 0o600,
        major: 5,
        minor: 1,
    },
    DeviceNode {
        path: "/dev/null",
        mode: 0o666,
        major: 1,
        minor: 3,
    },
];

/// Where the kernel looks for the initramfs's init program (`rdinit=` default).
pub const INIT_PATH: &str = "/init";
