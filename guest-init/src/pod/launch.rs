//! Creating one process of an app (the app itself or one of its event handlers) the way the
//! ACE spec wants it: in the app's root, as the app's user, in its working directory, with its
//! environment, in its cgroup, its stdout and stderr on the streams the host listens to.
//!
//! fork, then everything in the child, then execve. guest-init is single-threaded, so the
//! child may allocate and format freely. A child that cannot get as far as exec says why on
//! its stderr (and on the console, if stderr is not the console) and exits with the status
//! the contract gives such failures: 127 (not found), 126 (not executable), 125 (set-up). The
//! parent then sees that status like any other exit status.

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::appns::AppNamespace;
use super::caps;
use super::env;
use super::identity::Identity;
use super::isolators::Hardening;
use super::pidns::PodPidNamespace;
use super::seccomp;
use crate::error::{InitError, STATUS_SETUP_FAILED};
use crate::lookup::{self, DEFAULT_PATH};
use crate::report;

/// Everything one process needs.
pub struct ProcessSpec<'a> {
    /// For messages: `app web`, `pre-start handler of app web`.
    pub label: &'a str,
    /// The app root, a guest path.
    pub root: &'a Path,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub identity: &'a Identity,
    /// Absolute, inside the root.
    pub working_dir: &'a str,
    /// The app's `cgroup.procs`: the process is cloned into that cgroup (fork.rs), or joins it
    /// before exec when its directory cannot be opened.
    pub cgroup_procs: Option<&'a Path>,
    /// The process's stdin; `None`: /dev/null.
    pub stdin: Option<BorrowedFd<'a>>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
    /// stdin is a terminal that becomes the process's controlling terminal (`enter` with a
    /// TTY, `--interactive`).
    pub controlling_tty: bool,
    /// Whether `stderr` is the console already (then a failure is not written twice).
    pub stderr_is_console: bool,
    /// The pod's pid namespace and the app's mount namespace; `None`: the process is only
    /// chrooted into `root` (single-command use, tests).
    pub namespaces: Option<Namespaces<'a>>,
    /// Capabilities, seccomp, no_new_privs, oom_score_adj.
    pub hardening: &'a Hardening,
}

/// Where an app process lives: forked into the pod's pid namespace, then joined to the app's
/// mount namespace (appns.rs), whose root is the app's root.
#[derive(Clone, Copy)]
pub struct Namespaces<'a> {
    pub pid: &'a PodPidNamespace,
    pub mnt: &'a AppNamespace,
}

/// Forks and starts the process; returns its pid. Only a failed fork is an error here: all
/// later failures are the child's exit status.
pub fn launch(spec: &ProcessSpec) -> Result<Pid, InitError> {
    let argv = c_strings(spec.argv.iter().map(OsStr::new));
    let envp = c_strings(
        spec.env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .iter()
            .map(OsStr::new),
    );
    // The process is cloned straight into its cgroup (fork.rs says why). If the cgroup's
    // directory cannot be opened, the child joins it by `cgroup.procs` and says why it could
    // not, as it always did.
    let cgroup_dir = spec.cgroup_procs.and_then(|procs| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(procs.parent()?)
            .ok()
    });
    let cgroup = cgroup_dir.as_ref().map(AsFd::as_fd);
    // guest-init and its handler processes are single-threaded (see main.rs), so the child is
    // a complete copy of a consistent process: no lock can be held by a thread that does not
    // exist in the child. The child keeps to fork.rs's rules: plain system calls, then exec or
    // _exit.
    let forked = match spec.namespaces {
        // SAFETY: single-threaded caller, as `fork_in` requires (above).
        Some(namespaces) => unsafe { namespaces.pid.fork_in(cgroup) },
        // SAFETY: single-threaded caller (above).
        None => unsafe { super::fork::fork(cgroup) },
    };
    match forked {
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => child(spec, argv, envp, cgroup.is_some()),
        Err(source) => Err(InitError::ProcessCreation {
            path: spec.argv.first().map(Into::into).unwrap_or_default(),
            source,
        }),
    }
}

