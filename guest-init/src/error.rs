//! Everything that can go wrong in guest-init, and the exit status each failure reports.
//!
//! The statuses follow the shell's conventions so that a person reading `exit-status=N` can
//! tell a failing command from a command that never started.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// The command was not found (shell convention), and also: no command was given at all.
pub const STATUS_NOT_FOUND: u8 = 127;
/// The command was found but could not be executed (shell convention).
pub const STATUS_NOT_EXECUTABLE: u8 = 126;
/// The guest itself could not be set up (a mount failed, no process could be created, ...):
/// the command never ran and the problem is in the kernel or the initramfs, not the command.
pub const STATUS_SETUP_FAILED: u8 = 125;

#[derive(Debug, Error)]
pub enum InitError {
    #[error(
        "no command given; put the command after `--` on the kernel command line, \
         for example `console=ttyS0 -- /bin/busybox echo hello`"
    )]
    NoCommand,

    #[error(
        "command `{name}` not found (searched {searched}); add it to the guest's root (the \
         initramfs: rkt-mkinitramfs --add SRC:DEST, or the share's rkt.root directory) or \
         give its full path"
    )]
    NotFound { name: String, searched: String },

    #[error(
        "`{path}` cannot be executed: {reason}; make it a regular file with an execute bit \
         (chmod 0755) or run a different command"
    )]
    NotExecutable { path: PathBuf, reason: String },

    #[error(
        "`{path}` exists but the kernel refused to execute it: {source}; check that it is an \
         x86_64 Linux program and that its interpreter (the dynamic loader or the `#!` line) \
         is in the initramfs, or use a static binary"
    )]
    ExecFailed { path: PathBuf, source: io::Error },

    #[error(
        "could not create a process for `{path}`: {source}; give the VM more memory \
         (--mem) or run fewer processes"
    )]
    ProcessCreation { path: PathBuf, source: io::Error },

    #[error("waiting for the command failed: {0}; this is a bug in guest-init, please report it")]
    Wait(nix::errno::Errno),

    #[error(transparent)]
    Mount(#[from] crate::mounts::MountError),

    #[error(transparent)]
    Share(#[from] crate::share::ShareError),

    #[error(transparent)]
    PodParams(#[from] crate::pod::ParamError),

    #[error(transparent)]
    Warm(#[from] crate::warm::WarmError),

    #[error("guest-init panicked: this is a bug in guest-init, please report it")]
    Panicked,
}

impl InitError {
    /// The status reported in the exit marker when this error stops the command from running.
    pub fn exit_status(&self) -> u8 {
        match self {
            InitError::NoCommand | InitError::NotFound { .. } => STATUS_NOT_FOUND,
            InitError::NotExecutable { .. } | InitError::ExecFailed { .. } => STATUS_NOT_EXECUTABLE,
            InitError::ProcessCreation { .. }
            | InitError::Wait(_)
            | InitError::Mount(_)
            | InitError::PodParams(_)
            | InitError::Warm(_)
            | InitError::Panicked => STATUS_SETUP_FAILED,
            InitError::Share(error) => error.exit_status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_shell_conventions() {
        assert_eq!(InitError::NoCommand.exit_status(), 127);
        let not_found = InitError::NotFound {
            name: "nosuch".into(),
            searched: "/bin".into(),
        };
        assert_eq!(not_found.exit_status(), 127);
        let not_exec = InitError::NotExecutable {
            path: "/etc/passwd".into(),
            reason: "no execute permission".into(),
        };
        assert_eq!(not_exec.exit_status(), 126);
        let exec_failed = InitError::ExecFailed {
            path: "/bin/x".into(),
            source: io::Error::from_raw_os_error(libc::ENOEXEC),
        };
        assert_eq!(exec_failed.exit_status(), 126);
        let fork_failed = InitError::ProcessCreation {
            path: "/bin/x".into(),
            source: io::Error::from_raw_os_error(libc::EAGAIN),
        };
        assert_eq!(fork_failed.exit_status(), 125);
    }

    #[test]
    fn messages_are_one_line_and_name_a_fix() {
        let errors = [
            InitError::NoCommand,
            InitError::NotFound {
                name: "nosuch".into(),
                searched: "/bin:/usr/bin".into(),
            },
            InitError::NotExecutable {
                path: "/etc/passwd".into(),
                reason: "no execute permission".into(),
            },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(!message.contains('\n'), "multi-line message: {message}");
            assert!(message.contains("; "), "message names no fix: {message}");
        }
    }
}
