//! The console: guest-init's stdin/stdout/stderr, inherited by the command.
//!
//! The kernel opens /dev/console as fds 0, 1 and 2 for init when the initramfs has the node.
//! If it could not, Rust's runtime has already put /dev/null on the closed fds before `main`
//! (or aborted, if /dev/null was missing too). Either way, once devtmpfs is mounted we put the
//! console where the kernel would have.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{fcntl, FcntlArg};

pub const CONSOLE: &str = "/dev/console";

/// /dev/null's device numbers (major 1, minor 3), stable Linux ABI.
const DEV_NULL_RDEV: (u32, u32) = (1, 3);

/// Opens the console for writing, without making it our controlling terminal.
pub fn open_console() -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(CONSOLE)
}

/// Puts the console on each of fds 0, 1, 2 that is closed or is /dev/null. Does nothing when
/// the console cannot be opened (we then keep whatever we have).
pub fn attach_stdio() {
    let needs_console: Vec<i32> = (0..=2).filter(|&fd| !is_usable_stdio(fd)).collect();
    if needs_console.is_empty() {
        return;
    }
    let Ok(console) = open_console() else {
        return;
    };
    for fd in needs_console {
        // dup2 clears FD_CLOEXEC on the new descriptor, so the command inherits it.
        let _ = nix::unistd::dup2(console.as_raw_fd(), fd);
    }
}

/// An fd is usable as stdio when it is open and not /dev/null.
fn is_usable_stdio(fd: i32) -> bool {
    if fcntl(fd, FcntlArg::F_GETFD).is_err() {
        return false;
    }
    let Ok(metadata) = nix::sys::stat::fstat(fd) else {
        return false;
    };
    let rdev = metadata.st_rdev;
    let is_char_device = metadata.st_mode & libc::S_IFMT == libc::S_IFCHR;
    !(is_char_device && (libc::major(rdev), libc::minor(rdev)) == DEV_NULL_RDEV)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_null_is_not_usable_stdio_but_a_file_is() {
        let null = File::open("/dev/null").unwrap();
        assert!(!is_usable_stdio(null.as_raw_fd()));
        let file = tempfile::tempfile().unwrap();
        assert!(is_usable_stdio(file.as_raw_fd()));
    }

    #[test]
    fn closed_fd_is_not_usable_stdio() {
        // Far above anything the test harness opens, so certainly closed.
        assert!(!is_usable_stdio(100_000));
    }
}