/// `None` when a string holds a NUL byte (the appc crate and the env module refuse those, so
/// this is only a last line of defence, reported by the child).
fn c_strings<'a>(strings: impl Iterator<Item = &'a OsStr>) -> Option<Vec<CString>> {
    strings.map(|s| CString::new(s.as_bytes()).ok()).collect()
}

/// The child's side; never returns. `in_cgroup`: it was cloned into its cgroup already.
fn child(
    spec: &ProcessSpec,
    argv: Option<Vec<CString>>,
    envp: Option<Vec<CString>>,
    in_cgroup: bool,
) -> ! {
    // The console as guest-init has it, for failure messages: opened before the chroot.
    let console = crate::console::open_console().ok();
    let fail = |error: &dyn std::fmt::Display, status: u8| -> ! {
        let line = report::error_line(&format_args!("{}: {error}", spec.label));
        // SAFETY: fd 2 is open (dup2'ed below, or inherited from guest-init); writing to it
        // through a File we never drop does not close it.
        let mut stderr = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(2)
        });
        let _ = stderr.write_all(line.as_bytes());
        if !spec.stderr_is_console {
            if let Some(mut console) = console.as_ref() {
                let _ = console.write_all(line.as_bytes());
            }
        }
        // SAFETY: _exit ends the process at once without running Rust or libc exit handlers,
        // which belong to PID 1 (its buffers must not be flushed twice).
        unsafe { libc::_exit(i32::from(status)) }
    };

    if let Err(error) = enter(spec, in_cgroup) {
        fail(&error, STATUS_SETUP_FAILED);
    }
    let (Some(argv), Some(envp)) = (argv, envp) else {
        fail(
            &"an argument or environment entry holds a NUL byte",
            STATUS_SETUP_FAILED,
        );
    };
    let search_path = env::get(spec.env, "PATH").unwrap_or(DEFAULT_PATH);
    let program = spec.argv.first().map(String::as_str).unwrap_or_default();
    let path = match lookup::resolve(OsStr::new(program), OsStr::new(search_path)) {
        Ok(path) => path,
        // The generic message talks about the initramfs; here the image is what lacks it.
        Err(InitError::NotFound { name, searched }) => fail(
            &format_args!(
                "program `{name}` not found in the app's image ({searched}); add it to the \
                 image or fix the app's exec (--exec)"
            ),
            crate::error::STATUS_NOT_FOUND,
        ),
        Err(error) => fail(&error, error.exit_status()),
    };
    if let Err(error) = caps::apply_before_user(&spec.hardening.bounding) {
        fail(&error, STATUS_SETUP_FAILED);
    }
    if let Err(error) = become_user(spec.identity) {
        fail(&error, STATUS_SETUP_FAILED);
    }
    if let Err(error) = caps::apply_after_user(&spec.hardening.bounding) {
        fail(&error, STATUS_SETUP_FAILED);
    }
    if let Err(errno) = nix::unistd::chdir(spec.working_dir) {
        fail(
            &format_args!(
                "cannot enter the working directory {}: {errno}; create it in the image or \
                 choose another (--working-dir)",
                spec.working_dir
            ),
            STATUS_SETUP_FAILED,
        );
    }
    let Ok(path_c) = CString::new(path.as_os_str().as_bytes()) else {
        fail(&"the program path holds a NUL byte", STATUS_SETUP_FAILED);
    };
    if let Err(error) = restrict(spec.hardening, spec.identity.uid) {
        fail(&error, STATUS_SETUP_FAILED);
    }
    let Err(errno) = nix::unistd::execve(&path_c, &argv, &envp);
    let error = InitError::ExecFailed {
        path,
        source: errno.into(),
    };
    fail(&error, error.exit_status())
}

