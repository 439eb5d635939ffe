//! Per-thread seccomp allow-lists for the VMM's threads.
//!
//! Every [`ThreadKind`] has its own list, kept as readable data next to the code that makes
//! the calls: [`main_thread`], [`vcpu`], [`spawner`] here, and `devices/virtio/{fs,net,vsock,
//! rng}/seccomp.rs`, each on top of [`rules::common`]. [`apply`] installs a kind's filter on
//! the calling thread only (no TSYNC): the jail's `sandbox::Policy::enter(kind)` calls it last,
//! after the thread's credentials are set. A call outside the list kills the whole VMM
//! (`SECCOMP_RET_KILL_PROCESS`); [`Mismatch::Log`] only logs it (`type=1326` audit lines in
//! the kernel log, with the thread's name as `comm=`), to find what a list misses.
//!
//! Filters stack: a thread started by the spawner keeps the spawner's filter and adds its own,
//! so the spawner's list is the union of every kind's plus thread creation and confinement
//! ([`spawner_rules`]). Denied everywhere: exec, fork, ptrace, mounts, pivot_root, file
//! handles, bpf, kexec, modules, keyrings, userfaultfd, and sockets of any family but AF_UNIX.

#[cfg(test)]
mod cost;
pub mod kvm_ioctls;
pub mod main_thread;
pub mod rules;
pub mod spawner;
pub mod vcpu;

use std::sync::Arc;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use thiserror::Error;

use crate::devices::virtio::{fs, net, rng, vsock};
use crate::sandbox::{Policy, ThreadKind};
use rules::{merge, Cond, RuleSet, Test};

/// What a filter does with a call outside its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Kill the whole VMM (SECCOMP_RET_KILL_PROCESS): production.
    KillProcess,
    /// Allow the call and log it in the kernel log (SECCOMP_RET_LOG): finding what a list
    /// misses during development.
    Log,
}

/// Why a filter could not be built or installed.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// seccompiler refused the list (a bad condition, or a filter over 4096 instructions).
    #[error("building the {kind} thread's seccomp filter: {source}")]
    Build {
        /// The thread kind's name.
        kind: &'static str,
        /// seccompiler's reason.
        source: BackendError,
    },
    /// prctl(PR_SET_NO_NEW_PRIVS) or seccomp(SECCOMP_SET_MODE_FILTER) failed.
    #[error("installing the {kind} thread's seccomp filter: {source}")]
    Install {
        /// The thread kind's name.
        kind: &'static str,
        /// seccompiler's reason (the system call's error).
        source: seccompiler::Error,
    },
}

/// The calls the kind's filters answer with an error instead of running them (and instead of
/// killing the VMM): they pass the kind's allow-list and a second filter refuses them.
pub fn refusals(kind: ThreadKind) -> Vec<(i64, i32)> {
    match kind {
        ThreadKind::Spawner => spawner::refusals(),
        ThreadKind::Net => net::seccomp::refusals(),
        ThreadKind::Rng => rng::seccomp::refusals(),
        ThreadKind::Main | ThreadKind::Vcpu | ThreadKind::Fs | ThreadKind::Vsock => Vec::new(),
    }
}

/// The kind's allow-list, without the calls every kind shares.
fn own_rules(kind: ThreadKind, pid: u32) -> Vec<rules::Allow> {
    match kind {
        ThreadKind::Main => main_thread::rules(pid),
        ThreadKind::Spawner => spawner::rules(),
        ThreadKind::Vcpu => vcpu::rules(),
        ThreadKind::Fs => fs::seccomp::rules(),
        ThreadKind::Net => net::seccomp::rules(),
        ThreadKind::Vsock => vsock::seccomp::rules(),
        ThreadKind::Rng => rng::seccomp::rules(),
    }
}

/// The kind's complete allow-list for the process `pid`; the spawner's is every kind's.
pub fn rule_set(kind: ThreadKind, pid: u32) -> RuleSet {
    let mut set = RuleSet::new();
    merge(&mut set, rules::common());
    merge(&mut set, own_rules(kind, pid));
    // Refused calls must get past the allow-list to be refused rather than kill.
    merge(
        &mut set,
        refusals(kind)
            .into_iter()
            .map(|(syscall, _)| rules::Allow::always(syscall)),
    );
    if kind == ThreadKind::Spawner {
        for other in ThreadKind::ALL {
            merge(&mut set, own_rules(other, pid));
        }
    }
    set
}

/// The spawner's list (the union of all kinds', plus its own); an alias of
/// `rule_set(ThreadKind::Spawner, pid)` for readers looking for the union.
pub fn spawner_rules(pid: u32) -> RuleSet {
    rule_set(ThreadKind::Spawner, pid)
}

