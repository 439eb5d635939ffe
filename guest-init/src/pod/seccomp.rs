//! The seccomp isolators, `os/linux/seccomp-retain-set` and `-remove-set`, with rkt's syntax
//! (`{"set": [names and @groups], "errno": "EPERM"}`), compiled to a BPF program with rust-vmm's
//! seccompiler and installed as the very last step before exec.
//!
//! - No seccomp isolator: rkt's default filter, the remove-set `@rkt/default-blacklist`.
//! - remove-set: every system call allowed but those listed; retain-set: the reverse.
//! - A denied call fails with the isolator's `errno` when it names one, else the process is
//!   killed (SIGSYS), as rkt (systemd's SystemCallFilter) did.
//! - `@appc.io/all` in a retain-set, or `@appc.io/empty` in a remove-set, means no filter;
//!   `@appc.io/empty` in a retain-set means the default filter (rkt's reading of both).
//! - A retain-set always allows execve: the filter is installed before exec, and an app that
//!   could not even start would only show a bad configuration as status 126.
//! - Names are x86_64 system calls (the `syscalls` crate's table). A group member that x86_64
//!   does not have (a 32-bit-only call) is skipped; a name written by the user that x86_64 does
//!   not have is an error, so a typo does not silently leave a call allowed.
//! - x32 system calls (the same numbers with bit 30 set) are matched along with the x86_64
//!   ones, so a remove-set cannot be bypassed through the x32 ABI on kernels that have it.

use std::collections::BTreeMap;
use std::str::FromStr;

use appc::Isolator;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use serde_json::Value;
use syscalls::Sysno;
use thiserror::Error;

pub const RETAIN_SET: &str = "os/linux/seccomp-retain-set";
pub const REMOVE_SET: &str = "os/linux/seccomp-remove-set";

/// The bit that marks an x32 system call number.
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// `@docker/default-blacklist`, which rkt's `@rkt/default-blacklist` is.
const DEFAULT_BLACKLIST: &[&str] = &[
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapon",
    "swapoff",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    // Newer ways to the same places (mount API, kernel 5.2+).
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
];

