//! Running every app of the pod at once, each through its phases: the image's `pre-start`
//! event handler (if any), the app itself, the `post-stop` handler (if any); and choosing the
//! pod's exit status.
//!
//! This is bookkeeping only: processes are created by a `Launcher`, and PID 1's wait loop feeds
//! each reaped pid to `on_exit`. Keeping it free of system calls lets the tests run whole pods
//! of fake processes.
//!
//! The rules, after rkt's (which ran the handlers as systemd ExecStartPre/ExecStopPost):
//! - a pre-start handler that fails (non-zero) keeps the app from starting, and its status
//!   becomes the app's;
//! - post-stop runs once the app (or its failed pre-start) is over, whatever the status, and
//!   does not change the app's status;
//! - an app whose set-up failed runs nothing and reports its set-up status (125);
//! - the pod's status is the first non-zero app status in manifest order, else 0.

use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    PreStart,
    Main,
    PostStop,
}

impl Phase {
    pub fn describe(self) -> &'static str {
        match self {
            Phase::PreStart => "pre-start handler",
            Phase::Main => "app",
            Phase::PostStop => "post-stop handler",
        }
    }
}

/// Creates the processes and records the outcome.
pub trait Launcher {
    /// Starts `phase` of app `app`. `Err(status)`: not even a process could be created.
    fn start(&mut self, app: usize, phase: Phase) -> Result<Pid, u8>;
    /// A phase of app `app` ended with `status`.
    fn phase_ended(&mut self, app: usize, phase: Phase, status: u8);
    /// App `app` is over (all its phases) with `status`: write its status file.
    fn finished(&mut self, app: usize, status: u8);
}

/// What the supervisor needs to know about an app before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppPlan {
    /// `Err(status)`: set-up failed, nothing runs.
    pub ready: Result<(), u8>,
    pub pre_start: bool,
    pub post_stop: bool,
}

#[derive(Debug)]
struct AppState {
    plan: AppPlan,
    running: Option<(Pid, Phase)>,
    status: Option<u8>,
    done: bool,
}

#[derive(Debug)]
pub struct Supervisor {
    apps: Vec<AppState>,
}

impl Supervisor {
    pub fn new(plans: Vec<AppPlan>) -> Supervisor {
        Supervisor {
            apps: plans
                .into_iter()
                .map(|plan| AppState {
                    plan,
                    running: None,
                    status: None,
                    done: false,
                })
                .collect(),
        }
    }

    /// Starts the first phase of every app, in manifest order.
    pub fn start(&mut self, launcher: &mut impl Launcher) {
        for index in 0..self.apps.len() {
            let plan = self.apps[index].plan;
            match plan.ready {
                Err(status) => {
                    self.apps[index].status = Some(status);
                    self.finish(index, launcher);
                }
                Ok(()) => {
                    let first = if plan.pre_start {
                        Phase::PreStart
                    } else {
                        Phase::Main
                    };
                    self.advance(index, Some(first), launcher);
                }
            }
        }
    }

    /// A process ended with `status`. Returns false when it was none of ours (an orphan).
    pub fn on_exit(&mut self, pid: Pid, status: u8, launcher: &mut impl Launcher) -> bool {
        let Some(index) = self
            .apps
            .iter()
            .position(|app| app.running.is_some_and(|(running, _)| running == pid))
        else {
            return false;
        };
        let phase = match self.apps[index].running.take() {
            Some((_, phase)) => phase,
            None => return false,
        };
        let next = self.after(index, phase, status, launcher);
        self.advance(index, next, launcher);
        true
    }

    /// The processes running now (one per app at most), for `stop`.
    pub fn running_pids(&self) -> Vec<Pid> {
        self.apps
            .iter()
            .filter_map(|app| app.running.map(|(pid, _)| pid))
            .collect()
    }

    pub fn all_done(&self) -> bool {
        self.apps.iter().all(|app| app.done)
    }

