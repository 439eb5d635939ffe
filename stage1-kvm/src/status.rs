//! The apps' exit statuses (contract items 5 and 7; `pod_control::status`): guest-init
//! connects to host port `STATUS_PORT` before any app starts and reports each app's status
//! there; we write rkt's status file `stage1/rootfs/rkt/status/<app>` ourselves (the guest
//! cannot reach it) as each report arrives, so `rkt status` sees apps end while the pod runs.
//! The pod exits with the first app (in manifest order) whose status is not 0, else 0. An app
//! without a report means the guest did not finish its job: a stage1 error (254).
//!
//! The same stream carries guest-init's `Ready` frame, sent once its control server listens:
//! the pod can be entered and stopped, and the caller's `on_ready` marks it so (the ready link
//! of `rkt status --wait-ready`). Only the first counts.
//!
//! The guest is hostile: one connection is accepted and the listener is then closed (an app
//! cannot connect later and forge a status); frames are bounded (`pod_control::frame`); a
//! report for an app the pod does not have, or a second one for the same app, is ignored.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pod_control::{read_frame, AppStatus, FrameKind};

use crate::accept::accept_or_wake;
use crate::error::Stage1Error;
use crate::pod::write_whole;
use crate::vsock::port_path;

/// The statuses received so far, by app name.
type Statuses = Arc<Mutex<BTreeMap<String, u8>>>;

/// What to do when guest-init says the pod is ready (run at most once, on the reader thread).
pub type OnReady = Box<dyn FnOnce() + Send>;

/// Receives guest-init's reports for the pod's lifetime.
pub struct StatusReceiver {
    thread: JoinHandle<()>,
    /// Set when every app's status is in and guest-init then ended the stream.
    pod_over: Arc<AtomicBool>,
    /// Set when every app's status is in.
    all_reported: Arc<AtomicBool>,
    statuses: Statuses,
    /// Dropping it wakes the thread if it still waits for the connection.
    wake: Option<OwnedFd>,
    stream: Arc<Mutex<Option<UnixStream>>>,
}

impl StatusReceiver {
    /// Listens on `<socket>_<STATUS_PORT>` (before the VM boots) for the reports of `apps`,
    /// writing each into `status_dir`, and runs `on_ready` at guest-init's first `Ready`.
    pub fn start(
        socket: &Path,
        apps: &[String],
        status_dir: &Path,
        on_ready: OnReady,
    ) -> Result<StatusReceiver, Stage1Error> {
        fs::create_dir_all(status_dir).map_err(Stage1Error::io(format!(
            "creating {}",
            status_dir.display()
        )))?;
        let path = port_path(socket, pod_control::ports::STATUS_PORT);
        let _ = fs::remove_file(&path);
        let listener = crate::vsock::bind_listener(&path)
            .map_err(Stage1Error::io(format!("listening on {}", path.display())))?;
        let (wake_read, wake_write) = nix::unistd::pipe()
            .map_err(|e| Stage1Error::io("creating a pipe")(io::Error::from(e)))?;
        let statuses: Statuses = Arc::default();
        let stream = Arc::new(Mutex::new(None));
        let pod_over = Arc::new(AtomicBool::new(false));
        let all_reported = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            pod_over: Arc::clone(&pod_over),
            all_reported: Arc::clone(&all_reported),
            listener,
            path,
            wake: wake_read,
            apps: apps.to_vec(),
            status_dir: status_dir.to_path_buf(),
            statuses: Arc::clone(&statuses),
            stream: Arc::clone(&stream),
            on_ready: Some(on_ready),
        };
        Ok(StatusReceiver {
            thread: std::thread::spawn(move || reader.run()),
            pod_over,
            all_reported,
            statuses,
            wake: Some(wake_write),
            stream,
        })
    }

    /// Whether the guest said the pod is over: every app's status arrived and guest-init then
    /// ended the stream, which it does only after the apps' leftover processes are gone and
    /// the file systems are synced.
    pub fn pod_over(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.pod_over)
    }

    /// Whether every app's status has arrived (the pod may not be over yet: guest-init still
    /// ends the apps' leftovers and syncs).
    pub fn all_reported(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.all_reported)
    }

    /// Once the VM is gone: waits at most `grace` for the reports still in flight (the VMM
    /// has closed the connection, so the thread reads to its end), then returns them.
    pub fn finish(mut self, grace: Duration) -> BTreeMap<String, u8> {
        self.wake = None;
        let deadline = Instant::now() + grace;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !self.thread.is_finished() {
            if let Some(stream) = &*self.stream.lock().unwrap_or_else(|p| p.into_inner()) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
        let _ = self.thread.join();
        let statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        statuses.clone()
    }
}

