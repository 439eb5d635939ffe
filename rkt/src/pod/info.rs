//! Read-only facts about a pod, from the files in its directory: the
//! manifest, creation and start times, stage1's PID, each app's exit status.
//! Everything here works on a pod in any state, whoever created it.

use std::fs::Metadata;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use appc::{ImageManifest, PodManifest};

use super::layout;
use super::safe_read::{self, cap, SafeReadError};
use super::state::Pod;
use super::PodError;

/// A time as nanoseconds since the epoch (what rkt's JSON carries).
pub type UnixNanos = i64;

fn mtime_of(meta: &Metadata) -> UnixNanos {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// A path inside the pod directory, relative to it (the `layout` helpers joined onto an
/// empty base), for lookups through the pod's descriptor.
fn inside(build: impl FnOnce(&Path) -> PathBuf) -> PathBuf {
    build(Path::new(""))
}

/// Whether `id` may name a store tree: never a path.
fn is_tree_id(id: &str) -> bool {
    !id.is_empty()
        && !id.contains('/')
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_graphic())
}

impl Pod {
    /// Every read of a pod file goes through the pod directory's own descriptor (the one its
    /// lock is on) and `safe_read`: no link is followed, no FIFO blocks us, sizes are capped.
    fn dir_fd(&self) -> BorrowedFd<'_> {
        self.lock().as_fd()
    }

    fn read_error(&self, what: &str) -> impl FnOnce(SafeReadError) -> PodError + '_ {
        let context = format!("reading the {what} of pod {}", self.uuid);
        move |source| PodError::PodFile { context, source }
    }

    /// Pod file `rel` (relative to the pod directory), at most `limit` bytes; `None` if absent.
    fn read_pod_file(
        &self,
        rel: &Path,
        limit: u64,
        what: &str,
    ) -> Result<Option<Vec<u8>>, PodError> {
        safe_read::read_optional(self.dir_fd(), rel, limit).map_err(self.read_error(what))
    }

    /// The mtime of regular file `rel`; `None` if absent. Anything else there (a link, a
    /// FIFO, a directory) is an error naming it: such a time would mean nothing.
    fn file_mtime(&self, rel: &Path, what: &str) -> Result<Option<UnixNanos>, PodError> {
        let meta = safe_read::metadata(self.dir_fd(), rel).map_err(self.read_error(what))?;
        match meta {
            None => Ok(None),
            Some(meta) if meta.file_type().is_file() => Ok(Some(mtime_of(&meta))),
            Some(meta) => Err(self.read_error(what)(SafeReadError::NotRegular {
                path: rel.to_path_buf(),
                kind: safe_read::kind_of(&meta),
            })),
        }
    }

    /// The pod manifest exactly as stored (what `cat-manifest` prints).
    pub fn manifest_bytes(&self) -> Result<Vec<u8>, PodError> {
        safe_read::read(
            self.dir_fd(),
            Path::new(layout::POD_MANIFEST),
            cap::MANIFEST,
        )
        .map_err(self.read_error("manifest"))
    }

    /// The parsed pod manifest; `None` before prepare has written it.
    pub fn manifest(&self) -> Result<Option<PodManifest>, PodError> {
        let Some(bytes) =
            self.read_pod_file(Path::new(layout::POD_MANIFEST), cap::MANIFEST, "manifest")?
        else {
            return Ok(None);
        };
        PodManifest::from_json(&bytes)
            .map(Some)
            .map_err(|err| PodError::BadManifest {
                uuid: self.uuid.to_string(),
                problem: err.to_string(),
            })
    }

    /// The app's image manifest, as copied into `appsinfo/` at prepare.
    pub fn app_image_manifest(&self, app: &str) -> Result<ImageManifest, PodError> {
        let rel = inside(|pod| layout::app_image_manifest(pod, app));
        let bytes = safe_read::read(self.dir_fd(), &rel, cap::MANIFEST)
            .map_err(self.read_error("image manifest"))?;
        ImageManifest::from_json(&bytes).map_err(|err| PodError::BadManifest {
            uuid: self.uuid.to_string(),
            problem: format!("image manifest of app {app}: {err}"),
        })
    }

    /// When the pod was prepared (mtime of `pod-created`, else of `pod`);
    /// `None` for states before `prepared`.
    pub fn created(&self) -> Result<Option<UnixNanos>, PodError> {
        if !self.state().has_been_prepared() {
            return Ok(None);
        }
        for name in [layout::POD_CREATED, layout::POD_MANIFEST] {
            if let Some(time) = self.file_mtime(Path::new(name), "creation time")? {
                return Ok(Some(time));
            }
        }
        Ok(None)
    }

    /// When stage1 started (mtime of `pid` or `ppid`); `None` if it never
    /// wrote either.
    pub fn started(&self) -> Result<Option<UnixNanos>, PodError> {
        if !(self.state() == super::PodState::Running || self.state().is_after_run()) {
            return Ok(None);
        }
        for name in [layout::PID, layout::PPID] {
            if let Some(time) = self.file_mtime(Path::new(name), "start time")? {
                return Ok(Some(time));
            }
        }
        Ok(None)
    }

    /// The PID stage1 wrote (`pid`, else `ppid`); `None` if neither exists
    /// yet (there is a short window after the pod enters `run/`).
    pub fn pid(&self) -> Result<Option<i32>, PodError> {
        for name in [layout::PID, layout::PPID] {
            let Some(bytes) = self.read_pod_file(Path::new(name), cap::LINE, "pid file")? else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            return match text.trim().parse::<i32>() {
                Ok(pid) if pid > 0 => Ok(Some(pid)),
                _ => Err(PodError::BadFile {
                    path: self.path().join(name),
                    problem: format!("{:?} is not a process ID", text.trim()),
                }),
            };
        }
        Ok(None)
    }

    /// Where the stage1 rootfs's files are when nothing is mounted, relative
    /// to the pod directory: the overlay's upper directory for overlay pods
    /// (rkt reads status there), else `stage1/rootfs`.
    pub fn stage1_rootfs_files(&self) -> Result<PathBuf, PodError> {
        let overlay = safe_read::metadata(self.dir_fd(), Path::new(layout::OVERLAY_PREPARED))
            .map_err(self.read_error("overlay marker"))?;
        if overlay.is_none() {
            return Ok(inside(layout::stage1_rootfs));
        }
        let rel = Path::new(layout::STAGE1_TREE_STORE_ID);
        let bytes = safe_read::read(self.dir_fd(), rel, cap::LINE)
            .map_err(self.read_error("stage1 tree ID"))?;
        let tree = String::from_utf8_lossy(&bytes).trim().to_string();
        if !is_tree_id(&tree) {
            return Err(PodError::BadFile {
                path: self.path().join(rel),
                problem: format!("{tree:?} is not a tree ID"),
            });
        }
        Ok(inside(|pod| layout::overlay_upper(pod, &tree, "")))
    }

    /// The exit status stage1 recorded for `app`; `None` if it has none
    /// (still running, or never started).
    pub fn app_exit_code(&self, app: &str) -> Result<Option<i32>, PodError> {
        let file = self.stage1_rootfs_files()?.join(layout::status_file(app));
        let Some(bytes) = self.read_pod_file(&file, cap::LINE, "app status")? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim()
            .parse::<i32>()
            .map(Some)
            .map_err(|_| PodError::BadFile {
                path: self.path().join(&file),
                problem: format!("{:?} is not an exit status", text.trim()),
            })
    }

    /// When `app`'s status file was written (its exit time).
    pub fn app_finished(&self, app: &str) -> Result<Option<UnixNanos>, PodError> {
        let file = self.stage1_rootfs_files()?.join(layout::status_file(app));
        self.file_mtime(&file, "app status")
    }

    /// Whether stage1 says its supervisor is ready (`rkt/supervisor-status`
    /// is a symlink to `ready`, read with readlinkat, never followed). Any
    /// error reads as "not ready".
    pub fn is_supervisor_ready(&self) -> bool {
        self.stage1_rootfs_files()
            .ok()
            .and_then(|root| {
                safe_read::read_link(self.dir_fd(), &root.join(layout::SUPERVISOR_STATUS)).ok()
            })
            .is_some_and(|target| target == Path::new("ready"))
    }

    /// When gc marked the pod (ctime of its directory in `exited-garbage/` or
    /// `garbage/`), which rkt reports as the apps' finish time when they
    /// have no status file.
    pub fn gc_marked(&self) -> Option<UnixNanos> {
        if !matches!(
            self.state(),
            super::PodState::ExitedGarbage
                | super::PodState::ExitedDeleting
                | super::PodState::Garbage
                | super::PodState::Deleting
        ) {
            return None;
        }
        let meta = self.lock().metadata().ok()?;
        Some(meta.ctime() * 1_000_000_000 + meta.ctime_nsec())
    }

    /// The networks stage1 recorded (`net-info.json`); empty when there is no such file, or it is unreadable
    /// (a link, a FIFO, too large, not JSON: the networks are then unknown).
    pub fn networks(&self) -> Vec<NetInfo> {
        safe_read::read(self.dir_fd(), Path::new(layout::NET_INFO), cap::NET_INFO)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<NetInfo>>(&bytes).ok())
            .unwrap_or_default()
    }
}

