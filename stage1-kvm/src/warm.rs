//! Warm start (docs/stage1-kvm.md, "Warm start"): instead of booting the guest kernel, restore
//! a snapshot of a booted, idle guest from the cache under the rkt data directory
//! (`snapshot-cache`), then hand guest-init this pod's parameters over vsock.
//!
//! The first pod of a VM shape makes the entry (a cold boot of a warm-mode guest, saved as soon
//! as guest-init waits for its handover) and then restores it like every later pod, so that
//! one code path serves every pod and a snapshot that cannot be restored shows up at once.
//! Anything that goes wrong before the guest took this pod's parameters ends in a cold boot:
//! a snapshot that could not be made, one whose files changed since it was made (the cache
//! checks them against its `info.json`), or one the VMM refuses (another kernel, VMM build or
//! host CPU, a corrupted file) or whose guest does not answer the handover; a refused entry
//! is removed, so the next pod of the shape makes a new one.
//!
//! Nothing of the pod is in a snapshot: it is made with this pod's shares (never mounted
//! before the snapshot point), its own vsock socket (`warm` beside the pod's, so no readiness
//! ping or app stream reaches it), this pod's taps (no frame crosses them: the guest's NICs
//! are down) and placeholder MACs, which guest-init replaces with the pod's (`bootMac` in
//! the guest's `network.json`, written by `net` for every pod).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use snapshot_cache::{Cache, Key, Made, ShareShape, CACHE_FORMAT};
use vmm::config::MacAddr;
use vmm::{SerialOutput, VmConfig, VmOutcome};

use crate::error::Stage1Error;
use crate::pod::PodPaths;
use crate::timing::Timeline;
use crate::vmm_process::protocol::Reply;
use crate::vmm_process::{self, Action, JailPlan};

/// What the snapshot's guest boots with: only what the kernel itself needs. guest-init waits
/// in warm mode; its pod parameters arrive with the handover.
/// `cgroup.memory=nosocket` (also on the cold command line, run.rs): the apps' network buffers
/// are not charged to their memory cgroups. With the charge, a pod's TCP sender (app in a
/// cgroup with a memory limit) ran at about half the rate of the same guest without one
/// (docs/networking.md, "Separating the candidates"); the VM's size already bounds the pod.
pub const SNAPSHOT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 quiet cgroup.memory=nosocket rkt.warm=1";
/// The kernel and initramfs inside an entry (copies of the stage1 image's: the VMM checks a
/// snapshot against the files it is restored with, and unchanged files are not hashed again).
const ENTRY_KERNEL: &str = "vmlinux";
const ENTRY_INITRD: &str = "initramfs.cpio";
/// The snapshot guest's console, in the pod's own directory (for when making one fails).
const SNAPSHOT_CONSOLE: &str = "snapshot-console.log";

/// NIC `index`'s MAC in a snapshot: locally administered, never a CNI interface's
/// (those are random), the same in every snapshot so the key needs only the NIC count.
pub fn placeholder_mac(index: usize) -> MacAddr {
    MacAddr([0x02, 0x72, 0x6b, 0x74, 0x00, index.min(255) as u8])
}

/// Where warm start keeps its cache for the pod in `pod_dir` (`$dir/pods/run/<uuid>`): the
/// rkt data directory is three levels up. None for a pod outside that layout.
pub fn data_dir_of(pod_dir: &Path) -> Option<PathBuf> {
    let run = pod_dir.parent()?;
    let pods = run.parent()?;
    (run.file_name()? == "run" && pods.file_name()? == "pods")
        .then(|| pods.parent().map(Path::to_path_buf))
        .flatten()
}

/// The cache key for `config` booted from the stage1 image tree `stage1_tree`.
pub fn key_of(config: &VmConfig, stage1_tree: &str) -> Key {
    Key {
        format: CACHE_FORMAT,
        stage1_tree: stage1_tree.to_string(),
        cmdline: SNAPSHOT_CMDLINE.to_string(),
        mem_mib: config.mem_mib,
        vcpus: config.vcpus,
        rng: config.rng,
        shares: config
            .shares
            .iter()
            .map(|s| ShareShape {
                tag: s.tag.clone(),
                read_only: s.read_only,
            })
            .collect(),
        vsock_cid: config.vsock.as_ref().map_or(0, |v| v.guest_cid),
        nics: config.nets.len(),
    }
}

