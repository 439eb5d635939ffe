//! Read-only facts about a pod, from the files in its directory: the
//! manifest, creation and start times, stage1's PID, each app's exit status.
//! Everything here works on a pod in any state, whoever created it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use appc::{ImageManifest, PodManifest};

use super::layout;
use super::state::Pod;
use super::PodError;

/// A time as nanoseconds since the epoch (what rkt's JSON carries).
pub type UnixNanos = i64;

fn mtime(path: &Path) -> io::Result<UnixNanos> {
    let modified = fs::metadata(path)?.modified()?;
    Ok(match modified.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i64,
        Err(before) => -(before.duration().as_nanos() as i64),
    })
}

fn optional<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

impl Pod {
    fn read_error(&self, what: &str) -> impl FnOnce(io::Error) -> PodError + '_ {
        let context = format!("reading the {what} of pod {}", self.uuid);
        move |source| PodError::Io { context, source }
    }

    /// The pod manifest exactly as stored (what `cat-manifest` prints).
    pub fn manifest_bytes(&self) -> Result<Vec<u8>, PodError> {
        fs::read(self.path().join(layout::POD_MANIFEST)).map_err(self.read_error("manifest"))
    }

    /// The parsed pod manifest; `None` before prepare has written it.
    pub fn manifest(&self) -> Result<Option<PodManifest>, PodError> {
        let bytes = match optional(fs::read(self.path().join(layout::POD_MANIFEST))) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(err) => return Err(self.read_error("manifest")(err)),
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
        let bytes = fs::read(layout::app_image_manifest(&self.path(), app))
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
        let path = self.path();
        for name in [layout::POD_CREATED, layout::POD_MANIFEST] {
            if let Some(time) =
                optional(mtime(&path.join(name))).map_err(self.read_error("creation time"))?
            {
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
        let path = self.path();
        for name in [layout::PID, layout::PPID] {
            if let Some(time) =
                optional(mtime(&path.join(name))).map_err(self.read_error("start time"))?
            {
                return Ok(Some(time));
            }
        }
        Ok(None)
    }

    /// The PID stage1 wrote (`pid`, else `ppid`); `None` if neither exists
    /// yet (there is a short window after the pod enters `run/`).
    pub fn pid(&self) -> Result<Option<i32>, PodError> {
        let path = self.path();
        for name in [layout::PID, layout::PPID] {
            let Some(text) = optional(fs::read_to_string(path.join(name)))
                .map_err(self.read_error("pid file"))?
            else {
                continue;
            };
            return match text.trim().parse::<i32>() {
                Ok(pid) if pid > 0 => Ok(Some(pid)),
                _ => Err(PodError::BadFile {
                    path: path.join(name),
                    problem: format!("{:?} is not a process ID", text.trim()),
                }),
            };
        }
        Ok(None)
    }

    /// Where the stage1 rootfs's files are when nothing is mounted: the
    /// overlay's upper directory for overlay pods (rkt reads status there),
    /// else `stage1/rootfs`.
    pub fn stage1_rootfs_files(&self) -> Result<PathBuf, PodError> {
        let path = self.path();
        if !path.join(layout::OVERLAY_PREPARED).exists() {
            return Ok(layout::stage1_rootfs(&path));
        }
        let tree = fs::read_to_string(path.join(layout::STAGE1_TREE_STORE_ID))
            .map_err(self.read_error("stage1 tree ID"))?;
        Ok(layout::overlay_upper(&path, tree.trim(), ""))
    }

    /// The exit status stage1 recorded for `app`; `None` if it has none
    /// (still running, or never started).
    pub fn app_exit_code(&self, app: &str) -> Result<Option<i32>, PodError> {
        let file = self.stage1_rootfs_files()?.join(layout::status_file(app));
        let Some(text) =
            optional(fs::read_to_string(&file)).map_err(self.read_error("app status"))?
        else {
            return Ok(None);
        };
        text.trim()
            .parse::<i32>()
            .map(Some)
            .map_err(|_| PodError::BadFile {
                path: file,
                problem: format!("{:?} is not an exit status", text.trim()),
            })
    }

    /// When `app`'s status file was written (its exit time).
    pub fn app_finished(&self, app: &str) -> Result<Option<UnixNanos>, PodError> {
        let file = self.stage1_rootfs_files()?.join(layout::status_file(app));
        optional(mtime(&file)).map_err(self.read_error("app status"))
    }

    /// Whether stage1 says its supervisor is ready (`rkt/supervisor-status`
    /// is a symlink to `ready`). Any error reads as "not ready".
    pub fn is_supervisor_ready(&self) -> bool {
        self.stage1_rootfs_files()
            .ok()
            .and_then(|root| fs::read_link(root.join(layout::SUPERVISOR_STATUS)).ok())
            .is_some_and(|target| target == Path::new("ready"))
    }

    /// When gc marked the pod (ctime of its directory in `exited-garbage/` or
    /// `garbage/`), which rkt reports as the apps' finish time when they
    /// have no status file.
    pub fn gc_marked(&self) -> Option<UnixNanos> {
        use std::os::unix::fs::MetadataExt;
        if !matches!(
            self.state(),
            super::PodState::ExitedGarbage
                | super::PodState::ExitedDeleting
                | super::PodState::Garbage
                | super::PodState::Deleting
        ) {
            return None;
        }
        let meta = fs::symlink_metadata(self.path()).ok()?;
        Some(meta.ctime() * 1_000_000_000 + meta.ctime_nsec())
    }

    /// The networks stage1 recorded (`net-info.json`), as `NAME:ip4=ADDR`
    /// strings; empty when there is no such file.
    pub fn networks(&self) -> Vec<NetInfo> {
        fs::read(self.path().join(layout::NET_INFO))
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
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// The current time in nanoseconds since the epoch.
pub fn now_nanos() -> UnixNanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