/// One entry of `net-info.json` (rkt's `netinfo.NetInfo`; the fields list
/// and status use).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NetInfo {
    #[serde(rename = "netName", default)]
    pub net_name: String,
    #[serde(rename = "ip", default)]
    pub ip: String,
    /// The IPv6 address on a dual-stack or IPv6 network (the kvm stage1's addition).
    #[serde(rename = "ip6", default, skip_serializing_if = "String::is_empty")]
    pub ip6: String,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl NetInfo {
    /// As `rkt list` and `rkt status` show a network: `NAME:ip4=ADDR`, then
    /// `NAME:ip6=ADDR` when it has an IPv6 address too (only that when it has no IPv4 one).
    pub fn describe(&self) -> String {
        match (self.ip.is_empty(), self.ip6.is_empty()) {
            (_, true) => format!("{}:ip4={}", self.net_name, self.ip),
            (true, false) => format!("{}:ip6={}", self.net_name, self.ip6),
            (false, false) => format!("{0}:ip4={1}, {0}:ip6={2}", self.net_name, self.ip, self.ip6),
        }
    }
}

/// The current time in nanoseconds since the epoch.
pub fn now_nanos() -> UnixNanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::pod::{PodState, PodsDir};

    const MANIFEST: &str =
        r#"{"acKind":"PodManifest","acVersion":"0.8.11","apps":[],"volumes":[]}"#;

    /// An exited pod (in run/, unlocked) with a manifest and an `rkt/status` directory.
    fn exited_pod() -> (tempfile::TempDir, Pod) {
        let data = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(data.path()).unwrap();
        let mut pod = Pod::create(&pods).unwrap();
        pod.mark_running().unwrap();
        let uuid = pod.uuid.clone();
        let dir = pod.path();
        fs::write(dir.join(layout::POD_MANIFEST), MANIFEST).unwrap();
        fs::create_dir_all(dir.join("stage1/rootfs/rkt/status")).unwrap();
        drop(pod);
        let pod = Pod::load(&pods, &uuid).unwrap();
        assert_eq!(pod.state(), PodState::Exited);
        (data, pod)
    }

    /// A canary outside the pod that a planted link points at.
    fn canary(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("canary");
        fs::write(&file, text).unwrap();
        (dir, file)
    }

    fn fifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    }

    /// Runs `check` and asserts it came back promptly (a FIFO must never block us).
    fn promptly<T>(check: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = check();
        assert!(started.elapsed() < Duration::from_secs(2), "it blocked");
        result
    }

    fn assert_names_the_pod(err: &PodError, pod: &Pod, file: &str) {
        let text = err.to_string();
        assert!(text.contains(pod.uuid.as_str()), "{text}");
        assert!(text.contains(file), "{text}");
    }

    #[test]
    fn a_planted_pid_is_refused_whatever_it_is() {
        let (_data, pod) = exited_pod();
        let pid = pod.path().join(layout::PID);
        assert_eq!(pod.pid().unwrap(), None);

        fifo(&pid);
        let err = promptly(|| pod.pid()).unwrap_err();
        assert_names_the_pod(&err, &pod, "FIFO");
        assert!(promptly(|| pod.started()).is_err());
        fs::remove_file(&pid).unwrap();

        let (_outside, secret) = canary("4242\n");
        symlink(&secret, &pid).unwrap();
        let err = pod.pid().unwrap_err();
        assert_names_the_pod(&err, &pod, "symbolic link");
        fs::remove_file(&pid).unwrap();

        // 2 GiB (sparse): refused by its size, never read into memory.
        fs::File::create(&pid).unwrap().set_len(2 << 30).unwrap();
        let err = promptly(|| pod.pid()).unwrap_err();
        assert_names_the_pod(&err, &pod, "larger than");
        fs::remove_file(&pid).unwrap();

        fs::write(&pid, "1234\n").unwrap();
        assert_eq!(pod.pid().unwrap(), Some(1234));
    }

    #[test]
    fn a_planted_status_file_is_refused_and_links_on_the_way_too() {
        let (_data, pod) = exited_pod();
        let status_dir = pod.path().join("stage1/rootfs/rkt/status");
        fifo(&status_dir.join("web"));
        let err = promptly(|| pod.app_exit_code("web")).unwrap_err();
        assert_names_the_pod(&err, &pod, "rkt/status/web");
        assert!(promptly(|| pod.app_finished("web")).is_err());

        let (outside, _secret) = canary("0");
        fs::create_dir_all(outside.path().join("status")).unwrap();
        fs::write(outside.path().join("status/db"), "0").unwrap();
        symlink(outside.path().join("status/db"), status_dir.join("db")).unwrap();
        assert!(pod.app_exit_code("db").is_err());
        // The whole rkt directory swapped for a link to the outside.
        fs::rename(
            pod.path().join("stage1/rootfs/rkt"),
            pod.path().join("stage1/rootfs/rkt-old"),
        )
        .unwrap();
        symlink(outside.path(), pod.path().join("stage1/rootfs/rkt")).unwrap();
        let err = pod.app_exit_code("db").unwrap_err();
        assert_names_the_pod(&err, &pod, "link");
    }

    #[test]
    fn supervisor_readiness_is_read_from_the_link_itself_only() {
        let (_data, pod) = exited_pod();
        let rkt = pod.path().join("stage1/rootfs/rkt");
        assert!(!pod.is_supervisor_ready());
        symlink("ready", rkt.join("supervisor-status")).unwrap();
        assert!(pod.is_supervisor_ready());
        // A `ready` reached through a link on the way does not count.
        let outside = tempfile::tempdir().unwrap();
        symlink("ready", outside.path().join("supervisor-status")).unwrap();
        fs::remove_file(rkt.join("supervisor-status")).unwrap();
        fs::remove_dir_all(&rkt).unwrap();
        symlink(outside.path(), &rkt).unwrap();
        assert!(!pod.is_supervisor_ready());
    }

    #[test]
    fn net_info_and_manifest_are_bounded_and_not_followed() {
        let (_data, pod) = exited_pod();
        let net_info = pod.path().join(layout::NET_INFO);
        fifo(&net_info);
        assert!(promptly(|| pod.networks()).is_empty());
        fs::remove_file(&net_info).unwrap();
        fs::File::create(&net_info)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        assert!(promptly(|| pod.networks()).is_empty());

        let manifest = pod.path().join(layout::POD_MANIFEST);
        let (_outside, secret) = canary(MANIFEST);
        fs::remove_file(&manifest).unwrap();
        symlink(&secret, &manifest).unwrap();
        let err = pod.manifest().unwrap_err();
        assert_names_the_pod(&err, &pod, "symbolic link");
        assert!(pod.manifest_bytes().is_err());
    }

    #[test]
    fn a_network_is_described_by_its_addresses_of_both_families() {
        let info = |ip: &str, ip6: &str| NetInfo {
            net_name: "n".into(),
            ip: ip.into(),
            ip6: ip6.into(),
            rest: serde_json::Map::new(),
        };
        assert_eq!(info("10.0.0.2", "").describe(), "n:ip4=10.0.0.2");
        assert_eq!(info("", "fd00::2").describe(), "n:ip6=fd00::2");
        assert_eq!(
            info("10.0.0.2", "fd00::2").describe(),
            "n:ip4=10.0.0.2, n:ip6=fd00::2"
        );
        assert_eq!(info("", "").describe(), "n:ip4=");
        // rkt's own files have no ip6; ours write it only when there is one.
        let parsed: NetInfo =
            serde_json::from_str(r#"{"netName":"default","ip":"172.16.28.2","mask":"x"}"#).unwrap();
        assert_eq!(parsed.describe(), "default:ip4=172.16.28.2");
        let text = serde_json::to_string(&parsed).unwrap();
        assert!(!text.contains("ip6"), "{text}");
    }
}