/// Runs the pod's VM from a snapshot when one can be had, else cold; the result is
/// `vmm::run`'s. `config` is the pod's cold-boot configuration.
pub fn run(
    plan: &JailPlan,
    config: VmConfig,
    pod: &PodPaths,
    debug: bool,
    timeline: &mut Timeline,
) -> Result<VmOutcome, Stage1Error> {
    let note = |line: String| {
        if debug {
            eprintln!("stage1-kvm: warm start: {line}");
        }
    };
    let Some(cache) = data_dir_of(&pod.dir).map(|dir| Cache::new(&dir)) else {
        note("the pod is not in an rkt data directory; booting cold".into());
        return vmm_process::boot(plan, config);
    };
    let tree_file = pod.dir.join("stage1TreeStoreID");
    let stage1_tree = match fs::read_to_string(&tree_file) {
        Ok(tree) if !tree.trim().is_empty() => tree.trim().to_string(),
        _ => {
            note(format!("no {}; booting cold", tree_file.display()));
            return vmm_process::boot(plan, config);
        }
    };
    let key = key_of(&config, &stage1_tree);
    let found = match cache.open_checked(&key) {
        Ok(found) => found.is_some(),
        // Its files changed since it was made (snapshot-cache, "Integrity"): as for a
        // snapshot the VMM refuses, this pod boots cold and the entry goes, so the next pod
        // of the shape makes a new one.
        Err(refused) => {
            note(format!("{refused}; booting cold and removing it"));
            let _ = cache.remove_refused(&key);
            return vmm_process::boot(plan, config);
        }
    };
    timeline.mark("look up the warm-start snapshot");
    if !found {
        let started = Instant::now();
        match cache.make(&key, |dir| make_snapshot(plan, &config, pod, dir)) {
            Ok(Made::Built) => {
                note(format!(
                    "made snapshot {} in {} ms",
                    key.id(),
                    started.elapsed().as_millis()
                ));
                timeline.mark("make the warm-start snapshot");
            }
            Ok(Made::Found) => {}
            Err(err) => {
                note(format!("{err}; booting cold"));
                return vmm_process::boot(plan, config);
            }
        }
    }
    let Some(entry) = cache.open(&key) else {
        note(format!("snapshot {} vanished; booting cold", key.id()));
        return vmm_process::boot(plan, config);
    };
    note(format!("restoring snapshot {}", entry.id));
    let mut restoring = config.clone();
    restoring.kernel.path = entry.dir.join(ENTRY_KERNEL);
    restoring.kernel.initrd = Some(entry.dir.join(ENTRY_INITRD));
    let restore = Action::Restore {
        dir: entry.dir.clone(),
    };
    match plan.run(restore, restoring)? {
        Reply::Ended(outcome) => Ok(outcome.into()),
        // Every snapshot error comes before guest-init took the pod's parameters: nothing
        // of the pod has run yet, so a cold boot runs it exactly once.
        Reply::SnapshotRefused(err) => {
            note(format!(
                "snapshot {} failed to restore ({err}); booting cold and removing it",
                entry.id
            ));
            let _ = cache.remove_opened(&entry);
            // The restore's socket, if its device did not get to remove it.
            if let Some(vsock) = &config.vsock {
                let _ = fs::remove_file(&vsock.uds_path);
            }
            vmm_process::boot(plan, config)
        }
        other => Err(vmm_process::unexpected(other)),
    }
}