/// `@docker/default-whitelist` (= `@rkt/default-whitelist`): what ordinary programs use, plus
/// the calls glibc and busybox have started to use since that list was written (clone3,
/// statx, rseq, ...), which would otherwise be denied and break them.
const DEFAULT_WHITELIST: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "pause",
    "personality",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "prlimit64",
    "pselect6",
    "pwrite64",
    "pwritev",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socket",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "syslog",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
    "chroot",
    "clone",
    // Since that list.
    "clone3",
    "statx",
    "rseq",
    "faccessat2",
    "pidfd_open",
    "pidfd_send_signal",
    "close_range",
    "epoll_pwait2",
    "preadv2",
    "pwritev2",
    "membarrier",
    "openat2",
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SeccompError {
    #[error("isolators {RETAIN_SET} and {REMOVE_SET} exclude each other; keep one")]
    Both,
    #[error(
        "isolator {name}: the value must be {{\"set\": [\"syscall\" or \"@group\", ...], \
         \"errno\": \"EPERM\" (optional)}}"
    )]
    Shape { name: &'static str },
    #[error("isolator {name}: {syscall:?} is not an x86_64 system call")]
    UnknownSyscall { name: &'static str, syscall: String },
    #[error(
        "isolator {name}: {group:?} is not a group guest-init knows (@rkt/default-blacklist, \
         @rkt/default-whitelist, @docker/default-blacklist, @docker/default-whitelist, \
         @appc.io/all, @appc.io/empty)"
    )]
    UnknownGroup { name: &'static str, group: String },
    #[error("isolator {name}: {errno:?} is not an errno name guest-init knows (like EPERM)")]
    UnknownErrno { name: &'static str, errno: String },
    #[error("cannot build the seccomp filter: {0}")]
    Build(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything allowed but the set.
    Remove,
    /// Nothing allowed but the set.
    Retain,
}

/// A filter to build: what the isolators (or rkt's default) ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    pub mode: Mode,
    /// System call numbers (x86_64), sorted, without duplicates.
    pub syscalls: Vec<i64>,
    /// `None`: kill the process.
    pub errno: Option<u32>,
}

/// The filter an app's isolators ask for; `None`: no filter (the isolators opt out).
pub fn spec_from_isolators(isolators: &[Isolator]) -> Result<Option<FilterSpec>, SeccompError> {
    let retain = isolators
        .iter()
        .rev()
        .find(|i| i.name.as_str() == RETAIN_SET);
    let remove = isolators
        .iter()
        .rev()
        .find(|i| i.name.as_str() == REMOVE_SET);
    let (name, mode, isolator) = match (retain, remove) {
        (Some(_), Some(_)) => return Err(SeccompError::Both),
        (Some(isolator), None) => (RETAIN_SET, Mode::Retain, isolator),
        (None, Some(isolator)) => (REMOVE_SET, Mode::Remove, isolator),
        (None, None) => return Ok(Some(default_spec())),
    };
    let Some(Value::Array(items)) = isolator.value.get("set") else {
        return Err(SeccompError::Shape { name });
    };
    let errno = match isolator.value.get("errno") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            Some(
                errno_number(text).ok_or_else(|| SeccompError::UnknownErrno {
                    name,
                    errno: text.clone(),
                })?,
            )
        }
        Some(_) => return Err(SeccompError::Shape { name }),
    };
    let mut syscalls = Vec::new();
    for item in items {
        let Value::String(text) = item else {
            return Err(SeccompError::Shape { name });
        };
        match text.as_str() {
            "@appc.io/all" if mode == Mode::Retain => return Ok(None),
            "@appc.io/empty" if mode == Mode::Remove => return Ok(None),
            "@appc.io/empty" => return Ok(Some(default_spec())),
            "@appc.io/all" => syscalls.extend(Sysno::iter().map(|s| i64::from(s.id()))),
            group if group.starts_with('@') => {
                let members = group_members(group).ok_or_else(|| SeccompError::UnknownGroup {
                    name,
                    group: group.to_owned(),
                })?;
                syscalls.extend(members.iter().filter_map(|m| number(m)));
            }
            syscall => {
                syscalls.push(number(syscall).ok_or_else(|| SeccompError::UnknownSyscall {
                    name,
                    syscall: syscall.to_owned(),
                })?)
            }
        }
    }
    if mode == Mode::Retain {
        syscalls.extend(number("execve"));
    }
    syscalls.sort_unstable();
    syscalls.dedup();
    Ok(Some(FilterSpec {
        mode,
        syscalls,
        errno,
    }))
}

/// rkt's default: the remove-set `@rkt/default-blacklist`, a denied call killing the process.
pub fn default_spec() -> FilterSpec {
    let mut syscalls: Vec<i64> = DEFAULT_BLACKLIST.iter().filter_map(|m| number(m)).collect();
    syscalls.sort_unstable();
    syscalls.dedup();
    FilterSpec {
        mode: Mode::Remove,
        syscalls,
        errno: None,
    }
}

fn group_members(group: &str) -> Option<&'static [&'static str]> {
    match group {
        "@rkt/default-blacklist" | "@docker/default-blacklist" => Some(DEFAULT_BLACKLIST),
        "@rkt/default-whitelist" | "@docker/default-whitelist" => Some(DEFAULT_WHITELIST),
        _ => None,
    }
}

fn number(name: &str) -> Option<i64> {
    Sysno::from_str(name).ok().map(|s| i64::from(s.id()))
}

/// The errno names an isolator may give (errno(3)); numbers are Linux's.
fn errno_number(name: &str) -> Option<u32> {
    const NAMES: &[(&str, i32)] = &[
        ("EPERM", libc::EPERM),
        ("ENOENT", libc::ENOENT),
        ("ESRCH", libc::ESRCH),
        ("EINTR", libc::EINTR),
        ("EIO", libc::EIO),
        ("ENXIO", libc::ENXIO),
        ("E2BIG", libc::E2BIG),
        ("ENOEXEC", libc::ENOEXEC),
        ("EBADF", libc::EBADF),
        ("ECHILD", libc::ECHILD),
        ("EAGAIN", libc::EAGAIN),
        ("ENOMEM", libc::ENOMEM),
        ("EACCES", libc::EACCES),
        ("EFAULT", libc::EFAULT),
        ("EBUSY", libc::EBUSY),
        ("EEXIST", libc::EEXIST),
        ("EXDEV", libc::EXDEV),
        ("ENODEV", libc::ENODEV),
        ("ENOTDIR", libc::ENOTDIR),
        ("EISDIR", libc::EISDIR),
        ("EINVAL", libc::EINVAL),
        ("ENFILE", libc::ENFILE),
        ("EMFILE", libc::EMFILE),
        ("ENOTTY", libc::ENOTTY),
        ("ENOSPC", libc::ENOSPC),
        ("ESPIPE", libc::ESPIPE),
        ("EROFS", libc::EROFS),
        ("EPIPE", libc::EPIPE),
        ("ERANGE", libc::ERANGE),
        ("ENOSYS", libc::ENOSYS),
        ("ENOTSUP", libc::ENOTSUP),
        ("EOPNOTSUPP", libc::EOPNOTSUPP),
        ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
        ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
        ("ECONNREFUSED", libc::ECONNREFUSED),
    ];
    NAMES
        .iter()
        .find(|(known, _)| *known == name)
        .and_then(|(_, number)| u32::try_from(*number).ok())
}

