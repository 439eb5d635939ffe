//! Each kind's filter installed in a forked child: allowed calls return, forbidden ones kill
//! the child with SIGSYS. The child makes raw system calls only (the test process has other
//! threads, so the child must not allocate or take locks); filters are built before the fork.

use super::*;
use std::ffi::CStr;

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exited(i32),
    Signaled(i32),
}

/// A probe: one raw system call in the child.
type Probe = fn() -> i64;

const KILLED: End = End::Signaled(libc::SIGSYS);
/// The child's exit status when the probe returned (the call was allowed).
const RETURNED: End = End::Exited(0);

/// Installs `programs` in a forked child, runs `probe` there and reports how the child ended.
fn in_child(programs: &[BpfProgram], probe: Probe) -> End {
    // SAFETY: the child only makes system calls (apply_filter: prctl and seccomp on data
    // built before the fork; the probe: raw syscalls) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        for program in programs {
            if seccompiler::apply_filter(program).is_err() {
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(100) };
            }
        }
        let _ = probe();
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` outlives the call.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    if libc::WIFSIGNALED(status) {
        End::Signaled(libc::WTERMSIG(status))
    } else {
        End::Exited(libc::WEXITSTATUS(status))
    }
}

fn enforced(kind: ThreadKind) -> Vec<BpfProgram> {
    // In apply's order: the refusals, then the allow-list.
    let mut programs = refusal_filters(kind).unwrap();
    programs.push(filter(kind).unwrap());
    programs
}

const TRUE: &CStr = c"/bin/true";
const ROOT: &CStr = c"/";
const PASSWD: &CStr = c"/etc/passwd";

// The probes: each one raw system call, its result ignored (only the filter's verdict counts).
// SAFETY (all probes): the pointers are to static NUL-terminated strings or null; the kernel
// checks them (the filter decides before it looks at them).
fn getpid() -> i64 {
    unsafe { libc::syscall(libc::SYS_getpid) }
}
fn execve() -> i64 {
    let argv = [TRUE.as_ptr(), std::ptr::null()];
    unsafe {
        libc::syscall(
            libc::SYS_execve,
            TRUE.as_ptr(),
            argv.as_ptr(),
            std::ptr::null::<u8>(),
        )
    }
}
fn ptrace() -> i64 {
    unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) }
}
fn mount() -> i64 {
    unsafe {
        libc::syscall(
            libc::SYS_mount,
            ROOT.as_ptr(),
            ROOT.as_ptr(),
            std::ptr::null::<u8>(),
            libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null::<u8>(),
        )
    }
}
fn socket_inet() -> i64 {
    unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) }
}
fn socket_inet6() -> i64 {
    unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET6, libc::SOCK_DGRAM, 0) }
}
fn socket_unix() -> i64 {
    unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) }
}
fn open_host_file() -> i64 {
    unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            PASSWD.as_ptr(),
            libc::O_RDONLY,
        )
    }
}
fn open_is_refused() -> i64 {
    let ret = open_host_file();
    let errno = std::io::Error::last_os_error().raw_os_error();
    if ret == -1 && errno == Some(libc::EACCES) {
        0
    } else {
        unsafe { libc::_exit(7) }
    }
}
fn kvm_run_on_bad_fd() -> i64 {
    let request = kvm_ioctls::vcpu_run()[0];
    unsafe { libc::syscall(libc::SYS_ioctl, -1, request, 0) }
}
fn tunsetiff_on_bad_fd() -> i64 {
    unsafe { libc::syscall(libc::SYS_ioctl, -1, libc::TUNSETIFF, 0) }
}
fn tunsetoffload_on_bad_fd() -> i64 {
    unsafe { libc::syscall(libc::SYS_ioctl, -1, libc::TUNSETOFFLOAD, 0) }
}
fn getrandom() -> i64 {
    let mut byte = 0u8;
    unsafe { libc::syscall(libc::SYS_getrandom, &mut byte as *mut u8, 1, 0) }
}
fn fork_by_clone() -> i64 {
    // clone(SIGCHLD) is fork: no CLONE_THREAD. If it were allowed, the grandchild leaves at
    // once.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    pid
}
fn clone3_answers_enosys() -> i64 {
    // With a null argument clone3 would fail EFAULT; the fallback filter answers first.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    if ret == -1 && errno == Some(libc::ENOSYS) {
        0
    } else {
        unsafe { libc::_exit(7) }
    }
}
fn setresuid_unchanged() -> i64 {
    unsafe { libc::syscall(libc::SYS_setresuid, -1i32, -1i32, -1i32) }
}

#[test]
fn allowed_calls_return_in_every_kind() {
    for kind in ThreadKind::ALL {
        assert_eq!(in_child(&enforced(kind), getpid), RETURNED, "{kind:?}");
    }
}

#[test]
fn forbidden_calls_kill_every_kind() {
    let forbidden: [(&str, Probe); 5] = [
        ("execve", execve),
        ("ptrace", ptrace),
        ("mount", mount),
        ("socket(AF_INET)", socket_inet),
        ("socket(AF_INET6)", socket_inet6),
    ];
    for kind in ThreadKind::ALL {
        let programs = enforced(kind);
        for (name, probe) in forbidden {
            assert_eq!(in_child(&programs, probe), KILLED, "{name} in {kind:?}");
        }
    }
}

#[test]
fn kinds_that_open_no_files_are_refused_opening_one() {
    for kind in [ThreadKind::Net, ThreadKind::Rng] {
        // EACCES: neither the file nor a kill (glibc's malloc may try /proc/sys/vm once).
        assert_eq!(
            in_child(&enforced(kind), open_is_refused),
            RETURNED,
            "{kind:?}"
        );
        // The allow-list alone lets it through to the refusal filter: only both refuse it.
        let allow_list_only = vec![filter(kind).unwrap()];
        assert_eq!(
            in_child(&allow_list_only, open_is_refused),
            End::Exited(7),
            "{kind:?}"
        );
    }
    // The virtio-fs worker opens files for the guest.
    assert_eq!(
        in_child(&enforced(ThreadKind::Fs), open_host_file),
        RETURNED
    );
}

#[test]
fn ioctls_are_limited_to_the_kinds_requests() {
    let vcpu = enforced(ThreadKind::Vcpu);
    assert_eq!(in_child(&vcpu, kvm_run_on_bad_fd), RETURNED);
    assert_eq!(in_child(&vcpu, tunsetiff_on_bad_fd), KILLED);
    // Activation sets the tap's offloads on the vCPU thread; the net worker makes no ioctl.
    assert_eq!(in_child(&vcpu, tunsetoffload_on_bad_fd), RETURNED);
    let net = enforced(ThreadKind::Net);
    assert_eq!(in_child(&net, tunsetoffload_on_bad_fd), KILLED);
    assert_eq!(in_child(&net, kvm_run_on_bad_fd), KILLED);
    assert_eq!(in_child(&net, tunsetiff_on_bad_fd), KILLED);
    for kind in [ThreadKind::Fs, ThreadKind::Rng] {
        assert_eq!(
            in_child(&enforced(kind), kvm_run_on_bad_fd),
            KILLED,
            "{kind:?}"
        );
    }
}

#[test]
fn vsock_opens_unix_sockets_only() {
    let vsock = enforced(ThreadKind::Vsock);
    assert_eq!(in_child(&vsock, socket_unix), RETURNED);
    assert_eq!(in_child(&vsock, socket_inet), KILLED);
    // The other workers open no socket at all.
    for kind in [
        ThreadKind::Fs,
        ThreadKind::Net,
        ThreadKind::Rng,
        ThreadKind::Vcpu,
    ] {
        assert_eq!(in_child(&enforced(kind), socket_unix), KILLED, "{kind:?}");
    }
}

#[test]
fn rng_draws_entropy_and_fs_switches_credentials() {
    assert_eq!(in_child(&enforced(ThreadKind::Rng), getrandom), RETURNED);
    assert_eq!(
        in_child(&enforced(ThreadKind::Fs), setresuid_unchanged),
        RETURNED
    );
    assert_eq!(
        in_child(&enforced(ThreadKind::Net), setresuid_unchanged),
        KILLED
    );
}

#[test]
fn spawner_makes_threads_but_never_processes() {
    let spawner = enforced(ThreadKind::Spawner);
    assert_eq!(in_child(&spawner, fork_by_clone), KILLED);
    assert_eq!(in_child(&spawner, clone3_answers_enosys), RETURNED);
    assert_eq!(in_child(&spawner, setresuid_unchanged), RETURNED);
}

#[test]
fn log_mode_lets_forbidden_calls_through() {
    let log = vec![filter_with(ThreadKind::Rng, Mismatch::Log).unwrap()];
    // socket(AF_INET) is refused by the empty network namespace at most, never killed.
    assert_eq!(in_child(&log, socket_inet), RETURNED);
}

#[test]
fn every_kind_is_a_subset_of_the_spawner() {
    let pid = std::process::id();
    let spawner = spawner_rules(pid);
    for kind in ThreadKind::ALL {
        assert!(
            rules::is_subset(&rule_set(kind, pid), &spawner),
            "{kind:?} allows what the spawner does not"
        );
    }
    // And the subset check does see a difference.
    assert!(!rules::is_subset(&spawner, &rule_set(ThreadKind::Rng, pid)));
}

#[test]
fn dangerous_calls_are_in_no_list() {
    use libc::*;
    let never = [
        SYS_execve,
        SYS_execveat,
        SYS_fork,
        SYS_vfork,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_chroot,
        SYS_setns,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_bpf,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_userfaultfd,
        SYS_perf_event_open,
        SYS_reboot,
    ];
    let set = spawner_rules(std::process::id());
    for call in never {
        assert!(!set.contains_key(&call), "system call {call} is allowed");
    }
    // unshare() only for the virtio-fs worker's own fs context (CLONE_FS), never a namespace.
    let unshare = set.get(&SYS_unshare).unwrap().as_ref().unwrap();
    assert_eq!(unshare, &vec![vec![Cond::eq(0, CLONE_FS as u64)]]);
    // socket() only ever with AF_UNIX.
    let socket = set.get(&SYS_socket).expect("vsock needs socket");
    let alternatives = socket.as_ref().expect("socket is conditional");
    assert_eq!(alternatives, &vec![vec![Cond::eq(0, AF_UNIX as u64)]]);
    // Nothing maps executable memory.
    let mmap = set.get(&SYS_mmap).unwrap().as_ref().unwrap();
    assert_eq!(mmap, &vec![vec![Cond::no_bits(2, PROT_EXEC as u64)]]);
}

#[test]
fn filters_fit_the_kernel_limit() {
    for kind in ThreadKind::ALL {
        let program = filter(kind).unwrap();
        assert!(
            program.len() < 4096,
            "{kind:?}: {} instructions",
            program.len()
        );
    }
}

#[test]
fn merge_keeps_unconditional_calls_unconditional() {
    let mut set = RuleSet::new();
    merge(
        &mut set,
        [
            rules::Allow::arg_in(libc::SYS_fcntl, 1, &[1]),
            rules::Allow::arg_in(libc::SYS_fcntl, 1, &[2, 1]),
        ],
    );
    assert_eq!(
        set[&libc::SYS_fcntl],
        Some(vec![vec![Cond::eq(1, 1)], vec![Cond::eq(1, 2)]])
    );
    merge(&mut set, [rules::Allow::always(libc::SYS_fcntl)]);
    merge(&mut set, [rules::Allow::arg_in(libc::SYS_fcntl, 1, &[3])]);
    assert_eq!(set[&libc::SYS_fcntl], None);
}
