//! A pod's state, read from where its directory is and whether it is locked,
//! and the renames that move it from one state to the next (rkt's
//! `pkg/pod` semantics; see `docs/pods.md` for the table).

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::dir::{PodsDir, StateDir};
use super::lock::{Attempt, DirLock};
use super::uuid::PodUuid;
use super::PodError;

/// What `rkt list` and `rkt status` print, spelled as rkt spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    Embryo,
    Preparing,
    AbortedPrepare,
    Prepared,
    Running,
    Exited,
    ExitedGarbage,
    /// In `exited-garbage/` and locked: being deleted.
    ExitedDeleting,
    Garbage,
    /// In `garbage/` and locked: being deleted.
    Deleting,
}

impl PodState {
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Embryo => "embryo",
            PodState::Preparing => "preparing",
            PodState::AbortedPrepare => "aborted prepare",
            PodState::Prepared => "prepared",
            PodState::Running => "running",
            PodState::Exited => "exited",
            PodState::ExitedGarbage => "exited garbage",
            PodState::ExitedDeleting => "exited deleting",
            PodState::Garbage => "garbage",
            PodState::Deleting => "deleting",
        }
    }

    /// The pod ran (or tried to) and is no longer running.
    pub fn is_after_run(self) -> bool {
        matches!(
            self,
            PodState::Exited | PodState::ExitedGarbage | PodState::ExitedDeleting
        )
    }

    /// Nothing more will happen to the pod by itself (what `status --wait`
    /// waits for).
    pub fn is_finished(self) -> bool {
        self.is_after_run()
            || matches!(
                self,
                PodState::AbortedPrepare | PodState::Garbage | PodState::Deleting
            )
    }

    /// A state in which the pod has its creation time (`pod-created`).
    pub fn has_been_prepared(self) -> bool {
        self == PodState::Prepared || self == PodState::Running || self.is_after_run()
    }
}

/// One pod directory and its open (maybe locked) descriptor.
#[derive(Debug)]
pub struct Pod {
    pub uuid: PodUuid,
    pods: PodsDir,
    dir: StateDir,
    state: PodState,
    lock: DirLock,
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> PodError {
    move |source| PodError::Io { context, source }
}

impl Pod {
    /// Allocates a UUID and a new pod directory, and leaves it exclusively
    /// locked in `prepare/` (state `preparing`). If this process dies from
    /// here on, the lock goes with it and the pod reads as `aborted prepare`,
    /// which `rkt gc` removes.
    pub fn create(pods: &PodsDir) -> Result<Pod, PodError> {
        let uuid = PodUuid::new_random().map_err(io_err("drawing a random pod UUID".into()))?;
        let embryo = pods.pod_path(StateDir::Embryo, &uuid);
        // The owner only (super::dir::POD_DIR_MODE says why).
        DirBuilder::new()
            .mode(super::dir::POD_DIR_MODE)
            .create(&embryo)
            .map_err(io_err(format!("creating {}", embryo.display())))?;
        let lock = match DirLock::open(&embryo) {
            Ok(lock) => lock,
            Err(err) => {
                let _ = fs::remove_dir(&embryo);
                return Err(io_err(format!("opening {}", embryo.display()))(err));
            }
        };
        let mut pod = Pod {
            uuid,
            pods: pods.clone(),
            dir: StateDir::Embryo,
            state: PodState::Embryo,
            lock,
        };
        // Nobody else knows this UUID yet, so the lock is free.
        if pod
            .lock
            .try_exclusive()
            .map_err(io_err("locking the new pod".into()))?
            != Attempt::Acquired
        {
            return Err(PodError::Busy {
                uuid: pod.uuid.to_string(),
                state: "embryo",
            });
        }
        pod.move_to(StateDir::Prepare)?;
        pod.state = PodState::Preparing;
        Ok(pod)
    }

    /// Finds pod `uuid` and reads its state. The descriptor is left open and
    /// unlocked.
    pub fn load(pods: &PodsDir, uuid: &PodUuid) -> Result<Pod, PodError> {
        for dir in StateDir::ALL {
            let path = pods.pod_path(dir, uuid);
            let lock = match DirLock::open(&path) {
                Ok(lock) => lock,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(io_err(format!("opening pod {}", path.display()))(err)),
            };
            let mut pod = Pod {
                uuid: uuid.clone(),
                pods: pods.clone(),
                dir,
                state: PodState::Embryo,
                lock,
            };
            pod.state = pod.read_state()?;
            return Ok(pod);
        }
        Err(PodError::NoSuchPod {
            uuid: uuid.to_string(),
        })
    }

