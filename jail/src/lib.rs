//! Confinement primitives for one process, in the manner of Firecracker's jailer but as a
//! library: the caller (the kvm stage1's VMM process) decides the order. Nothing here knows
//! about VMs.
//!
//! - `root`: a per-process root file system on tmpfs holding only bind-mounted pieces, entered
//!   with pivot_root, the old root detached;
//! - `ids`: the per-pod unprivileged host uid/gid, and switching the *calling thread's*
//!   credentials (raw system calls: glibc's setuid family would switch every thread);
//! - `caps`: capability sets of the calling thread, and the process's bounding set;
//! - `cgroup`: a cgroup v2 of its own with memory and pid limits;
//! - `rlimits`: resource limits.

pub mod cgroup;
pub mod ids;
pub mod rlimits;
pub mod root;
pub mod thread_caps;

pub use cgroup::{Cgroup, CgroupError, CgroupLimits};
pub use ids::{PodIds, ThreadIdsError};
pub use root::{JailRoot, RootError};
pub use thread_caps::CapsError;
