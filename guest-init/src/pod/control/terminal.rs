//! Pseudo-terminals for `enter` with a TTY and for `--interactive`, allocated in the app's own
//! devpts instance (`<root>/dev/pts`, mounted with `newinstance`), so that inside the app's
//! root the terminal is `/dev/pts/N` like any other.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use pod_control::WindowSize;

/// Both ends of a fresh pseudo-terminal.
pub struct Terminal {
    /// Ours: what we read the program's output from and write its input to.
    pub master: OwnedFd,
    /// The program's stdin, stdout, stderr and controlling terminal.
    pub slave: OwnedFd,
}

/// Opens a new pseudo-terminal in the devpts instance of the app root `root`.
pub fn open_in_root(root: &Path) -> io::Result<Terminal> {
    let pts = root.join("dev/pts");
    let master = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(pts.join("ptmx"))
        .map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {}/ptmx: {e}", pts.display()))
        })?;
    let unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer and TIOCGPTN writes one unsigned
    // int through it; both point to live locals and the descriptor is an open ptmx.
    let failed = unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) == -1
            || libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) == -1
    };
    if failed {
        return Err(io::Error::last_os_error());
    }
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(pts.join(number.to_string()))?;
    Ok(Terminal {
        master: master.into(),
        slave: slave.into(),
    })
}

/// Tells the terminal (and so the program on it, with SIGWINCH) its size.
pub fn set_size(master: &impl AsRawFd, size: WindowSize) -> io::Result<()> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize through the pointer, a live local.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
