//! fork(2), or clone3(2) with `CLONE_INTO_CGROUP` for a process that belongs in an app's
//! cgroup (an app with `resource/*` limits, its event handlers, an `rkt enter` command).
//!
//! Why not fork and then write the child's pid into `cgroup.procs`: moving a process between
//! cgroups takes the kernel's `cgroup_threadgroup_rwsem` for writing, which waits for an RCU
//! grace period: about 11 ms in our guest, for every app process with limits (measured,
//! docs/stage1-kvm.md). A child cloned into its cgroup is charged there from its first
//! instruction and is never moved.
//!
//! clone3 is called directly (glibc has no wrapper), without `CLONE_VM` and with `SIGCHLD`:
//! the child is a copy of the caller, as after fork. Two things glibc's own fork does are not
//! done, which is why [`fork`]'s contract is narrower than fork(2)'s: the `pthread_atfork`
//! handlers do not run (guest-init registers none), and glibc's record of the thread's id
//! still holds the parent's, so the child must not use thread-directed calls (`pthread_kill`,
//! `raise`; a failed `abort` still ends the process). The children here only set themselves
//! up with plain system calls and exec, or `_exit`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::unistd::{ForkResult, Pid};

/// `CLONE_INTO_CGROUP` (Linux 5.7), as a clone3 flag. libc's constant is declared as a c_int,
/// which the value does not fit.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork(2), with the child placed in the cgroup whose directory `cgroup` is an open descriptor
/// of, when given.
///
/// # Safety
/// As for fork(2): the caller must be single-threaded (guest-init and its handler processes
/// are). With a cgroup, the child must also keep to what the module comment allows.
pub unsafe fn fork(cgroup: Option<BorrowedFd>) -> io::Result<ForkResult> {
    let Some(cgroup) = cgroup else {
        // SAFETY: the caller guarantees a single-threaded process.
        return unsafe { nix::unistd::fork() }.map_err(io::Error::from);
    };
    let args = clone_args_into(cgroup);
    // SAFETY: clone3 without CLONE_VM or a stack duplicates the process as fork does; `args`
    // is a complete, initialised clone_args of the size passed, alive for the call. The
    // caller guarantees a single-threaded process.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(ForkResult::Child),
        pid => {
            let child = i32::try_from(pid).map_err(|_| io::Error::other("clone3: bad pid"))?;
            Ok(ForkResult::Parent {
                child: Pid::from_raw(child),
            })
        }
    }
}

/// The clone3 arguments of a fork into `cgroup`.
fn clone_args_into(cgroup: BorrowedFd) -> libc::clone_args {
    // SAFETY: clone_args is plain integers; all zero is "no flag, no field" for clone3.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    // A descriptor is never negative.
    args.cgroup = cgroup.as_raw_fd() as u64;
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_arguments_ask_for_a_plain_fork_into_the_cgroup() {
        let dir = std::fs::File::open("/").unwrap();
        let args = clone_args_into(dir.as_fd());
        assert_eq!(args.flags, CLONE_INTO_CGROUP);
        assert_eq!(args.exit_signal, libc::SIGCHLD as u64);
        assert_eq!(args.cgroup, dir.as_raw_fd() as u64);
        assert_eq!((args.stack, args.stack_size, args.tls), (0, 0, 0));
        // clone3 takes the version-2 layout (with `cgroup`): 88 bytes.
        assert_eq!(std::mem::size_of::<libc::clone_args>(), 88);
    }
}