    /// Ends, with `status`, every app still running (the wait loop lost track of its
    /// processes): their status files must still be written.
    pub fn abandon(&mut self, status: u8, launcher: &mut impl Launcher) {
        for index in 0..self.apps.len() {
            if !self.apps[index].done {
                self.apps[index].running = None;
                self.apps[index].status.get_or_insert(status);
                self.finish(index, launcher);
            }
        }
    }

    /// The first non-zero app status in manifest order, else 0.
    pub fn pod_status(&self) -> u8 {
        first_failure(self.apps.iter().map(|app| app.status.unwrap_or(0)))
    }

    /// Starts `next` (and, when it cannot start, whatever comes after it) until a process is
    /// running or the app is over.
    fn advance(&mut self, index: usize, mut next: Option<Phase>, launcher: &mut impl Launcher) {
        while let Some(phase) = next {
            match launcher.start(index, phase) {
                Ok(pid) => {
                    self.apps[index].running = Some((pid, phase));
                    return;
                }
                Err(status) => next = self.after(index, phase, status, launcher),
            }
        }
        self.finish(index, launcher);
    }

    /// Records the end of `phase` and says which phase comes next.
    fn after(
        &mut self,
        index: usize,
        phase: Phase,
        status: u8,
        launcher: &mut impl Launcher,
    ) -> Option<Phase> {
        launcher.phase_ended(index, phase, status);
        let app = &mut self.apps[index];
        let post_stop = app.plan.post_stop.then_some(Phase::PostStop);
        match phase {
            Phase::PreStart if status == 0 => Some(Phase::Main),
            Phase::PreStart | Phase::Main => {
                app.status = Some(status);
                post_stop
            }
            Phase::PostStop => None,
        }
    }

    fn finish(&mut self, index: usize, launcher: &mut impl Launcher) {
        let app = &mut self.apps[index];
        if app.done {
            return;
        }
        app.done = true;
        launcher.finished(index, app.status.unwrap_or(0));
    }
}

