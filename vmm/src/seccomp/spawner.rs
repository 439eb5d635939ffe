//! The spawner's own calls: creating a thread (std and glibc) and what a new thread does to
//! confine itself before its own filter goes on (it inherits the spawner's filter, so those
//! calls are checked against this list). The spawner's full list is this plus every other
//! kind's (`super::spawner_rules`).

use super::rules::{Allow, Cond};

/// clone3's flags are in memory, out of a filter's reach: it is answered ENOSYS, and glibc's
/// pthread_create falls back to clone, whose flags the list checks.
pub fn refusals() -> Vec<(i64, i32)> {
    vec![(libc::SYS_clone3, libc::ENOSYS)]
}

/// Thread creation and confinement.
pub fn rules() -> Vec<Allow> {
    use libc::*;
    let thread = (CLONE_VM | CLONE_THREAD | CLONE_SIGHAND) as u64;
    vec![
        // pthread_create: a thread of this process only (never a new process: no fork).
        Allow::when_all(SYS_clone, &[Cond::all_bits(0, thread)]),
        // The new thread's start in glibc: robust futex list, restartable sequences.
        Allow::always(SYS_set_robust_list),
        Allow::always(SYS_rseq),
        // Confining the new thread (the jail's policy): supplementary groups, IDs,
        // capabilities, no_new_privs, the thread's name and its seccomp filter.
        Allow::always(SYS_setgroups),
        Allow::always(SYS_setresgid),
        Allow::always(SYS_setresuid),
        Allow::always(SYS_capget),
        Allow::always(SYS_capset),
        Allow::arg_in(
            SYS_prctl,
            0,
            &[
                PR_SET_NO_NEW_PRIVS as u64,
                PR_SET_NAME as u64,
                PR_CAPBSET_DROP as u64,
                PR_CAPBSET_READ as u64,
                PR_SET_KEEPCAPS as u64,
                PR_CAP_AMBIENT as u64,
                PR_SET_SECUREBITS as u64,
                PR_GET_SECUREBITS as u64,
            ],
        ),
        Allow::arg_in(SYS_seccomp, 0, &[SECCOMP_SET_MODE_FILTER as u64]),
    ]
}
