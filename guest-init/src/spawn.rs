//! Creating a process with posix_spawn(3).
//!
//! Why not `std::process::Command`: it cannot start the child in a new session on stable Rust
//! without a `pre_exec` hook, and with that hook it falls back to fork + execvp, whose ENOEXEC
//! rule silently runs any file the kernel cannot execute through /bin/sh (a binary for the
//! wrong architecture then fails as "sh: not found", status 127). glibc's posix_spawn execs
//! exactly the file given, reports the exec error to the parent, and can call setsid and reset
//! signal dispositions in the child itself.

use std::ffi::{CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use nix::unistd::Pid;

/// Starts `path` with exactly `argv` (argv[0] included) and `env` (`KEY=value` entries) in a
/// new session, with every signal at its default disposition and none blocked, inheriting our
/// stdin, stdout and stderr. The error is the errno of the failed process creation or exec.
pub fn spawn_in_new_session(path: &Path, argv: &[&OsStr], env: &[(&str, &str)]) -> io::Result<Pid> {
    let path = c_string(path.as_os_str())?;
    let argv = argv
        .iter()
        .map(|arg| c_string(arg))
        .collect::<io::Result<Vec<_>>>()?;
    let env = env
        .iter()
        .map(|(key, value)| c_string(OsStr::new(&format!("{key}={value}"))))
        .collect::<io::Result<Vec<_>>>()?;
    let argv_pointers = null_terminated(&argv);
    let env_pointers = null_terminated(&env);

    let attributes = SpawnAttributes::new()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the duration of the call: `path` and the strings
    // behind `argv_pointers`/`env_pointers` are owned CStrings alive until the end of this
    // function, both pointer arrays end with a null pointer, `attributes` is initialised,
    // and a null file-actions pointer means "inherit all fds", which is documented.
    let result = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            ptr::null(),
            attributes.as_ptr(),
            argv_pointers.as_ptr(),
            env_pointers.as_ptr(),
        )
    };
    if result != 0 {
        return Err(io::Error::from_raw_os_error(result));
    }
    Ok(Pid::from_raw(pid))
}

fn c_string(value: &OsStr) -> io::Result<CString> {
    CString::new(value.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{value:?} contains a NUL byte"),
        )
    })
}

/// The `char *const []` layout exec wants: pointers into `strings`, then a null pointer.
fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(ptr::null_mut()))
        .collect()
}

/// An initialised `posix_spawnattr_t`, destroyed on drop.
struct SpawnAttributes(libc::posix_spawnattr_t);

impl SpawnAttributes {
    fn new() -> io::Result<SpawnAttributes> {
        let mut raw = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        // SAFETY: posix_spawnattr_init initialises the object behind the pointer; we only
        // assume it initialised after it returned 0.
        let result = unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) };
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
        // SAFETY: initialised by the successful posix_spawnattr_init above.
        let mut attributes = SpawnAttributes(unsafe { raw.assume_init() });
        attributes.configure()?;
        Ok(attributes)
    }

    /// New session; all signals back to default (Rust ignores SIGPIPE in its own processes,
    /// and ignored dispositions survive exec); empty signal mask.
    fn configure(&mut self) -> io::Result<()> {
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short;
        let mut all_signals = MaybeUninit::<libc::sigset_t>::uninit();
        let mut no_signals = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset/sigemptyset initialise the sets behind valid pointers; the
        // attribute setters read initialised sets and write into our initialised attributes.
        let results = unsafe {
            [
                libc::sigfillset(all_signals.as_mut_ptr()),
                libc::sigemptyset(no_signals.as_mut_ptr()),
                libc::posix_spawnattr_setflags(&mut self.0, flags),
                libc::posix_spawnattr_setsigdefault(&mut self.0, all_signals.as_ptr()),
                libc::posix_spawnattr_setsigmask(&mut self.0, no_signals.as_ptr()),
            ]
        };
        match results.into_iter().find(|&result| result != 0) {
            // sigfillset/sigemptyset return -1 with errno; the setters return the errno.
            Some(-1) => Err(io::Error::last_os_error()),
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn as_ptr(&self) -> *const libc::posix_spawnattr_t {
        &self.0
    }
}

impl Drop for SpawnAttributes {
    fn drop(&mut self) {
        // SAFETY: the attributes were initialised in `new` and are destroyed exactly once.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn wait(pid: Pid) -> Option<i32> {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn runs_with_given_argv_and_env() {
        let pid = spawn_in_new_session(
            Path::new("/bin/sh"),
            &[
                OsStr::new("sh"),
                OsStr::new("-c"),
                OsStr::new(r#"test "$0 $1 $FOO" = "zero one bar""#),
                OsStr::new("zero"),
                OsStr::new("one"),
            ],
            &[("FOO", "bar")],
        );
        let pid = pid.expect("spawned");
        assert_eq!(wait(pid), Some(0));
    }

    #[test]
    fn starts_a_new_session_with_default_sigpipe() {
        // $$ is the session leader, and does not ignore SIGPIPE (bit 13 of SigIgn): Rust's test
        // harness ignores it, and the child must not inherit that.
        let pid = spawn_in_new_session(
            Path::new("/bin/sh"),
            &[
                OsStr::new("sh"),
                OsStr::new("-c"),
                OsStr::new(concat!(
                    r#"[ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ] && "#,
                    r#"ignored=$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status) && "#,
                    r#"[ $(( 0x$ignored & 0x1000 )) -eq 0 ]"#
                )),
            ],
            &[("PATH", "/usr/bin:/bin")],
        )
        .expect("spawned");
        assert_eq!(wait(pid), Some(0));
    }

    #[test]
    fn exec_errors_come_back_as_errno() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk");
        fs::write(&junk, b"\x7fELF\0\0\0\0").expect("write");
        fs::set_permissions(&junk, fs::Permissions::from_mode(0o755)).expect("chmod");
        let error = spawn_in_new_session(&junk, &[OsStr::new("junk")], &[]).err();
        assert_eq!(error.and_then(|e| e.raw_os_error()), Some(libc::ENOEXEC));

        let missing = dir.path().join("missing");
        let error = spawn_in_new_session(&missing, &[OsStr::new("missing")], &[]).err();
        assert_eq!(error.and_then(|e| e.raw_os_error()), Some(libc::ENOENT));
    }

    #[test]
    fn nul_in_argument_is_refused() {
        let error = spawn_in_new_session(Path::new("/bin/true"), &[OsStr::new("a\0b")], &[]).err();
        assert_eq!(error.map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
    }
}