/// The BPF program for `spec`.
pub fn build(spec: &FilterSpec) -> Result<BpfProgram, SeccompError> {
    let denied = match spec.errno {
        Some(errno) => SeccompAction::Errno(errno),
        None => SeccompAction::KillProcess,
    };
    let (mismatch, matched) = match spec.mode {
        Mode::Remove => (SeccompAction::Allow, denied),
        Mode::Retain => (denied, SeccompAction::Allow),
    };
    let mut rules = BTreeMap::new();
    for &syscall in &spec.syscalls {
        rules.insert(syscall, Vec::new());
        if spec.mode == Mode::Remove {
            rules.insert(syscall | X32_SYSCALL_BIT, Vec::new());
        }
    }
    let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
        .map_err(|error| SeccompError::Build(error.to_string()))?;
    BpfProgram::try_from(filter).map_err(|error| SeccompError::Build(error.to_string()))
}

/// Installs `program` on the calling (single-threaded) process. Needs no_new_privs or
/// CAP_SYS_ADMIN; the caller decides which (launch.rs). Not seccompiler's `apply_filter`: that
/// always sets no_new_privs, which a root app that keeps CAP_SYS_ADMIN must not get unasked
/// (rkt set it only where the filter needed it), and which disables setuid programs.
pub fn install(program: &BpfProgram) -> std::io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| {
        std::io::Error::other("cannot install the seccomp filter: more than 65535 instructions")
    })?;
    let fprog = libc::sock_fprog {
        len,
        // seccompiler's sock_filter is the kernel's struct sock_filter (repr(C): u16, u8, u8,
        // u32), as libc's is; the kernel only reads through the pointer.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: SECCOMP_SET_MODE_FILTER reads `len` instructions from `fprog.filter`, which
    // points into `program`, alive and unchanged for the call; no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            error.kind(),
            format!("cannot install the seccomp filter: {error}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn isolator(name: &str, value: Value) -> Isolator {
        serde_json::from_value(json!({"name": name, "value": value})).unwrap()
    }

    #[test]
    fn the_default_is_the_blacklist_killing() {
        let spec = spec_from_isolators(&[]).unwrap().unwrap();
        assert_eq!(spec.mode, Mode::Remove);
        assert_eq!(spec.errno, None);
        for call in [
            "mount",
            "umount2",
            "ptrace",
            "reboot",
            "unshare",
            "setns",
            "kexec_load",
        ] {
            assert!(spec.syscalls.contains(&number(call).unwrap()), "{call}");
        }
        assert!(!spec.syscalls.contains(&number("read").unwrap()));
        // Every whitelist name is an x86_64 call or a known 32-bit-only one.
        assert!(
            DEFAULT_WHITELIST
                .iter()
                .filter(|n| number(n).is_some())
                .count()
                > 200
        );
    }

    #[test]
    fn rkt_syntax() {
        let spec = spec_from_isolators(&[isolator(
            REMOVE_SET,
            json!({"set": ["@rkt/default-blacklist", "socket"], "errno": "ENOTSUP"}),
        )])
        .unwrap()
        .unwrap();
        assert_eq!(spec.mode, Mode::Remove);
        assert_eq!(spec.errno, Some(libc::ENOTSUP as u32));
        assert!(spec.syscalls.contains(&number("socket").unwrap()));
        assert!(spec.syscalls.contains(&number("mount").unwrap()));

        let spec = spec_from_isolators(&[isolator(
            RETAIN_SET,
            json!({"set": ["@docker/default-whitelist", "umount2"]}),
        )])
        .unwrap()
        .unwrap();
        assert_eq!(spec.mode, Mode::Retain);
        assert!(spec.syscalls.contains(&number("umount2").unwrap()));
        assert!(spec.syscalls.contains(&number("read").unwrap()));
        assert!(!spec.syscalls.contains(&number("mount").unwrap()));

        // execve is always in a retain-set.
        let spec = spec_from_isolators(&[isolator(RETAIN_SET, json!({"set": ["read"]}))])
            .unwrap()
            .unwrap();
        assert_eq!(spec.syscalls.len(), 2);

        assert_eq!(
            spec_from_isolators(&[isolator(RETAIN_SET, json!({"set": ["@appc.io/all"]}))]),
            Ok(None)
        );
        assert_eq!(
            spec_from_isolators(&[isolator(REMOVE_SET, json!({"set": ["@appc.io/empty"]}))]),
            Ok(None)
        );
        assert_eq!(
            spec_from_isolators(&[isolator(RETAIN_SET, json!({"set": ["@appc.io/empty"]}))]),
            Ok(Some(default_spec()))
        );
    }

    #[test]
    fn mistakes_are_named() {
        let error = |value: Value| spec_from_isolators(&[isolator(REMOVE_SET, value)]);
        assert!(matches!(
            error(json!({"set": ["mount", "mounty"]})),
            Err(SeccompError::UnknownSyscall { .. })
        ));
        assert!(matches!(
            error(json!({"set": ["@systemd/mount"]})),
            Err(SeccompError::UnknownGroup { .. })
        ));
        assert!(matches!(
            error(json!({"set": ["mount"], "errno": "EWHAT"})),
            Err(SeccompError::UnknownErrno { .. })
        ));
        assert!(matches!(
            error(json!({"set": "mount"})),
            Err(SeccompError::Shape { .. })
        ));
        assert_eq!(
            spec_from_isolators(&[
                isolator(REMOVE_SET, json!({"set": ["mount"]})),
                isolator(RETAIN_SET, json!({"set": ["read"]})),
            ]),
            Err(SeccompError::Both)
        );
    }

    #[test]
    fn filters_build() {
        let program = build(&default_spec()).unwrap();
        assert!(program.len() > 50);
        let retain = spec_from_isolators(&[isolator(
            RETAIN_SET,
            json!({"set": ["@rkt/default-whitelist"], "errno": "EPERM"}),
        )])
        .unwrap()
        .unwrap();
        assert!(build(&retain).unwrap().len() > program.len());
    }

    /// In a forked child on this host (root: with CAP_SYS_ADMIN the filter needs no
    /// no_new_privs, and installing it must not set it).
    #[test]
    fn installed_without_no_new_privs_by_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let program = build(&default_spec()).unwrap();
        crate::pod::testutil::in_child(move || {
            install(&program).map_err(|e| e.to_string())?;
            let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
            if !status.contains("Seccomp:\t2") || !status.contains("NoNewPrivs:\t0") {
                return Err(status);
            }
            Ok(())
        });
    }

    /// In a forked child on this host: the filter installs, /proc/self/status says so, a
    /// removed call fails with the isolator's errno and the others still work.
    #[test]
    fn installed_in_a_child() {
        let spec = spec_from_isolators(&[isolator(
            REMOVE_SET,
            json!({"set": ["@rkt/default-blacklist", "getpriority"], "errno": "EACCES"}),
        )])
        .unwrap()
        .unwrap();
        let program = build(&spec).unwrap();
        crate::pod::testutil::in_child(move || {
            nix::sys::prctl::set_no_new_privs().map_err(|e| e.to_string())?;
            install(&program).map_err(|e| e.to_string())?;
            let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
            if !status.contains("Seccomp:\t2") || !status.contains("NoNewPrivs:\t1") {
                return Err(format!("not filtered:\n{status}"));
            }
            // SAFETY: getpriority takes two integers.
            let result = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            if result != -1 || errno != Some(libc::EACCES) {
                return Err(format!("getpriority: {result}, {errno:?}"));
            }
            if nix::unistd::getpid().as_raw() <= 0 {
                return Err("getpid failed".into());
            }
            Ok(())
        });
    }
}
