//! The apps' output (contract item 4): guest-init connects app i's stdout to vsock host port
//! `1000 + 2i` and its stderr to `1001 + 2i`; the VMM forwards each connection to the unix
//! socket `<vsock socket>_<port>`. We listen on all of them before the VM boots, and copy what
//! arrives to our own stdout / stderr (which are `rkt run`'s) and to the app's log
//! `P/stage1-kvm/logs/<app>.log` (both streams, in arrival order). The guest decides how much
//! it writes, so each log is capped ([`log_limit`]): past the cap it is rotated once to
//! `<app>.log.1`, and the copy itself goes through a fixed buffer.
//!
//! One thread per stream: it waits for its one connection (or for the end), then copies until
//! the guest closes it. When the VM is gone the VMM has closed every connection; [`Router::finish`]
//! wakes threads that never got one and, after a grace period, cuts off any still copying.

use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm::log_file::RotatingFile;

use crate::accept::accept_or_wake;
use crate::error::Stage1Error;
use crate::vsock::port_path;

/// The environment variable that overrides the cap of each app log file, in bytes.
pub const LOG_LIMIT_ENV: &str = "RKT_STAGE1_KVM_LOG_MAX";
/// Each app's log file holds at most this much (and one rotated file as much again).
pub const DEFAULT_LOG_LIMIT: u64 = 8 << 20;

/// The cap of each app log file: [`LOG_LIMIT_ENV`] when it is a positive number of bytes,
/// else [`DEFAULT_LOG_LIMIT`].
pub fn log_limit() -> u64 {
    std::env::var(LOG_LIMIT_ENV)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|bytes| *bytes > 0)
        .unwrap_or(DEFAULT_LOG_LIMIT)
}

/// An app's log, shared by its two streams.
type Log = Arc<Mutex<RotatingFile>>;

/// Where copied bytes go besides the log: our stdout or stderr (a test passes buffers).
pub type Sink = Arc<Mutex<dyn Write + Send>>;

/// Which of an app's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// The listeners and copy threads of one pod.
pub struct Router {
    threads: Vec<JoinHandle<()>>,
    done: Receiver<()>,
    /// Dropping it wakes every thread still waiting for a connection (POLLHUP on the read end).
    wake: Option<OwnedFd>,
    /// The accepted connections, so [`Router::finish`] can cut off a stuck copy.
    connections: Arc<Mutex<Vec<UnixStream>>>,
    /// When each app's first stream connected (app index, time): the app is about to start
    /// (guest-init connects its streams just before the exec); for `--debug`'s timing.
    connected_at: Arc<Mutex<Vec<(usize, Instant)>>>,
    /// How many streams were connected and then ended by the guest: every byte the app wrote
    /// on them has been copied (the VMM ends a stream only once it delivered all of it).
    ended: Arc<AtomicUsize>,
    listener_paths: Vec<PathBuf>,
}

impl Router {
    /// Listens for every app's two streams (`apps` in manifest order) next to `socket`, and
    /// starts copying. Log files go to `logs_dir/<app>.log`.
    pub fn start(
        socket: &Path,
        apps: &[String],
        logs_dir: &Path,
        log_limit: u64,
        stdout: Sink,
        stderr: Sink,
    ) -> Result<Router, Stage1Error> {
        fs::create_dir_all(logs_dir)
            .map_err(Stage1Error::io(format!("creating {}", logs_dir.display())))?;
        let (wake_read, wake_write) = nix::unistd::pipe()
            .map_err(|e| Stage1Error::io("creating a pipe")(io::Error::from(e)))?;
        let wake_read = Arc::new(wake_read);
        let (done_tx, done) = mpsc::channel();
        let mut router = Router {
            threads: Vec::new(),
            done,
            wake: Some(wake_write),
            connections: Arc::new(Mutex::new(Vec::new())),
            connected_at: Arc::new(Mutex::new(Vec::new())),
            ended: Arc::new(AtomicUsize::new(0)),
            listener_paths: Vec::new(),
        };
        for (index, app) in apps.iter().enumerate() {
            let log_path = logs_dir.join(format!("{app}.log"));
            let log = RotatingFile::create(&log_path, log_limit)
                .map_err(Stage1Error::io(format!("creating {}", log_path.display())))?;
            let log: Log = Arc::new(Mutex::new(log));
            for stream in [Stream::Out, Stream::Err] {
                let port = match stream {
                    Stream::Out => pod_control::ports::stdout_port(index),
                    Stream::Err => pod_control::ports::stderr_port(index),
                }
                .ok_or_else(|| Stage1Error::Unsupported(format!("app {app}: too many apps")))?;
                let path = port_path(socket, port);
                let _ = fs::remove_file(&path);
                let listener = crate::vsock::bind_listener(&path)
                    .map_err(Stage1Error::io(format!("listening on {}", path.display())))?;
                router.listener_paths.push(path.clone());
                let copier = Copier {
                    listener: Some(listener),
                    listener_path: path,
                    wake: wake_read.clone(),
                    sink: match stream {
                        Stream::Out => stdout.clone(),
                        Stream::Err => stderr.clone(),
                    },
                    log: log.clone(),
                    connections: router.connections.clone(),
                    connected_at: router.connected_at.clone(),
                    ended: router.ended.clone(),
                    app_index: index,
                    done: done_tx.clone(),
                };
                router
                    .threads
                    .push(std::thread::spawn(move || copier.run()));
            }
        }
        Ok(router)
    }

