//! Starting the command: resolve it, then create it as a child in its own session with a clean
//! environment and the console as stdin, stdout and stderr (inherited from guest-init).
//! Waiting for it is the reaper's job.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use nix::unistd::Pid;

use crate::args::CommandSpec;
use crate::error::InitError;
use crate::lookup::{self, DEFAULT_PATH};
use crate::spawn;

/// The environment every command starts with. The kernel's own init environment (which may
/// carry unknown `key=value` words from the command line) is deliberately not passed on.
pub fn child_environment() -> [(&'static str, &'static str); 3] {
    [("PATH", DEFAULT_PATH), ("HOME", "/"), ("TERM", "linux")]
}

/// Resolves and starts the command, returning the child's pid. The caller reaps it.
pub fn spawn(spec: &CommandSpec) -> Result<Pid, InitError> {
    let path = lookup::resolve(&spec.program, DEFAULT_PATH.as_ref())?;
    // argv[0] as the user wrote it: multi-call binaries such as busybox pick the applet from
    // it, and it is what a shell would pass.
    let argv: Vec<&OsStr> = std::iter::once(spec.program.as_os_str())
        .chain(spec.args.iter().map(OsString::as_os_str))
        .collect();
    // Its own session, so that the command and everything it starts can later be signalled as
    // a group without hitting guest-init.
    spawn::spawn_in_new_session(&path, &argv, &child_environment())
        .map_err(|source| classify_spawn_error(&path, source))
}

/// Tells apart "the system could not create a process" (a setup problem) from "the kernel
/// would not execute this file" (a problem with the command).
fn classify_spawn_error(path: &Path, source: io::Error) -> InitError {
    match source.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOMEM) => InitError::ProcessCreation {
            path: path.to_path_buf(),
            source,
        },
        _ => InitError::ExecFailed {
            path: path.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_minimal_and_sane() {
        let env = child_environment();
        assert!(env.contains(&("PATH", DEFAULT_PATH)));
        assert!(env.contains(&("HOME", "/")));
        assert!(env.contains(&("TERM", "linux")));
    }

    #[test]
    fn exec_format_error_is_126_and_fork_failure_is_125() {
        let exec = classify_spawn_error(
            Path::new("/bin/x"),
            io::Error::from_raw_os_error(libc::ENOEXEC),
        );
        assert_eq!(exec.exit_status(), 126);
        // ENOENT after a successful lookup means the interpreter is missing.
        let interpreter = classify_spawn_error(
            Path::new("/bin/x"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(interpreter.exit_status(), 126);
        assert!(interpreter.to_string().contains("interpreter"));
        let fork = classify_spawn_error(
            Path::new("/bin/x"),
            io::Error::from_raw_os_error(libc::EAGAIN),
        );
        assert_eq!(fork.exit_status(), 125);
    }

    #[test]
    fn missing_program_fails_before_any_process_is_created() {
        let spec = CommandSpec {
            program: "rkt-guest-init-test-no-such-command".into(),
            args: vec![],
        };
        assert_eq!(spawn(&spec).err().map(|e| e.exit_status()), Some(127));
    }
}
