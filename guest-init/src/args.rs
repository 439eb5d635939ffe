//! What guest-init was asked to run.
//!
//! The kernel hands everything after `--` on its command line to init as argv[1..]; argv[0] is
//! init's own path (`/init`). Later the pod manifest becomes a second source of commands; it will
//! produce the same `CommandSpec`.

use std::ffi::OsString;

use crate::error::InitError;

/// One command to run: the program as the user wrote it (a name to look up in PATH, or a path)
/// and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// Builds the command from init's own argv (argv[0] included, and skipped).
pub fn command_from_argv(
    argv: impl IntoIterator<Item = OsString>,
) -> Result<CommandSpec, InitError> {
    let mut rest = argv.into_iter().skip(1);
    let program = rest.next().ok_or(InitError::NoCommand)?;
    if program.is_empty() {
        return Err(InitError::NoCommand);
    }
    Ok(CommandSpec {
        program,
        args: rest.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn skips_init_own_name() {
        let spec = command_from_argv(argv(&["/init", "/bin/busybox", "echo", "hello"]));
        let spec = spec.ok();
        assert_eq!(
            spec,
            Some(CommandSpec {
                program: "/bin/busybox".into(),
                args: argv(&["echo", "hello"]),
            })
        );
    }

    #[test]
    fn command_without_arguments() {
        let spec = command_from_argv(argv(&["/init", "true"])).ok();
        assert_eq!(
            spec,
            Some(CommandSpec {
                program: "true".into(),
                args: vec![],
            })
        );
    }

    #[test]
    fn no_command_is_an_error() {
        assert!(matches!(
            command_from_argv(argv(&["/init"])),
            Err(InitError::NoCommand)
        ));
        assert!(matches!(
            command_from_argv(argv(&[])),
            Err(InitError::NoCommand)
        ));
        assert!(matches!(
            command_from_argv(argv(&["/init", ""])),
            Err(InitError::NoCommand)
        ));
    }

    #[test]
    fn non_utf8_arguments_survive() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![0x66, 0xff, 0x6f]);
        let spec = command_from_argv(vec!["/init".into(), "cat".into(), odd.clone()]).ok();
        assert_eq!(spec.map(|s| s.args), Some(vec![odd]));
    }
}