    /// Loads every pod in `states`, in UUID order, skipping (with a warning)
    /// those that vanish or cannot be read meanwhile.
    pub fn load_all(pods: &PodsDir, states: &[StateDir]) -> Result<Vec<Pod>, PodError> {
        let mut loaded = Vec::new();
        for uuid in pods.list(states)? {
            match Pod::load(pods, &uuid) {
                // Moved on to a state the caller did not ask for: skip it.
                Ok(pod) if !states.contains(&pod.dir) => {}
                Ok(pod) => loaded.push(pod),
                Err(PodError::NoSuchPod { .. }) => {}
                Err(err) => eprintln!("rkt: skipping pod {uuid}: {err}"),
            }
        }
        Ok(loaded)
    }

    /// The state as of the last load or transition.
    pub fn state(&self) -> PodState {
        self.state
    }

    /// The pod directory (in its current state directory).
    pub fn path(&self) -> PathBuf {
        self.pods.pod_path(self.dir, &self.uuid)
    }

    pub fn lock(&self) -> &DirLock {
        &self.lock
    }

    /// Re-reads the state from the file system (the pod may have moved or
    /// been unlocked by others since it was loaded).
    pub fn refresh(&mut self) -> Result<(), PodError> {
        let fresh = Pod::load(&self.pods, &self.uuid)?;
        *self = fresh;
        Ok(())
    }

    fn read_state(&self) -> Result<PodState, PodError> {
        let locked = || -> Result<bool, PodError> {
            self.lock
                .is_held_elsewhere()
                .map_err(io_err(format!("probing the lock of pod {}", self.uuid)))
        };
        Ok(match self.dir {
            StateDir::Embryo => PodState::Embryo,
            StateDir::Prepared => PodState::Prepared,
            StateDir::Prepare if locked()? => PodState::Preparing,
            StateDir::Prepare => PodState::AbortedPrepare,
            StateDir::Run if locked()? => PodState::Running,
            StateDir::Run => PodState::Exited,
            StateDir::ExitedGarbage if locked()? => PodState::ExitedDeleting,
            StateDir::ExitedGarbage => PodState::ExitedGarbage,
            StateDir::Garbage if locked()? => PodState::Deleting,
            StateDir::Garbage => PodState::Garbage,
        })
    }

    /// `preparing` -> `prepared`: renames and drops the lock (a prepared pod
    /// needs none; whoever runs it locks it again).
    pub fn mark_prepared(&mut self) -> Result<(), PodError> {
        self.expect(&[PodState::Preparing], "mark as prepared")?;
        self.move_to(StateDir::Prepared)?;
        self.lock
            .unlock()
            .map_err(io_err(format!("unlocking pod {}", self.uuid)))?;
        self.state = PodState::Prepared;
        Ok(())
    }

    /// `prepared` (or our own `preparing`) -> `running`: locks exclusively and
    /// renames into `run/`. The lock stays held by this process; hand it to
    /// stage1 with [`Pod::lock`] + `keep_across_exec` (`RKT_LOCK_FD`).
    pub fn mark_running(&mut self) -> Result<(), PodError> {
        self.expect(&[PodState::Prepared, PodState::Preparing], "run")?;
        if self.state == PodState::Prepared {
            self.lock_exclusive()?;
        }
        self.move_to(StateDir::Run)?;
        self.state = PodState::Running;
        Ok(())
    }

    /// `exited` -> `exited garbage` (gc's mark pass; the rename's ctime
    /// starts the grace period).
    pub fn mark_exited_garbage(&mut self) -> Result<(), PodError> {
        self.expect(&[PodState::Exited], "mark as exited garbage")?;
        self.move_to(StateDir::ExitedGarbage)?;
        self.state = PodState::ExitedGarbage;
        Ok(())
    }

