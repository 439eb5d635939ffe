//! The per-pod unprivileged host identity, and moving the calling thread to it.
//!
//! Why an unprivileged host uid rather than a user namespace: the VMM's virtio-fs threads must
//! create files owned by the guest's uids in trees whose owners are real host ids (the pod's
//! overlay, host volumes). In a user namespace mapped to a subordinate range they could only do
//! that through idmapped mounts, which neither overlayfs nor every volume's file system offers
//! on the kernels we run on. So every VMM thread that does not serve a share runs as a uid/gid
//! of its own with no capability at all, and the virtio-fs threads keep uid 0 with the few file
//! capabilities passthrough needs (docs/security.md, "The VMM's jail").

use serde::{Deserialize, Serialize};

/// The first uid/gid of the range the per-pod ids are taken from. Chosen far above the ranges
/// distributions hand out (system ids, users, /etc/subuid ranges start at 100000 and grow by
/// 65536), below 2^31 so that no tool reads it as negative.
pub const POD_ID_BASE: u32 = 2_000_000_000;
/// How many ids the range has.
pub const POD_ID_RANGE: u32 = 1 << 24;

/// A pod's VMM identity on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIds {
    pub uid: u32,
    pub gid: u32,
}

impl PodIds {
    /// The ids of the pod `uuid`: a hash of the UUID into the range. Two pods sharing ids by
    /// chance (one in ~16 million) still cannot reach each other: each VMM has its own pid
    /// namespace, and nothing in one jail is visible in another.
    pub fn of_pod(uuid: &str) -> PodIds {
        // FNV-1a: stable across builds and releases (unlike std's hasher), which matters
        // because `rkt gc` and `--debug` name the same ids later.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in uuid.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        let id = POD_ID_BASE + hash % POD_ID_RANGE;
        PodIds { uid: id, gid: id }
    }
}

/// Switching the calling thread's credentials failed.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct ThreadIdsError {
    call: &'static str,
    source: std::io::Error,
}

/// Makes the calling thread (only it) run as `ids`, with no supplementary groups. From uid 0
/// this also clears every capability of the thread (the kernel does so when all of its uids
/// leave 0), which is what we want.
pub fn become_ids(ids: PodIds) -> Result<(), ThreadIdsError> {
    let (uid, gid) = (libc::c_long::from(ids.uid), libc::c_long::from(ids.gid));
    // SAFETY: setgroups with size 0 reads no memory; it affects only the calling thread when
    // made as a raw system call.
    raw("setgroups", unsafe {
        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
    })?;
    // SAFETY: integer arguments only; raw, so only the calling thread changes.
    raw("setresgid", unsafe {
        libc::syscall(libc::SYS_setresgid, gid, gid, gid)
    })?;
    // SAFETY: as above.
    raw("setresuid", unsafe {
        libc::syscall(libc::SYS_setresuid, uid, uid, uid)
    })?;
    Ok(())
}

fn raw(call: &'static str, result: libc::c_long) -> Result<(), ThreadIdsError> {
    if result == 0 {
        Ok(())
    } else {
        Err(ThreadIdsError {
            call,
            source: std::io::Error::last_os_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ids_are_stable_and_in_the_range() {
        let a = PodIds::of_pod("2e1a7c3b-51f0-4f55-8a3e-0d9b5c7e6f10");
        assert_eq!(a, PodIds::of_pod("2e1a7c3b-51f0-4f55-8a3e-0d9b5c7e6f10"));
        assert_ne!(a, PodIds::of_pod("2e1a7c3b-51f0-4f55-8a3e-0d9b5c7e6f11"));
        assert!(a.uid >= POD_ID_BASE && a.uid < POD_ID_BASE + POD_ID_RANGE);
        assert!(a.uid < 1 << 31);
        assert_eq!(a.uid, a.gid);
    }

    #[test]
    fn become_ids_changes_only_the_calling_thread() {
        // The project's tests run as root (docs/foundation.md).
        let ids = PodIds::of_pod("thread-test");
        let inside = std::thread::spawn(move || {
            become_ids(ids).unwrap();
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
                caps::read(None, caps::CapSet::Effective).unwrap().len(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(inside, (ids.uid, ids.gid, 0));
        // This thread is still root.
        assert!(nix::unistd::geteuid().is_root());
    }
}