struct Reader {
    pod_over: Arc<AtomicBool>,
    all_reported: Arc<AtomicBool>,
    listener: UnixListener,
    path: PathBuf,
    wake: OwnedFd,
    apps: Vec<String>,
    status_dir: PathBuf,
    statuses: Statuses,
    stream: Arc<Mutex<Option<UnixStream>>>,
    on_ready: Option<OnReady>,
}

impl Reader {
    fn run(mut self) {
        let accepted = accept_or_wake(&self.listener, &self.wake);
        // One connection only: nobody else may report.
        drop(self.listener);
        let _ = fs::remove_file(&self.path);
        let Some(mut stream) = accepted else {
            return;
        };
        if let Ok(clone) = stream.try_clone() {
            *self.stream.lock().unwrap_or_else(|p| p.into_inner()) = Some(clone);
        }
        // A broken frame ends the stream: what arrived before it stands.
        while let Ok(Some(frame)) = read_frame(&mut stream) {
            if frame.kind == FrameKind::Ready {
                if let Some(on_ready) = self.on_ready.take() {
                    on_ready();
                }
                continue;
            }
            if frame.kind != FrameKind::Status {
                break;
            }
            let Some(report) = AppStatus::from_json(&frame.payload) else {
                break;
            };
            if !self.apps.contains(&report.app) {
                continue;
            }
            let mut statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
            if statuses.contains_key(&report.app) {
                continue;
            }
            statuses.insert(report.app.clone(), report.status);
            let complete = statuses.len() == self.apps.len();
            drop(statuses);
            let file = self.status_dir.join(&report.app);
            if let Err(err) = write_whole(&file, format!("{}\n", report.status).as_bytes()) {
                eprintln!("stage1-kvm: {err}");
            }
            if complete {
                self.all_reported.store(true, Ordering::Release);
                // guest-init closes its side once the apps' leftovers are gone and the file
                // systems are synced (guest-init's pod/mod.rs, `Statuses::finish`): that end
                // says the pod is over, which lets `run` stop the VM early.
                if read_to_end(&mut stream) {
                    self.pod_over.store(true, Ordering::Release);
                }
                // Closing tells guest-init every status has arrived, so it powers off at once
                // (it waits for this; the VMM passes on a close, not a half-close). Shut down,
                // not only dropped: `finish` holds a clone of the stream.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                break;
            }
        }
    }
}

/// Reads and drops what the guest still sends (it has nothing more to report) until its end;
/// true when the stream ended cleanly. Bounded by the stream: the VMM closes it with the VM.
fn read_to_end(stream: &mut UnixStream) -> bool {
    io::copy(stream, &mut io::sink()).is_ok()
}

