//! Where pods live: `<dir>/pods/<state-dir>/<uuid>`, and finding a pod by
//! UUID or UUID prefix.
//!
//! The state directories are rkt's (see `docs/pods.md`); a pod changes state
//! by `rename(2)` from one to the next, which is atomic, so every pod is in
//! exactly one of them at any instant (a reader racing a rename may miss it
//! or see it twice, and copes).

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::uuid::PodUuid;
use super::PodError;

/// The state directories, in lifecycle order (the order lookups try).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDir {
    /// Created, about to be locked and moved to `prepare/`.
    Embryo,
    /// Locked: being prepared. Unlocked: the prepare failed.
    Prepare,
    /// Prepared; waiting for `run-prepared`. No lock meaning.
    Prepared,
    /// Locked (by stage1 through `RKT_LOCK_FD`): running. Unlocked: exited.
    Run,
    /// Exited and marked by `gc`; locked while being deleted.
    ExitedGarbage,
    /// Never ran (failed or expired prepares); locked while being deleted.
    Garbage,
}

impl StateDir {
    pub const ALL: [StateDir; 6] = [
        StateDir::Embryo,
        StateDir::Prepare,
        StateDir::Prepared,
        StateDir::Run,
        StateDir::ExitedGarbage,
        StateDir::Garbage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StateDir::Embryo => "embryo",
            StateDir::Prepare => "prepare",
            StateDir::Prepared => "prepared",
            StateDir::Run => "run",
            StateDir::ExitedGarbage => "exited-garbage",
            StateDir::Garbage => "garbage",
        }
    }
}

/// The mode of `pods/`, the state directories and every pod directory: the owner only.
pub const POD_DIR_MODE: u32 = crate::private_dir::MODE;

/// [`crate::private_dir::tighten`], with the pod error.
fn tighten(path: &Path) -> Result<(), PodError> {
    crate::private_dir::tighten(path).map_err(PodError::io(format!(
        "taking group and other permissions off {}",
        path.display()
    )))
}

/// `<dir>/pods`.
#[derive(Debug, Clone)]
pub struct PodsDir {
    root: PathBuf,
}

impl PodsDir {
    /// The pods directory under the data directory `data_dir` (`--dir`),
    /// creating the state directories if needed.
    ///
    /// Modes: `pods/` and every state directory are 0700 (pod directories
    /// too, see `Pod::create`). rkt used 0750 with group `rkt`, so that
    /// members of that group could run `rkt list`/`status` without root; we
    /// never set up such a group (the directories would carry root's own
    /// group, or whatever the data directory gives them), and a pod directory
    /// holds what its guest wrote, its manifest (environment, volumes) and
    /// sockets, none of which another host user should read or reach. So
    /// only the owner (root) gets in. Existing directories made with looser
    /// modes by older versions are tightened here, on every use.
    pub fn open(data_dir: &Path) -> Result<PodsDir, PodError> {
        let pods = PodsDir {
            root: data_dir.join("pods"),
        };
        for state in StateDir::ALL {
            let path = pods.state_dir(state);
            DirBuilder::new()
                .recursive(true)
                .mode(POD_DIR_MODE)
                .create(&path)
                .map_err(|source| PodError::Io {
                    context: format!(
                        "creating {} (is --dir writable? rkt usually needs root)",
                        path.display()
                    ),
                    source,
                })?;
            tighten(&path)?;
        }
        tighten(&pods.root)?;
        Ok(pods)
    }

    pub fn state_dir(&self, state: StateDir) -> PathBuf {
        self.root.join(state.name())
    }

    pub fn pod_path(&self, state: StateDir, uuid: &PodUuid) -> PathBuf {
        self.state_dir(state).join(uuid.as_str())
    }