fn condition(cond: &Cond) -> Result<SeccompCondition, BackendError> {
    let (op, value) = match cond.test {
        Test::Eq(value) => (SeccompCmpOp::Eq, value),
        Test::NoBits(bits) => (SeccompCmpOp::MaskedEq(bits), 0),
        Test::AllBits(bits) => (SeccompCmpOp::MaskedEq(bits), bits),
    };
    SeccompCondition::new(cond.arg, SeccompCmpArgLen::Dword, op, value)
}

fn compile(set: &RuleSet, mismatch: SeccompAction) -> Result<BpfProgram, BackendError> {
    let mut rules = std::collections::BTreeMap::new();
    for (syscall, alternatives) in set {
        let chain = match alternatives {
            None => Vec::new(),
            Some(alternatives) => alternatives
                .iter()
                .map(|conds| {
                    SeccompRule::new(conds.iter().map(condition).collect::<Result<_, _>>()?)
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        rules.insert(*syscall, chain);
    }
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)?.try_into()
}

fn action(mismatch: Mismatch) -> SeccompAction {
    match mismatch {
        Mismatch::KillProcess => SeccompAction::KillProcess,
        Mismatch::Log => SeccompAction::Log,
    }
}

/// The kind's filter for this process, killing the process on a call outside the list.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    filter_with(kind, Mismatch::KillProcess)
}

/// The kind's filter for this process, with `mismatch` for calls outside the list.
pub fn filter_with(kind: ThreadKind, mismatch: Mismatch) -> Result<BpfProgram, SeccompError> {
    compile(&rule_set(kind, std::process::id()), action(mismatch)).map_err(|source| {
        SeccompError::Build {
            kind: kind.name(),
            source,
        }
    })
}

/// The kind's refusal filters, one per error number: each answers its calls with that error
/// and lets everything else through to the allow-list (the kernel applies the strictest
/// verdict of all the thread's filters, so a refused call never runs).
pub fn refusal_filters(kind: ThreadKind) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut by_errno: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
    for (syscall, errno) in refusals(kind) {
        by_errno.entry(errno).or_default().push(syscall);
    }
    by_errno
        .into_iter()
        .map(|(errno, syscalls)| {
            let rules = syscalls.into_iter().map(|s| (s, Vec::new())).collect();
            SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                TargetArch::x86_64,
            )
            .and_then(BpfProgram::try_from)
            .map_err(|source| SeccompError::Build {
                kind: kind.name(),
                source,
            })
        })
        .collect()
}

/// Sets no_new_privs and installs the kind's filter on the calling thread only; a call
/// outside the list kills the VMM. Call it last when confining a thread, after its
/// credentials and capabilities are set: the kind's list has no credential calls (but the
/// virtio-fs worker's own per-request ones).
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    apply_with(kind, Mismatch::KillProcess)
}

/// [`apply`] with `mismatch` for calls outside the list.
pub fn apply_with(kind: ThreadKind, mismatch: Mismatch) -> Result<(), SeccompError> {
    // The allow-list goes on last: it has no prctl or seccomp for the kinds that do not start
    // threads, so nothing could be installed after it.
    let mut programs = refusal_filters(kind)?;
    programs.push(filter_with(kind, mismatch)?);
    for program in &programs {
        // seccompiler sets PR_SET_NO_NEW_PRIVS, then seccomp(SECCOMP_SET_MODE_FILTER) with no
        // flags: this thread only.
        seccompiler::apply_filter(program).map_err(|source| SeccompError::Install {
            kind: kind.name(),
            source,
        })?;
    }
    Ok(())
}

/// A `sandbox::Policy` that only installs the seccomp filters (no credentials, namespaces or
/// capabilities): `rkt-vmm --seccomp` uses it, and a jail policy can delegate its last step to
/// [`apply`] instead.
#[derive(Clone, Copy, Debug)]
pub struct SeccompOnly {
    mismatch: Mismatch,
}

impl SeccompOnly {
    /// A policy answering calls outside the lists with `mismatch`.
    pub fn new(mismatch: Mismatch) -> SeccompOnly {
        SeccompOnly { mismatch }
    }

    /// Installs it as the process's sandbox policy (`sandbox::install`).
    pub fn install(self) -> Result<(), String> {
        crate::sandbox::install(Arc::new(self))
    }
}

impl Policy for SeccompOnly {
    fn enter(&self, kind: ThreadKind) -> Result<(), String> {
        apply_with(kind, self.mismatch).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
