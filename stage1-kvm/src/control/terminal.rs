//! The host's terminal: raw mode for a session (restored when the guard is dropped, on every
//! way out of the function that holds it) and its size.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::termios::{self, SetArg, Termios};
use pod_control::WindowSize;

/// Whether our stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    nix::unistd::isatty(0).unwrap_or(false)
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process (nothing here closes it).
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// The size of the terminal on our stdin (or stdout), if there is one.
pub fn size() -> Option<WindowSize> {
    for fd in [0, 1] {
        let mut winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one struct winsize through the pointer, a live local.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut winsize) } == 0
            && winsize.ws_row > 0
            && winsize.ws_col > 0
        {
            return Some(WindowSize {
                rows: winsize.ws_row,
                cols: winsize.ws_col,
            });
        }
    }
    None
}

/// Our `TERM`, when it is a sane terminal type (the guest checks it again).
pub fn term() -> Option<String> {
    std::env::var("TERM")
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_graphic()))
}

/// The terminal on stdin in raw mode while this lives.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// `None` when stdin is not a terminal (nothing to change).
    pub fn enter() -> Option<RawMode> {
        let saved = termios::tcgetattr(stdin().as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin().as_fd(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}