    /// Every pod UUID found in `states`, sorted, each once. Entries that are
    /// not directories named by a UUID are skipped with a warning.
    pub fn list(&self, states: &[StateDir]) -> Result<Vec<PodUuid>, PodError> {
        let mut found = BTreeSet::new();
        for &state in states {
            let path = self.state_dir(state);
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(PodError::Io {
                        context: format!("listing {}", path.display()),
                        source,
                    })
                }
            };
            for entry in entries {
                let entry = entry.map_err(|source| PodError::Io {
                    context: format!("listing {}", path.display()),
                    source,
                })?;
                let name = entry.file_name();
                let uuid = name.to_str().and_then(PodUuid::parse);
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                match uuid {
                    Some(uuid) if is_dir => {
                        found.insert(uuid);
                    }
                    _ => eprintln!(
                        "rkt: ignoring {}: not a pod directory",
                        entry.path().display()
                    ),
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Whether pod `uuid` still has a directory, in any state (what `image
    /// rm`/`gc` ask before dropping the store's record of what it uses).
    ///
    /// The state directories are tried in lifecycle order, and a pod only
    /// ever moves forward through them, so a pod being renamed meanwhile is
    /// still found (in the later one). Anything but a clear "not there"
    /// (an unreadable directory, a name that is not a UUID) counts as
    /// existing: the answer decides what may be deleted, so doubt keeps.
    pub fn exists(&self, uuid: &str) -> bool {
        let Some(uuid) = PodUuid::parse(uuid) else {
            return true;
        };
        StateDir::ALL.iter().any(
            |&state| match fs::symlink_metadata(self.pod_path(state, &uuid)) {
                Ok(_) => true,
                Err(err) => err.kind() != io::ErrorKind::NotFound,
            },
        )
    }

    /// The pod whose UUID is `text` or starts with it (rkt lets users type
    /// just enough of a UUID to be unique).
    pub fn resolve(&self, text: &str) -> Result<PodUuid, PodError> {
        let wanted = text.trim().to_ascii_lowercase();
        if wanted.is_empty() {
            return Err(PodError::NoSuchPod {
                uuid: text.to_string(),
            });
        }
        let mut matches: Vec<PodUuid> = self
            .list(&StateDir::ALL)?
            .into_iter()
            .filter(|uuid| uuid.as_str().starts_with(&wanted))
            .collect();
        match matches.len() {
            0 => Err(PodError::NoSuchPod {
                uuid: text.to_string(),
            }),
            1 => Ok(matches.remove(0)),
            count => Err(PodError::AmbiguousUuid {
                prefix: text.to_string(),
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn make(pods: &PodsDir, state: StateDir, uuid: &str) {
        fs::create_dir(pods.state_dir(state).join(uuid)).unwrap();
    }

    #[test]
    fn lists_and_resolves_prefixes_across_states() {
        let data = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(data.path()).unwrap();
        for state in StateDir::ALL {
            assert!(pods.state_dir(state).is_dir());
        }
        let a = "11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
        let b = "11112222-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
        let c = "33333333-cccc-4ccc-8ccc-cccccccccccc";
        make(&pods, StateDir::Prepared, a);
        make(&pods, StateDir::Run, b);
        make(&pods, StateDir::Garbage, c);
        fs::write(pods.state_dir(StateDir::Run).join("stray"), b"").unwrap();

        let all = pods.list(&StateDir::ALL).unwrap();
        assert_eq!(
            all.iter().map(PodUuid::as_str).collect::<Vec<_>>(),
            [a, b, c]
        );
        assert_eq!(pods.list(&[StateDir::Run]).unwrap().len(), 1);

        assert_eq!(pods.resolve("11111").unwrap().as_str(), a);
        assert_eq!(pods.resolve(&c.to_uppercase()).unwrap().as_str(), c);
        assert!(matches!(
            pods.resolve("1111"),
            Err(PodError::AmbiguousUuid { count: 2, .. })
        ));
        assert!(matches!(pods.resolve("4"), Err(PodError::NoSuchPod { .. })));
        assert!(matches!(pods.resolve(""), Err(PodError::NoSuchPod { .. })));
    }

    #[test]
    fn exists_finds_a_pod_in_any_state_and_only_there() {
        let data = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(data.path()).unwrap();
        let uuid = "44444444-dddd-4ddd-8ddd-dddddddddddd";
        assert!(!pods.exists(uuid));
        for state in StateDir::ALL {
            make(&pods, state, uuid);
            assert!(pods.exists(uuid), "{}", state.name());
            fs::remove_dir(pods.state_dir(state).join(uuid)).unwrap();
        }
        assert!(!pods.exists(uuid));
        assert!(pods.exists("../not-a-uuid"), "doubt keeps");
    }

    #[test]
    fn pod_directories_are_the_owners_only_and_old_modes_are_tightened() {
        let data = tempfile::tempdir().unwrap();
        let pods_root = data.path().join("pods");
        fs::create_dir_all(pods_root.join("run")).unwrap();
        fs::set_permissions(&pods_root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(pods_root.join("run"), fs::Permissions::from_mode(0o750)).unwrap();
        let pods = PodsDir::open(data.path()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&pods_root), 0o700);
        for state in StateDir::ALL {
            assert_eq!(mode(&pods.state_dir(state)), 0o700, "{}", state.name());
        }
    }
}
