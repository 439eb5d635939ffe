//! The allow-list vocabulary: a system call, optionally with conditions on its arguments, and
//! the lists every kind shares. The lists themselves live next to the code that makes the
//! calls (`devices/virtio/*/seccomp.rs`, `seccomp/{main_thread,vcpu,spawner}.rs`).

use std::collections::BTreeMap;

/// A test on one system-call argument (its low 32 bits, which is all the kernel reads of the
/// flags, file descriptors and request numbers we test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Test {
    /// The argument equals the value.
    Eq(u64),
    /// None of these bits is set.
    NoBits(u64),
    /// All of these bits are set.
    AllBits(u64),
}

/// A condition: argument `arg` (0-based) passes `test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cond {
    /// Which argument, 0 to 5.
    pub arg: u8,
    /// What it must satisfy.
    pub test: Test,
}

impl Cond {
    /// Argument `arg` equals `value`.
    pub const fn eq(arg: u8, value: u64) -> Cond {
        Cond {
            arg,
            test: Test::Eq(value),
        }
    }

    /// Argument `arg` has none of `bits`.
    pub const fn no_bits(arg: u8, bits: u64) -> Cond {
        Cond {
            arg,
            test: Test::NoBits(bits),
        }
    }

    /// Argument `arg` has all of `bits`.
    pub const fn all_bits(arg: u8, bits: u64) -> Cond {
        Cond {
            arg,
            test: Test::AllBits(bits),
        }
    }
}

/// One allowed system call: always, or when one of its alternatives (each a conjunction of
/// conditions) holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    /// The system call number (`libc::SYS_*`).
    pub syscall: i64,
    /// Empty: allowed whatever the arguments. Otherwise allowed when every condition of at
    /// least one alternative holds.
    pub when: Vec<Vec<Cond>>,
}

impl Allow {
    /// `syscall` whatever its arguments.
    pub fn always(syscall: i64) -> Allow {
        Allow {
            syscall,
            when: Vec::new(),
        }
    }

    /// `syscall` when argument `arg` is one of `values`.
    pub fn arg_in(syscall: i64, arg: u8, values: &[u64]) -> Allow {
        Allow {
            syscall,
            when: values.iter().map(|&v| vec![Cond::eq(arg, v)]).collect(),
        }
    }

    /// `syscall` when all of `conds` hold.
    pub fn when_all(syscall: i64, conds: &[Cond]) -> Allow {
        Allow {
            syscall,
            when: vec![conds.to_vec()],
        }
    }
}

/// An allow-list in canonical form: per system call, `None` for "whatever the arguments", or
/// the alternatives (sorted, without duplicates).
pub type RuleSet = BTreeMap<i64, Option<Vec<Vec<Cond>>>>;

/// Merges allow entries into a rule set: a call allowed unconditionally by any entry stays so;
/// otherwise the alternatives add up.
pub fn merge(set: &mut RuleSet, entries: impl IntoIterator<Item = Allow>) {
    for entry in entries {
        let slot = set.entry(entry.syscall).or_insert_with(|| Some(Vec::new()));
        match (slot.as_mut(), entry.when.is_empty()) {
            (None, _) => {}
            (Some(_), true) => *slot = None,
            (Some(alternatives), false) => {
                alternatives.extend(entry.when);
                alternatives.sort();
                alternatives.dedup();
            }
        }
    }
}

/// Whether everything `narrow` allows, `wide` allows too.
pub fn is_subset(narrow: &RuleSet, wide: &RuleSet) -> bool {
    narrow.iter().all(
        |(syscall, alternatives)| match (alternatives, wide.get(syscall)) {
            (_, None) => false,
            (_, Some(None)) => true,
            (None, Some(Some(_))) => false,
            (Some(narrow_alts), Some(Some(wide_alts))) => {
                narrow_alts.iter().all(|alt| wide_alts.contains(alt))
            }
        },
    )
}