/// The pod's exit code from the statuses received for `apps` (manifest order).
pub fn pod_exit_code(statuses: &BTreeMap<String, u8>, apps: &[String]) -> Result<i32, Stage1Error> {
    let missing: Vec<&str> = apps
        .iter()
        .filter(|app| !statuses.contains_key(*app))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Stage1Error::Status(format!(
            "the pod's VM ended without the exit status of app {} (the guest did not finish \
             setting up or running it); rerun with --debug to see the guest console",
            missing.join(", ")
        )));
    }
    Ok(apps
        .iter()
        .filter_map(|app| statuses.get(app))
        .find(|status| **status != 0)
        .map_or(0, |status| i32::from(*status)))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use pod_control::write_frame;

    use super::*;

    fn apps(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn no_ready() -> OnReady {
        Box::new(|| {})
    }

    #[test]
    fn the_first_ready_frame_marks_the_pod_ready_and_statuses_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock");
        let status_dir = dir.path().join("s");
        let readies = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&readies);
        let receiver = StatusReceiver::start(
            &socket,
            &apps(&["a"]),
            &status_dir,
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        let mut guest_init =
            UnixStream::connect(port_path(&socket, pod_control::ports::STATUS_PORT)).unwrap();
        // A hostile guest repeats it: marked once.
        write_frame(&mut guest_init, FrameKind::Ready, b"").unwrap();
        write_frame(&mut guest_init, FrameKind::Ready, b"").unwrap();
        report(&mut guest_init, "a", 5);
        guest_init.shutdown(std::net::Shutdown::Write).unwrap();
        // The host closes the stream once it has every status and the guest's end.
        guest_init
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(guest_init.read(&mut [0u8; 1]).unwrap(), 0);
        let statuses = receiver.finish(Duration::from_secs(5));
        assert_eq!(statuses.get("a"), Some(&5));
        assert_eq!(readies.load(Ordering::SeqCst), 1);
    }

    fn report(stream: &mut UnixStream, app: &str, status: u8) {
        let payload = AppStatus {
            app: app.into(),
            status,
        }
        .to_json();
        write_frame(stream, FrameKind::Status, &payload).unwrap();
    }

    #[test]
    fn first_failing_app_in_manifest_order_wins() {
        let statuses: BTreeMap<String, u8> = [("a", 0), ("b", 42), ("c", 1), ("k", 137)]
            .iter()
            .map(|(a, s)| (a.to_string(), *s))
            .collect();
        assert_eq!(
            pod_exit_code(&statuses, &apps(&["a", "b", "c"])).unwrap(),
            42
        );
        assert_eq!(pod_exit_code(&statuses, &apps(&["c", "b"])).unwrap(), 1);
        assert_eq!(pod_exit_code(&statuses, &apps(&["a"])).unwrap(), 0);
        assert_eq!(pod_exit_code(&statuses, &apps(&["a", "k"])).unwrap(), 137);
        let err = pod_exit_code(&statuses, &apps(&["a", "x", "y"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("app x, y"), "{err}");
    }

    #[test]
    fn reports_become_status_files_and_forgeries_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock");
        let status_dir = dir.path().join("status");
        let receiver =
            StatusReceiver::start(&socket, &apps(&["web", "db"]), &status_dir, no_ready()).unwrap();
        let listener_path = port_path(&socket, pod_control::ports::STATUS_PORT);
        let mut guest_init = UnixStream::connect(&listener_path).unwrap();
        report(&mut guest_init, "web", 3);
        // An app the pod does not have, and a second report for web: ignored.
        report(&mut guest_init, "other", 9);
        report(&mut guest_init, "web", 0);
        let waited = Instant::now();
        while !status_dir.join("web").exists() && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A second connection (an app trying to forge) finds no listener.
        assert!(UnixStream::connect(&listener_path).is_err());
        assert!(!receiver.all_reported().load(Ordering::Acquire));
        report(&mut guest_init, "db", 0);
        // Every app has reported, but the pod is over only once guest-init ends its side
        // (after the leftovers are gone and the file systems synced).
        let pod_over = receiver.pod_over();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!pod_over.load(Ordering::Acquire));
        assert!(receiver.all_reported().load(Ordering::Acquire));
        guest_init.shutdown(std::net::Shutdown::Write).unwrap();
        // Then the host closes the stream, which guest-init waits for.
        guest_init
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(guest_init.read(&mut byte).unwrap(), 0);
        assert!(pod_over.load(Ordering::Acquire));
        drop(guest_init);
        let statuses = receiver.finish(Duration::from_secs(5));
        assert_eq!(statuses.get("web"), Some(&3));
        assert_eq!(statuses.get("db"), Some(&0));
        assert_eq!(statuses.len(), 2);
        assert_eq!(fs::read_to_string(status_dir.join("web")).unwrap(), "3\n");
        assert_eq!(fs::read_to_string(status_dir.join("db")).unwrap(), "0\n");
        assert!(!status_dir.join("other").exists());
    }

    #[test]
    fn a_stream_that_ends_before_every_status_is_not_the_pods_end() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock");
        let status_dir = dir.path().join("s");
        let receiver =
            StatusReceiver::start(&socket, &apps(&["a", "b"]), &status_dir, no_ready()).unwrap();
        let mut guest_init =
            UnixStream::connect(port_path(&socket, pod_control::ports::STATUS_PORT)).unwrap();
        report(&mut guest_init, "a", 0);
        let waited = Instant::now();
        while !status_dir.join("a").exists() && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(guest_init);
        let pod_over = receiver.pod_over();
        let statuses = receiver.finish(Duration::from_secs(5));
        assert_eq!(statuses.len(), 1);
        assert!(!pod_over.load(Ordering::Acquire));
    }

    #[test]
    fn finish_does_not_wait_for_a_guest_that_never_connected() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock");
        let receiver =
            StatusReceiver::start(&socket, &apps(&["a"]), &dir.path().join("s"), no_ready())
                .unwrap();
        let started = Instant::now();
        assert!(receiver.finish(Duration::from_secs(5)).is_empty());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