/// Session, signals, cgroup, stdio, root: everything done as root before the identity drops.
fn enter(spec: &ProcessSpec, in_cgroup: bool) -> io::Result<()> {
    // Its own session, so the app and its children can be signalled as a group.
    nix::unistd::setsid()?;
    reset_signals();
    if let Some(procs) = spec.cgroup_procs.filter(|_| !in_cgroup) {
        std::fs::write(procs, "0").map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "cannot join the app's cgroup ({}): {error}",
                    procs.display()
                ),
            )
        })?;
    }
    match spec.stdin {
        Some(stdin) => move_fd(stdin.as_raw_fd(), 0)?,
        None => {
            let null = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            move_fd(null.as_raw_fd(), 0)?;
        }
    }
    move_fd(spec.stdout.as_raw_fd(), 1)?;
    move_fd(spec.stderr.as_raw_fd(), 2)?;
    if spec.controlling_tty {
        // SAFETY: TIOCSCTTY takes an int argument (0: do not steal from another session); fd
        // 0 is open (just moved there).
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
            return Err(io::Error::other(format!(
                "cannot make the terminal its controlling terminal: {}",
                io::Error::last_os_error()
            )));
        }
    }
    match spec.namespaces {
        // setns puts the root and the working directory at the namespace's root.
        Some(namespaces) => namespaces.mnt.join()?,
        None => {
            nix::unistd::chroot(spec.root).map_err(|errno| {
                io::Error::new(
                    io::Error::from(errno).kind(),
                    format!("cannot change the root to {}: {errno}", spec.root.display()),
                )
            })?;
            nix::unistd::chdir("/")?;
        }
    }
    // While still root with every capability: lowering the score below 0 needs
    // CAP_SYS_RESOURCE, which the app may not keep. Through the app's own /proc.
    if let Some(adj) = spec.hardening.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot set oom_score_adj to {adj}: {error}"),
            )
        })?;
    }
    Ok(())
}

/// The last steps before exec: no_new_privs, then the seccomp filter (nothing the filter might
/// deny runs after it, but execve). A filter needs no_new_privs unless the process keeps
/// CAP_SYS_ADMIN, so an app that does not run as root gets it with a filter, as rkt did.
fn restrict(hardening: &Hardening, uid: u32) -> io::Result<()> {
    let keeps_admin = uid == 0
        && hardening
            .bounding
            .contains(&::caps::Capability::CAP_SYS_ADMIN);
    if hardening.no_new_privs || (hardening.seccomp.is_some() && !keeps_admin) {
        nix::sys::prctl::set_no_new_privs().map_err(|errno| {
            io::Error::new(
                io::Error::from(errno).kind(),
                format!("cannot set no_new_privs: {errno}"),
            )
        })?;
    }
    if let Some(program) = &hardening.seccomp {
        seccomp::install(program)?;
    }
    Ok(())
}

/// `dup2(from, to)`, which also clears close-on-exec on `to`.
fn move_fd(from: RawFd, to: RawFd) -> io::Result<()> {
    if from == to {
        // dup2 would leave close-on-exec set; clear it by hand.
        nix::fcntl::fcntl(
            from,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )?;
        return Ok(());
    }
    nix::unistd::dup2(from, to)?;
    Ok(())
}

/// Every signal back to its default and none blocked: guest-init (like every Rust program)
/// ignores SIGPIPE, and ignored signals stay ignored across exec.
fn reset_signals() {
    for signal in 1..libc::SIGRTMIN() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL for a valid signal number has no memory effects.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// setgroups, setgid, setuid: in that order, since each later one takes the power to do the
/// earlier ones away.
fn become_user(identity: &Identity) -> io::Result<()> {
    let groups: Vec<Gid> = identity
        .supplementary_gids
        .iter()
        .map(|&gid| Gid::from_raw(gid))
        .collect();
    let context = |what: &str, errno: nix::errno::Errno| {
        io::Error::new(
            io::Error::from(errno).kind(),
            format!("cannot {what}: {errno}"),
        )
    };
    nix::unistd::setgroups(&groups).map_err(|e| context("set the supplementary groups", e))?;
    nix::unistd::setgid(Gid::from_raw(identity.gid))
        .map_err(|e| context(&format!("set the group to {}", identity.gid), e))?;
    nix::unistd::setuid(Uid::from_raw(identity.uid))
        .map_err(|e| context(&format!("set the user to {}", identity.uid), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_caught_before_the_fork() {
        assert!(c_strings([OsStr::new("a"), OsStr::new("b")].into_iter()).is_some());
        assert!(c_strings([OsStr::new("a\0b")].into_iter()).is_none());
    }
}
