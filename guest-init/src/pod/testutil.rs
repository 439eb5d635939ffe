//! Test helpers: running a check in a forked child, for what changes the process for good
//! (capabilities, seccomp, namespaces, no_new_privs).

/// Forks; the child runs `check` and exits 0 on `Ok`, else prints the message and exits 1;
/// the test fails unless the child exited 0.
pub fn in_child(check: impl FnOnce() -> Result<(), String>) {
    // SAFETY: the child only runs `check` and _exits; the test harness's other threads do not
    // exist in it, and `check` takes no lock they could hold (allocation aside, which glibc
    // makes fork-safe).
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let code = match check() {
                Ok(()) => 0,
                Err(message) => {
                    eprintln!("child: {message}");
                    1
                }
            };
            // SAFETY: ends the child without running the harness's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "the check in the child failed (its message is above)"
            );
        }
    }
}