/// Fills the entry directory `dir`: the kernel and initramfs, then the VMM's snapshot of a
/// warm-mode guest booted from them in the pod's VM shape.
fn make_snapshot(
    plan: &JailPlan,
    config: &VmConfig,
    pod: &PodPaths,
    dir: &Path,
) -> Result<(), String> {
    let kernel = dir.join(ENTRY_KERNEL);
    let initrd = dir.join(ENTRY_INITRD);
    let source_initrd = config.kernel.initrd.clone().unwrap_or_else(|| pod.initrd());
    for (from, to) in [(&config.kernel.path, &kernel), (&source_initrd, &initrd)] {
        fs::copy(from, to).map_err(|e| format!("copying {}: {e}", from.display()))?;
        // Root's alone, as every file of the cache (snapshot-cache, "Modes"), and set now:
        // a chmod after the VMM stamped the file for the snapshot would change its ctime, and
        // every restore would then hash the kernel and initramfs again.
        fs::set_permissions(to, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("setting the mode of {}: {e}", to.display()))?;
    }
    let mut snapshot = config.clone();
    snapshot.kernel.path = kernel;
    snapshot.kernel.initrd = Some(initrd);
    snapshot.kernel.cmdline = SNAPSHOT_CMDLINE.to_string();
    snapshot.serial = SerialOutput::File(pod.own_dir().join(SNAPSHOT_CONSOLE));
    snapshot.collect_stats = false;
    if let Some(vsock) = &mut snapshot.vsock {
        vsock.uds_path = vsock.uds_path.with_file_name("warm");
        let _ = fs::remove_file(&vsock.uds_path);
    }
    for (index, nic) in snapshot.nets.iter_mut().enumerate() {
        nic.mac = placeholder_mac(index);
    }
    // The jailed VMM saves the snapshot as its unprivileged uid: the directory is its own for
    // the run, then root's again, and what it left must be plain files only.
    let ids = plan.ids();
    std::os::unix::fs::chown(dir, Some(ids.uid), Some(ids.gid))
        .map_err(|e| format!("handing {} to the VMM: {e}", dir.display()))?;
    let made = plan.run(
        Action::MakeSnapshot {
            dir: dir.to_path_buf(),
        },
        snapshot,
    );
    let reclaimed = reclaim(dir, ids.uid);
    match made.map_err(|e| e.to_string())? {
        Reply::Saved => reclaimed,
        other => Err(vmm_process::unexpected(other).to_string()),
    }
}

/// Gives `dir` and what the VMM (uid `vmm_uid`) made in it back to root, refusing anything but
/// regular files (a link or a directory there could point the cache at a host file).
fn reclaim(dir: &Path, vmm_uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    std::os::unix::fs::chown(dir, Some(0), Some(0))
        .map_err(|e| format!("taking {} back from the VMM: {e}", dir.display()))?;
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("checking {}: {e}", entry.path().display()))?;
        if !meta.file_type().is_file() {
            return Err(format!(
                "the snapshot run left {}, which is not a regular file",
                entry.path().display()
            ));
        }
        if meta.uid() == vmm_uid {
            std::os::unix::fs::lchown(entry.path(), Some(0), Some(0))
                .map_err(|e| format!("taking {} back: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::{KernelConfig, ShareConfig, VsockConfig};

    #[test]
    fn the_data_dir_is_three_levels_above_a_running_pod() {
        assert_eq!(
            data_dir_of(Path::new("/var/lib/rkt/pods/run/2e1a")),
            Some(PathBuf::from("/var/lib/rkt"))
        );
        assert_eq!(data_dir_of(Path::new("/tmp/pod")), None);
        assert_eq!(data_dir_of(Path::new("/x/pods/prepared/2e1a")), None);
    }

    #[test]
    fn the_key_is_the_shape_not_the_pod() {
        let mut config = VmConfig::new(KernelConfig {
            path: "/p1/vmlinux".into(),
            cmdline: "rkt.pod=one".into(),
            initrd: None,
        });
        config.shares.push(ShareConfig::new("pod", "/p1", false));
        config.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: "/p1/vsock".into(),
            host_ports: vec![3],
        });
        let mut other_pod = config.clone();
        other_pod.kernel.cmdline = "rkt.pod=two".into();
        other_pod.shares[0].host_dir = "/p2".into();
        other_pod.vsock.as_mut().unwrap().uds_path = "/p2/vsock".into();
        assert_eq!(key_of(&config, "t").id(), key_of(&other_pod, "t").id());
        let mut bigger = config.clone();
        bigger.mem_mib = 256;
        assert_ne!(key_of(&config, "t").id(), key_of(&bigger, "t").id());
        assert_ne!(key_of(&config, "t").id(), key_of(&config, "u").id());
        let mut with_nic = config.clone();
        with_nic.nets.push(vmm::config::NetConfig::new("tap0"));
        assert_eq!(key_of(&with_nic, "t").nics, 1);
    }
}