/// The first non-zero status, else 0.
pub fn first_failure(statuses: impl IntoIterator<Item = u8>) -> u8 {
    statuses
        .into_iter()
        .find(|&status| status != 0)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out pids 100, 101, ... and records what happened; `refuse` makes a phase fail to
    /// start with that status.
    #[derive(Default)]
    struct Fake {
        next_pid: i32,
        started: Vec<(usize, Phase, Pid)>,
        ended: Vec<(usize, Phase, u8)>,
        finished: Vec<(usize, u8)>,
        refuse: Vec<(usize, Phase, u8)>,
    }

    impl Launcher for Fake {
        fn start(&mut self, app: usize, phase: Phase) -> Result<Pid, u8> {
            if let Some(&(_, _, status)) = self
                .refuse
                .iter()
                .find(|(a, p, _)| *a == app && *p == phase)
            {
                return Err(status);
            }
            let pid = Pid::from_raw(100 + self.next_pid);
            self.next_pid += 1;
            self.started.push((app, phase, pid));
            Ok(pid)
        }
        fn phase_ended(&mut self, app: usize, phase: Phase, status: u8) {
            self.ended.push((app, phase, status));
        }
        fn finished(&mut self, app: usize, status: u8) {
            self.finished.push((app, status));
        }
    }

    impl Fake {
        fn pid_of(&self, app: usize, phase: Phase) -> Pid {
            self.started
                .iter()
                .rev()
                .find(|(a, p, _)| *a == app && *p == phase)
                .map(|(_, _, pid)| *pid)
                .unwrap()
        }
    }

    fn plan(pre_start: bool, post_stop: bool) -> AppPlan {
        AppPlan {
            ready: Ok(()),
            pre_start,
            post_stop,
        }
    }

    #[test]
    fn apps_run_concurrently_and_the_first_failure_in_manifest_order_wins() {
        let mut fake = Fake::default();
        let mut pod = Supervisor::new(vec![plan(false, false); 3]);
        pod.start(&mut fake);
        assert_eq!(fake.started.len(), 3, "all apps start at once");
        // App 2 fails first in time, app 1 later: app 1 comes first in the manifest.
        assert!(pod.on_exit(fake.pid_of(2, Phase::Main), 3, &mut fake));
        assert!(!pod.all_done());
        assert!(!pod.on_exit(Pid::from_raw(4242), 0, &mut fake), "an orphan");
        assert!(pod.on_exit(fake.pid_of(0, Phase::Main), 0, &mut fake));
        assert!(pod.on_exit(fake.pid_of(1, Phase::Main), 42, &mut fake));
        assert!(pod.all_done());
        assert_eq!(fake.finished, vec![(2, 3), (0, 0), (1, 42)]);
        assert_eq!(pod.pod_status(), 42);
    }

    #[test]
    fn all_zero_is_zero() {
        assert_eq!(first_failure([0, 0, 0]), 0);
        assert_eq!(first_failure([]), 0);
        assert_eq!(first_failure([0, 137, 1]), 137);
    }

    #[test]
    fn handlers_wrap_the_app() {
        let mut fake = Fake::default();
        let mut pod = Supervisor::new(vec![plan(true, true)]);
        pod.start(&mut fake);
        assert_eq!(fake.started[0].1, Phase::PreStart);
        pod.on_exit(fake.pid_of(0, Phase::PreStart), 0, &mut fake);
        pod.on_exit(fake.pid_of(0, Phase::Main), 7, &mut fake);
        assert!(fake.finished.is_empty(), "post-stop still running");
        // post-stop's own failure does not change the app's status.
        pod.on_exit(fake.pid_of(0, Phase::PostStop), 1, &mut fake);
        let phases: Vec<_> = fake.started.iter().map(|s| s.1).collect();
        assert_eq!(phases, [Phase::PreStart, Phase::Main, Phase::PostStop]);
        assert_eq!(fake.finished, vec![(0, 7)]);
        assert_eq!(pod.pod_status(), 7);
    }

    #[test]
    fn failed_pre_start_skips_the_app_but_not_post_stop() {
        let mut fake = Fake::default();
        let mut pod = Supervisor::new(vec![plan(true, true)]);
        pod.start(&mut fake);
        pod.on_exit(fake.pid_of(0, Phase::PreStart), 5, &mut fake);
        pod.on_exit(fake.pid_of(0, Phase::PostStop), 0, &mut fake);
        let phases: Vec<_> = fake.started.iter().map(|s| s.1).collect();
        assert_eq!(phases, [Phase::PreStart, Phase::PostStop]);
        assert_eq!(fake.finished, vec![(0, 5)]);
    }

    #[test]
    fn setup_failures_and_unstartable_phases_still_finish() {
        let mut fake = Fake {
            refuse: vec![(1, Phase::Main, 125)],
            ..Fake::default()
        };
        let mut pod = Supervisor::new(vec![
            AppPlan {
                ready: Err(125),
                pre_start: true,
                post_stop: true,
            },
            plan(false, false),
            plan(false, false),
        ]);
        pod.start(&mut fake);
        // App 0 ran nothing, app 1 could not start: both finished at once.
        assert_eq!(fake.finished, vec![(0, 125), (1, 125)]);
        assert_eq!(fake.started.len(), 1);
        pod.on_exit(fake.pid_of(2, Phase::Main), 0, &mut fake);
        assert!(pod.all_done());
        assert_eq!(pod.pod_status(), 125);
    }

    #[test]
    fn abandon_finishes_whatever_is_left() {
        let mut fake = Fake::default();
        let mut pod = Supervisor::new(vec![plan(false, false), plan(false, false)]);
        pod.start(&mut fake);
        pod.on_exit(fake.pid_of(0, Phase::Main), 0, &mut fake);
        pod.abandon(125, &mut fake);
        assert!(pod.all_done());
        assert_eq!(fake.finished, vec![(0, 0), (1, 125)]);
        // Nothing is finished twice.
        pod.abandon(125, &mut fake);
        assert_eq!(fake.finished.len(), 2);
    }
}