    /// `aborted prepare`, `prepared` or a stale `embryo` -> `garbage`.
    pub fn mark_garbage(&mut self) -> Result<(), PodError> {
        self.expect(
            &[
                PodState::AbortedPrepare,
                PodState::Prepared,
                PodState::Embryo,
            ],
            "mark as garbage",
        )?;
        self.move_to(StateDir::Garbage)?;
        self.state = PodState::Garbage;
        Ok(())
    }

    /// Takes the exclusive lock without waiting; `Busy` if someone holds it.
    pub fn lock_exclusive(&self) -> Result<(), PodError> {
        match self
            .lock
            .try_exclusive()
            .map_err(io_err(format!("locking pod {}", self.uuid)))?
        {
            Attempt::Acquired => Ok(()),
            Attempt::Busy => Err(PodError::Busy {
                uuid: self.uuid.to_string(),
                state: self.state.as_str(),
            }),
        }
    }

    fn expect(&self, allowed: &[PodState], action: &'static str) -> Result<(), PodError> {
        if allowed.contains(&self.state) {
            Ok(())
        } else {
            Err(PodError::WrongState {
                uuid: self.uuid.to_string(),
                state: self.state.as_str(),
                action,
            })
        }
    }

    fn move_to(&mut self, to: StateDir) -> Result<(), PodError> {
        let from_path = self.path();
        let to_path = self.pods.pod_path(to, &self.uuid);
        fs::rename(&from_path, &to_path).map_err(io_err(format!(
            "moving pod {} from {} to {}",
            self.uuid,
            self.dir.name(),
            to.name()
        )))?;
        self.dir = to;
        // The rename is the state change: make it durable before anyone acts
        // on it.
        sync_dir(&self.pods.state_dir(to)).map_err(io_err(format!("syncing {}", to_path.display())))
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads a second view of the pod, as another rkt process would see it.
    fn observed(pods: &PodsDir, pod: &Pod) -> PodState {
        Pod::load(pods, &pod.uuid).unwrap().state()
    }

    #[test]
    fn lifecycle_through_prepare_run_and_exit() {
        let data = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(data.path()).unwrap();
        let mut pod = Pod::create(&pods).unwrap();
        assert_eq!(pod.state(), PodState::Preparing);
        assert!(pod.path().starts_with(pods.state_dir(StateDir::Prepare)));
        assert_eq!(observed(&pods, &pod), PodState::Preparing);

        pod.mark_prepared().unwrap();
        assert_eq!(observed(&pods, &pod), PodState::Prepared);

        let mut runner = Pod::load(&pods, &pod.uuid).unwrap();
        runner.mark_running().unwrap();
        assert!(runner.path().starts_with(pods.state_dir(StateDir::Run)));
        assert_eq!(observed(&pods, &pod), PodState::Running);
        // The stage1 exits: its descriptor, and with it the lock, are gone.
        drop(runner);
        let mut exited = Pod::load(&pods, &pod.uuid).unwrap();
        assert_eq!(exited.state(), PodState::Exited);

        exited.mark_exited_garbage().unwrap();
        assert_eq!(observed(&pods, &pod), PodState::ExitedGarbage);
        exited.lock_exclusive().unwrap();
        assert_eq!(observed(&pods, &pod), PodState::ExitedDeleting);
    }

    #[test]
    fn a_dead_preparer_leaves_an_aborted_prepare_for_gc() {
        let data = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(data.path()).unwrap();
        let uuid = Pod::create(&pods).unwrap().uuid.clone(); // dropped: "process died"
        let mut pod = Pod::load(&pods, &uuid).unwrap();
        assert_eq!(pod.state(), PodState::AbortedPrepare);
        assert!(pod.state().is_finished());
        pod.mark_garbage().unwrap();
        assert_eq!(observed(&pods, &pod), PodState::Garbage);
    }

    #[test]
    fn transitions_refuse_the_wrong_state() {
        let data = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(data.path()).unwrap();
        let mut pod = Pod::create(&pods).unwrap();
        assert!(matches!(
            pod.mark_exited_garbage(),
            Err(PodError::WrongState { .. })
        ));
        pod.mark_prepared().unwrap();
        let mut first = Pod::load(&pods, &pod.uuid).unwrap();
        let mut second = Pod::load(&pods, &pod.uuid).unwrap();
        first.mark_running().unwrap();
        // Two run-prepared racing: the loser finds the lock taken.
        assert!(matches!(second.mark_running(), Err(PodError::Busy { .. })));
    }
}