/// `mmap`/`mprotect` protection bits: no thread maps or makes anything executable once the VM
/// runs (the binary and its libraries are mapped before).
const EXEC_BIT: u64 = libc::PROT_EXEC as u64;

/// What every thread of the VMM needs whatever it does: Rust's and glibc's allocator, thread
/// exit, locks, time, stderr diagnostics and the process exit.
pub fn common() -> Vec<Allow> {
    use libc::*;
    vec![
        // The allocator: heap, per-thread arenas, large buffers; never executable memory.
        Allow::always(SYS_brk),
        Allow::when_all(SYS_mmap, &[Cond::no_bits(2, EXEC_BIT)]),
        Allow::when_all(SYS_mprotect, &[Cond::no_bits(2, EXEC_BIT)]),
        Allow::always(SYS_munmap),
        Allow::always(SYS_mremap),
        // glibc returns freed arena memory and a finished thread's stack with MADV_DONTNEED.
        Allow::always(SYS_madvise),
        // glibc's malloc counts the CPUs when a thread creates its first arena (seen in log
        // mode on every worker and vCPU thread).
        Allow::always(SYS_sched_getaffinity),
        // Mutexes, condition variables, channels, joins.
        Allow::always(SYS_futex),
        Allow::always(SYS_sched_yield),
        // Thread exit: std removes the alternate signal stack, glibc blocks signals, then exit.
        Allow::always(SYS_sigaltstack),
        Allow::always(SYS_rt_sigprocmask),
        Allow::always(SYS_rt_sigreturn),
        Allow::always(SYS_exit),
        // `process::exit` and `_exit` from any thread (the panic hook, an unconfinable thread).
        Allow::always(SYS_exit_group),
        // Time: Instant/SystemTime when the vDSO falls back, thread::sleep.
        Allow::always(SYS_clock_gettime),
        Allow::always(SYS_clock_nanosleep),
        Allow::always(SYS_nanosleep),
        // std seeds each thread's HashMap keys from getrandom on first use.
        Allow::always(SYS_getrandom),
        // Eventfds (queue notifications, interrupts, stop signals) and stderr messages.
        Allow::always(SYS_read),
        Allow::always(SYS_write),
        Allow::always(SYS_close),
        // glibc's pthread_kill/raise (abort after a failed assertion in C code) name the thread.
        Allow::always(SYS_gettid),
        Allow::always(SYS_getpid),
    ]
}

/// What every device worker needs besides [`common`]: its epoll loop.
pub fn worker_loop() -> Vec<Allow> {
    use libc::*;
    vec![
        // Waiting on the queue eventfds, the stop eventfd and the device's own descriptors.
        Allow::always(SYS_epoll_wait),
        Allow::always(SYS_epoll_pwait),
        // Watching and unwatching descriptors as the device's state changes.
        Allow::always(SYS_epoll_ctl),
    ]
}

/// What activating or resetting a virtio device needs on the thread that does it (a vCPU on
/// the driver's MMIO write, the main thread on a restore): a fresh epoll and stop eventfd for
/// the worker, the request to the spawner (a channel: futex), the worker's join on reset.
pub fn device_activation() -> Vec<Allow> {
    use libc::*;
    vec![
        // The worker's epoll and its stop eventfd, created before the worker starts.
        Allow::always(SYS_epoll_create1),
        Allow::always(SYS_epoll_ctl),
        Allow::always(SYS_eventfd2),
        // Descriptors duplicated for the worker (EventFd::try_clone).
        Allow::arg_in(SYS_fcntl, 1, &[F_DUPFD_CLOEXEC as u64]),
        // virtio-fs: a fresh passthrough file system per activation opens the share's root
        // and /proc/self/fd, and looks at them.
        Allow::always(SYS_openat),
        Allow::always(SYS_statx),
        Allow::always(SYS_newfstatat),
        Allow::always(SYS_fstat),
        // virtio-net: the driver's offloads go to the tap (TUNSETOFFLOAD).
        Allow::arg_in(SYS_ioctl, 1, &[TUNSETOFFLOAD]),
    ]
}