    /// Tells, from any thread, whether every app's two streams were connected and have ended.
    pub fn ended_streams(&self) -> EndedStreams {
        EndedStreams {
            ended: Arc::clone(&self.ended),
            streams: self.threads.len(),
        }
    }

    /// When each app (by index) first connected one of its streams, earliest first.
    pub fn app_start_times(&self) -> Vec<(usize, Instant)> {
        let mut times = self
            .connected_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        times.sort_by_key(|(_, at)| *at);
        let mut seen = Vec::new();
        times.retain(|(index, _)| {
            let first = !seen.contains(index);
            seen.push(*index);
            first
        });
        times
    }

    /// Ends the copying once the VM is gone: threads still waiting for a connection stop at
    /// once; copies still running get `grace` to drain what the guest sent, then are cut off.
    /// Removes the listener sockets.
    pub fn finish(mut self, grace: Duration) {
        self.wake = None;
        let deadline = Instant::now() + grace;
        let mut finished = 0;
        while finished < self.threads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(()) => finished += 1,
                Err(_) => break,
            }
        }
        if finished < self.threads.len() {
            let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            for connection in connections.iter() {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for path in &self.listener_paths {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whether a pod's output streams have all ended ([`Router::ended_streams`]).
#[derive(Clone)]
pub struct EndedStreams {
    ended: Arc<AtomicUsize>,
    streams: usize,
}

impl EndedStreams {
    /// Every app's two streams were connected and the guest has ended them: all the pod's
    /// output has been copied. A stream that never connected keeps this false.
    pub fn all(&self) -> bool {
        self.ended.load(Ordering::Acquire) == self.streams
    }
}

/// One stream's thread.
struct Copier {
    listener: Option<UnixListener>,
    listener_path: PathBuf,
    wake: Arc<OwnedFd>,
    sink: Sink,
    log: Log,
    connections: Arc<Mutex<Vec<UnixStream>>>,
    connected_at: Arc<Mutex<Vec<(usize, Instant)>>>,
    ended: Arc<AtomicUsize>,
    app_index: usize,
    done: Sender<()>,
}

impl Copier {
    fn run(mut self) {
        let accepted = self
            .listener
            .as_ref()
            .and_then(|listener| accept_or_wake(listener, &*self.wake));
        // One connection per stream, made by guest-init before any app runs: once it is
        // here nobody else may connect (an app must not take over another app's output).
        self.listener = None;
        let _ = fs::remove_file(&self.listener_path);
        if let Some(stream) = accepted {
            self.connected_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((self.app_index, Instant::now()));
            if let Ok(clone) = stream.try_clone() {
                self.connections
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(clone);
            }
            if self.copy(stream) {
                self.ended.fetch_add(1, Ordering::AcqRel);
            }
        }
        let _ = self.done.send(());
    }

    /// Copies until the guest closes the stream (true) or [`Router::finish`] cuts it off or it
    /// fails (false). A sink that fails (our stdout closed) does not stop the log, nor the other
    /// way round.
    fn copy(&self, mut stream: UnixStream) -> bool {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut sink_ok = true;
        let mut log_ok = true;
        loop {
            let n = match stream.read(&mut buffer) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            let chunk = &buffer[..n];
            if sink_ok {
                let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
                sink_ok = sink.write_all(chunk).and_then(|()| sink.flush()).is_ok();
            }
            if log_ok {
                let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                log_ok = log.write_all(chunk).is_ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Buffer(Vec<u8>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(sink: &Arc<Mutex<Buffer>>) -> String {
        String::from_utf8(sink.lock().unwrap().0.clone()).unwrap()
    }

    #[test]
    fn each_stream_reaches_its_sink_and_the_apps_log() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock");
        let logs = dir.path().join("logs");
        let out = Arc::new(Mutex::new(Buffer::default()));
        let err = Arc::new(Mutex::new(Buffer::default()));
        let router = Router::start(
            &socket,
            &["web".to_string(), "db".to_string()],
            &logs,
            DEFAULT_LOG_LIMIT,
            out.clone(),
            err.clone(),
        )
        .unwrap();
        // What the VMM does for guest connections to host ports 1000..1003.
        let mut web_out = UnixStream::connect(port_path(&socket, 1000)).unwrap();
        let mut web_err = UnixStream::connect(port_path(&socket, 1001)).unwrap();
        let mut db_out = UnixStream::connect(port_path(&socket, 1002)).unwrap();
        // Each stream is taken once: a second connection (an app posing as web) finds no
        // listener once the first was accepted.
        let waited = Instant::now();
        while port_path(&socket, 1000).exists() && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(UnixStream::connect(port_path(&socket, 1000)).is_err());
        web_out.write_all(b"hello from web\n").unwrap();
        web_out.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        web_err.write_all(b"web warns\n").unwrap();
        db_out.write_all(&vec![b'd'; 200_000]).unwrap();
        drop((web_out, web_err, db_out));
        // Both apps connected (the copy threads accept on their own time), web (index 0)
        // first; each app once.
        let waited = Instant::now();
        while router.app_start_times().len() < 2 && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let starts: Vec<usize> = router.app_start_times().iter().map(|(i, _)| *i).collect();
        assert_eq!(starts.len(), 2, "{starts:?}");
        assert!(starts.contains(&0) && starts.contains(&1), "{starts:?}");
        // db's stderr never connects: the pod's output is not all in (no early stop), and
        // finish must not wait for it.
        assert!(!router.ended_streams().all());
        let started = Instant::now();
        router.finish(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(4));
        assert!(text(&out).contains("hello from web\n"));
        assert_eq!(text(&out).len(), 15 + 200_000);
        assert_eq!(text(&err), "web warns\n");
        assert_eq!(
            fs::read_to_string(logs.join("web.log")).unwrap(),
            "hello from web\nweb warns\n"
        );
        assert_eq!(fs::read(logs.join("db.log")).unwrap().len(), 200_000);
        assert!(!port_path(&socket, 1000).exists(), "listeners removed");
    }

    #[test]
    fn all_streams_ended_only_once_the_guest_closed_every_one() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock");
        let sink = Arc::new(Mutex::new(Buffer::default()));
        let router = Router::start(
            &socket,
            &["app".to_string()],
            &dir.path().join("logs"),
            DEFAULT_LOG_LIMIT,
            sink.clone(),
            sink.clone(),
        )
        .unwrap();
        let ended = router.ended_streams();
        let mut out = UnixStream::connect(port_path(&socket, 1000)).unwrap();
        let err = UnixStream::connect(port_path(&socket, 1001)).unwrap();
        out.write_all(b"last words\n").unwrap();
        drop(out);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!ended.all(), "stderr is still open");
        drop(err);
        let waited = Instant::now();
        while !ended.all() && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(ended.all());
        assert_eq!(
            text(&sink),
            "last words\n",
            "copied before it counts as ended"
        );
        router.finish(Duration::from_secs(1));
    }

    #[test]
    fn a_connection_left_open_is_cut_off_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock");
        let out = Arc::new(Mutex::new(Buffer::default()));
        let err = Arc::new(Mutex::new(Buffer::default()));
        let router = Router::start(
            &socket,
            &["app".to_string()],
            &dir.path().join("logs"),
            DEFAULT_LOG_LIMIT,
            out.clone(),
            err,
        )
        .unwrap();
        let mut open = UnixStream::connect(port_path(&socket, 1000)).unwrap();
        open.write_all(b"partial").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        router.finish(Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(text(&out), "partial");
    }

    #[test]
    fn a_flood_keeps_at_most_two_capped_log_files() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock");
        let logs = dir.path().join("logs");
        let out = Arc::new(Mutex::new(Buffer::default()));
        let err = Arc::new(Mutex::new(Buffer::default()));
        let router = Router::start(
            &socket,
            &["app".to_string()],
            &logs,
            64 * 1024,
            out.clone(),
            err,
        )
        .unwrap();
        let mut stream = UnixStream::connect(port_path(&socket, 1000)).unwrap();
        for _ in 0..100 {
            stream.write_all(&[b'x'; 10_000]).unwrap();
        }
        stream.write_all(b"last line\n").unwrap();
        drop(stream);
        router.finish(Duration::from_secs(5));
        assert_eq!(text(&out).len(), 1_000_000 + 10, "the sink gets everything");
        let current = fs::read_to_string(logs.join("app.log")).unwrap();
        assert!(current.ends_with("last line\n"));
        let on_disk: u64 = fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 2 * 64 * 1024, "{on_disk}");
    }
}
