//! The appc isolators guest-init applies to an app. The kvm stage1 names every other one on
//! `rkt run`'s stderr before the VM starts, so none is ignored in silence.

/// Every isolator name guest-init applies (docs/security.md, "Ring 3").
pub const APPLIED: [&str; 9] = [
    "resource/memory",
    "resource/cpu",
    "os/linux/cpu-shares",
    "os/linux/capabilities-retain-set",
    "os/linux/capabilities-remove-set",
    "os/linux/seccomp-retain-set",
    "os/linux/seccomp-remove-set",
    "os/linux/no-new-privileges",
    "os/linux/oom-score-adj",
];
